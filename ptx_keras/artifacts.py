"""Portable deployment artifacts (ONNX, LiteRT) on disk, and running one.

`ptx-export --format onnx|litert` (`ptx_keras.export`) writes one model file into a directory, beside the same
metadata the SavedModel has (`EXPORT_METADATA_FILENAME`):

```
<dir>/model.onnx       (ONNX; the metadata is also embedded, under metadata_props["ptx_keras.export"])
<dir>/model.tflite     (LiteRT)
<dir>/export.json
```

Both hold one graph, the `serve_value_max` entry point (the SavedModel's raw signatures with the intensity
scale as an input, since an ONNX file has one graph and one dtype per input):

* inputs: `images` float32 `(batch, height, width)` (LiteRT: `(1, height, width)`, `LITERT_BATCH`), any size
  (one size per call), the pixel values as stored (cast uint8/uint16 to float32); `value_max` float32 scalar,
  the value shown white: 255 for 8-bit images,
  65535 for 16-bit, `2**BitsStored - 1` for DICOM (4095 for 12-bit), 1.0 for floats in [0, 1];
* outputs: those of the SavedModel's raw signatures (`ptx_keras.serving.RAW_OUTPUTS`), at the input's size,
  from the same graph functions (`preprocess_images`, `model_function`, `postprocess_probabilities`).

`find_artifact` tells which format a path holds (SavedModel, ONNX, LiteRT), `read_artifact_metadata` reads its
metadata (`find_saved_model_version` and `read_export_metadata`: how a reader finds a SavedModel version and its
`export.json`), and `ArtifactSession` runs an ONNX or LiteRT file through ONNX Runtime or the LiteRT interpreter
(`pip install "ptx_keras[deploy]"`).
"""

import json
import os

import numpy as np

from ptx_keras import constants as C
from ptx_keras.constants import AUX_PROBABILITY_OUTPUT, PROBABILITIES_OUTPUT
from ptx_keras.diagnosis import Thresholds
from ptx_keras.errors import ModelError

__all__ = [
    "EXTENSIONS",
    "FILENAMES",
    "FORMATS",
    "IMAGES_INPUT",
    "LITERT_BATCH",
    "ONNX_METADATA_KEY",
    "PORTABLE_SIGNATURE",
    "RUNTIMES",
    "VALUE_MAX_INPUT",
    "ArtifactSession",
    "find_artifact",
    "read_artifact_metadata",
]


FORMATS = C.EXPORT_FORMATS
EXPORT_METADATA_FILENAME = "export.json"  # beside every export (and inside a SavedModel version's assets.extra)
FILENAMES = {"onnx": "model.onnx", "litert": "model.tflite"}
EXTENSIONS = {".onnx": "onnx", ".tflite": "litert"}
PORTABLE_SIGNATURE = "serve_value_max"
IMAGES_INPUT = "images"
VALUE_MAX_INPUT = "value_max"
ONNX_METADATA_KEY = "ptx_keras.export"
# The LiteRT graph takes one image per call: with a free batch size LiteRT's XNNPACK delegate got every call
# after the first wrong for the paper's network (ptx_keras.export.litert, docs/deployment.md).
LITERT_BATCH = 1
# What runs each format, for messages and the export metadata.
RUNTIMES = {
    C.SAVEDMODEL_FORMAT: "TensorFlow (tf.saved_model.load, TF Serving)",
    "onnx": "ONNX Runtime (onnxruntime)",
    "litert": "LiteRT (ai-edge-litert's Interpreter, or tf.lite.Interpreter)",
}
_INSTALL_HINT = 'install the deployment extra: pip install "ptx_keras[deploy]"'


def find_artifact(path):
    """What a path holds: `(format, path)` with the SavedModel version directory or the model file, or None.

    Accepted: an `.onnx` or `.tflite` file; a directory holding `model.onnx` or `model.tflite` (what
    `ptx-export` writes); a SavedModel version directory or base directory (its highest version).

    Raises:
        ModelError: for a directory holding several artifacts of different formats (ambiguous).
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        fmt = EXTENSIONS.get(os.path.splitext(path)[1].lower())
        return (fmt, path) if fmt else None
    version_dir = find_saved_model_version(path)
    files = {fmt: os.path.join(path, name) for fmt, name in FILENAMES.items()}
    files = {fmt: file for fmt, file in files.items() if os.path.isfile(file)}
    found = ([(C.SAVEDMODEL_FORMAT, version_dir)] if version_dir else []) + sorted(files.items())
    if len(found) > 1:
        raise ModelError(
            f"{path} holds several exported models ({', '.join(p for _, p in found)}); pass the one to use"
        )
    return found[0] if found else None


def read_artifact_metadata(fmt, path):
    """The export metadata of an artifact, its thresholds read into a `Thresholds`.

    Args:
        fmt: One of `FORMATS`.
        path: The SavedModel version directory, or the ONNX / LiteRT file.

    Returns:
        dict (see `parse_export_metadata`).

    Raises:
        ModelError: if none is found or it is invalid. An ONNX file copied alone still has its embedded copy.
    """
    if fmt == C.SAVEDMODEL_FORMAT:
        return read_export_metadata(path)
    if fmt not in FILENAMES:
        raise ModelError(f"format must be one of {FORMATS}. Received: format={fmt!r}")
    beside = os.path.join(os.path.dirname(os.path.abspath(path)), EXPORT_METADATA_FILENAME)
    if os.path.isfile(beside):
        meta = read_export_metadata_file(beside)
        if meta.get("format") == fmt:
            return meta
    if fmt == "onnx":
        embedded = _onnx_embedded_metadata(path)
        if embedded is not None:
            return parse_export_metadata(embedded, f"{path} (metadata_props[{ONNX_METADATA_KEY!r}])")
    raise ModelError(
        f"{path}: no {fmt} export metadata ({beside} is missing or describes another format); "
        f"export it with ptx-export --format {fmt}"
    )


def _onnx_embedded_metadata(path):
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf raises its own DecodeError and others for a damaged file
        raise ModelError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    for prop in model.metadata_props:
        if prop.key == ONNX_METADATA_KEY:
            try:
                return json.loads(prop.value)
            except ValueError as e:
                raise ModelError(f"{path}: invalid embedded export metadata ({e})") from None
    return None


class ArtifactSession:
    """An ONNX or LiteRT artifact loaded for inference: `(images, value_max)` -> the raw outputs.

    Args:
        fmt: `"onnx"` or `"litert"`.
        path: The `.onnx` / `.tflite` file.
        threads: CPU threads (default: every core this process may use).

    Raises:
        ModelError: for another format, a missing runtime package or a file the runtime cannot load.
    """

    def __init__(self, fmt, path, threads=None):
        if fmt not in FILENAMES:
            raise ModelError(f"format must be one of {tuple(FILENAMES)}. Received: format={fmt!r}")
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads must be a positive integer. Received: threads={threads!r}")
        self.format, self.path, self.threads = fmt, os.fspath(path), int(threads)
        self._run = self._load_onnx() if fmt == "onnx" else self._load_litert()

    def _load_onnx(self):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError(f"{self.path}: running an ONNX model needs onnxruntime; {_INSTALL_HINT}") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        try:
            session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for invalid or damaged models
            raise ModelError(f"{self.path}: ONNX Runtime cannot load it ({type(e).__name__}: {e})") from None
        self.onnx_session = session
        names = [o.name for o in session.get_outputs()]
        inputs = sorted(i.name for i in session.get_inputs())
        if inputs != sorted((IMAGES_INPUT, VALUE_MAX_INPUT)):
            raise ModelError(
                f"{self.path}: expected the inputs {IMAGES_INPUT!r} and {VALUE_MAX_INPUT!r} of ptx-export's "
                f"ONNX graph. Received: {inputs}"
            )

        def run(images, value_max):
            out = session.run(None, {IMAGES_INPUT: images, VALUE_MAX_INPUT: np.asarray(value_max, np.float32)})
            return dict(zip(names, out))

        return run

    def _load_litert(self):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # TensorFlow's own copy of the interpreter (deprecated there, same runtime)
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        try:
            interpreter = Interpreter(model_path=self.path, num_threads=self.threads)
            runner = interpreter.get_signature_runner(PORTABLE_SIGNATURE)
        except (ValueError, RuntimeError) as e:
            raise ModelError(
                f"{self.path}: the LiteRT interpreter cannot load its {PORTABLE_SIGNATURE!r} signature ({e})"
            ) from None
        self.signature_runner = runner

        batch = runner.get_input_details()[IMAGES_INPUT].get("shape_signature", [-1])[0]

        def run(images, value_max):
            value_max = np.asarray(value_max, np.float32)
            if batch < 0 or len(images) == batch:
                return runner(**{IMAGES_INPUT: images, VALUE_MAX_INPUT: value_max})
            # A graph with a fixed batch (LITERT_BATCH): one call per image, outputs stacked.
            outs = [
                runner(**{IMAGES_INPUT: images[i : i + batch], VALUE_MAX_INPUT: value_max})
                for i in range(0, len(images), batch)
            ]
            return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

        return run

    def __call__(self, images, value_max=1.0):
        """Runs the artifact.

        Args:
            images: `(batch, height, width)` pixel values (cast to float32).
            value_max: The value shown white (see the module docstring).

        Returns:
            dict of NumPy arrays: the raw outputs (`ptx_keras.serving.RAW_OUTPUTS`).
        """
        images = np.ascontiguousarray(images, np.float32)
        if images.ndim != 3 or 0 in images.shape:
            raise ValueError(f"images must be a non-empty (batch, height, width) array. Received: shape={images.shape}")
        return {k: np.asarray(v) for k, v in self._run(images, value_max).items()}

    def preprocessed_call(self, channels):
        """A `ptx_keras.inference.ModelRunner` call: preprocessed `(batch, S, S, C)` -> the network's outputs.

        The artifact takes raw images, but preprocessing is idempotent on a preprocessed image: at `S x S` its
        resize is the identity (weight 1 on the pixel itself), its rounding to the training bit depth returns
        the same levels and `value_max = 1` keeps the scale, and the postprocessing resize back to `S x S` is the
        identity too. Its `probability` output is then exactly the network's pneumothorax probability (with the
        test-time augmentation it was exported with), so `ptx-predict` can batch images of any sizes,
        preprocessed by the same graph functions, and run them through the artifact itself.

        Returns:
            Function of float32 `(batch, S, S, C)` -> dict with `"probabilities"` float32 `(batch, S, S, 2)` and,
            for a model with an aux head, `"aux_probability"` `(batch,)`.
        """

        def call(batch):
            batch = np.asarray(batch, np.float32)
            if batch.ndim != 4 or batch.shape[-1] != channels:
                raise ValueError(f"expected (batch, S, S, {channels}) model inputs. Received: shape={batch.shape}")
            out = self(batch[..., 0], 1.0)
            ptx = out["probability"].astype(np.float32, copy=False)
            softmax = np.empty(ptx.shape + (C.NUM_CLASSES,), np.float32)
            softmax[..., C.PTX_CLASS] = ptx
            softmax[..., 1 - C.PTX_CLASS] = 1.0 - ptx
            result = {PROBABILITIES_OUTPUT: softmax}
            if AUX_PROBABILITY_OUTPUT in out:
                result[AUX_PROBABILITY_OUTPUT] = out[AUX_PROBABILITY_OUTPUT].astype(np.float32, copy=False)
            return result

        return call


# ---------------------------------------------------------------------------------------------------------
# Reading an export back
# ---------------------------------------------------------------------------------------------------------
def find_saved_model_version(path):
    """The SavedModel directory to load for `path`: itself, or its highest numbered version; None if neither."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if not os.path.isdir(path):
        return None
    versions = [d for d in os.listdir(path) if d.isdigit() and os.path.isfile(os.path.join(path, d, "saved_model.pb"))]
    if not versions:
        return None
    return os.path.join(path, max(versions, key=int))


def read_export_metadata(version_dir):
    """The export.json of a SavedModel version: its own `assets.extra` copy, else the one beside the versions.

    Raises:
        ModelError: if neither exists or it is invalid.
    """
    candidates = [
        os.path.join(version_dir, "assets.extra", EXPORT_METADATA_FILENAME),
        os.path.join(os.path.dirname(os.path.abspath(version_dir)), EXPORT_METADATA_FILENAME),
    ]
    for path in candidates:
        if os.path.isfile(path):
            return read_export_metadata_file(path)
    raise ModelError(
        f"{version_dir}: no {EXPORT_METADATA_FILENAME} found (looked in {' and '.join(candidates)}); "
        "export it with ptx-export"
    )


def read_export_metadata_file(path):
    """Reads one `export.json` (any format's) and checks it (`parse_export_metadata`).

    Raises:
        ModelError: if it is unreadable or invalid.
    """
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: unreadable export metadata ({e})") from None
    return parse_export_metadata(meta, path)


def parse_export_metadata(meta, where):
    """Checks export metadata (any format's `export.json`) and reads its thresholds into a `Thresholds`.

    Args:
        meta: The decoded JSON.
        where: Its file (or the artifact holding it), named in errors.

    Returns:
        `meta`, with `meta["thresholds"]` a `Thresholds`.

    Raises:
        ModelError: if it is not a mapping, lacks `input_size`, `channels` or `thresholds`, or its thresholds
            are invalid.
    """
    if not isinstance(meta, dict):
        raise ModelError(f"{where}: export metadata must be a JSON object. Received: {type(meta).__name__}")
    missing = [k for k in ("input_size", "channels", "thresholds") if k not in meta]
    if missing:
        raise ModelError(f"{where}: export metadata lacks {missing}")
    try:
        meta["thresholds"] = Thresholds.from_mapping(meta["thresholds"], f"{where}: thresholds")
    except ValueError as e:
        raise ModelError(str(e)) from None
    return meta
