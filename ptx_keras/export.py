"""Deployment: a TensorFlow SavedModel with the preprocessing and the diagnosis rule inside the graph.

`export_saved_model(run_dir)` writes `RUN_DIR/saved_model/<version>/`, the versioned layout TF Serving watches,
plus `RUN_DIR/saved_model/export.json` describing it. The SavedModel runs without `ptx_keras` installed
(TF Serving, `tf.saved_model.load` on an inference server). Its signatures:

* `serving_default` (float32), `serve_uint8`, `serve_uint16`: input `images`, a batch of raw grayscale
  images of any size, `(batch, height, width)` or `(batch, height, width, 1)`; one signature per dtype because a
  TensorFlow signature has exactly one input dtype. Outputs, all per image at the input's own size:
  `probability` float32 `(batch, height, width)` (pneumothorax probability), `mask` uint8 `(batch, height,
  width)` (1 = pneumothorax), `area` int64 `(batch,)` (mask pixels), `score` and `max_probability` float32
  `(batch,)`, and `diagnosis` int32 `(batch,)` (1 = pneumothorax).
* `serve_preprocessed`: input `images` float32 `(batch, S, S, C)` already preprocessed; output `probabilities`,
  the model's raw softmax `(batch, S, S, 2)`.

The graph functions here (`preprocess_images`, `postprocess_probabilities`) are the only implementation of the
deployment preprocessing and of the in-graph diagnosis; `ptx_keras.predict` calls the same functions, so
prediction from a run directory and from the exported SavedModel agree.

Intensity scaling is the training data's (`ptx_keras.data.prepare.resize_image`): the image is divided by the
largest value its type can take (`value_max`: 255 for uint8, 65535 for uint16, 1.0 for float32, which is
assumed to be in [0, 1]), resized with an antialiased bilinear filter to the model's `S x S` (the same filter
as Pillow's, to 1e-6), quantised to the training bit depth (`data.bit_depth`, 8 by default: prepared images
are stored as 8- or 16-bit PNGs) and replicated to the model's `C` channels. uint8 and uint16 versions of the
same picture (`v16 = 257 * v8`) therefore give identical inputs. Images whose range is narrower than their type
(a 12-bit DICOM stored as uint16 has `value_max` 4095) must be sent as float32 `pixels / value_max` through
`serving_default`; `ptx_keras.predict` does this from the DICOM header (`BitsStored`).
"""

import datetime
import json
import os
import shutil

from ptx_keras import constants as C
from ptx_keras.errors import ModelError

EXPORT_METADATA_FILENAME = "export.json"
SAVED_MODEL_DIRNAME = "saved_model"
THRESHOLD_KEYS = ("min_area", "mask_threshold", "reference_size")
# One serving signature per accepted input dtype; the first is `serving_default` (TF Serving's default).
RAW_SIGNATURES = (("serving_default", "float32"), ("serve_uint8", "uint8"), ("serve_uint16", "uint16"))
PREPROCESSED_SIGNATURE = "serve_preprocessed"
DTYPE_VALUE_MAX = {"float32": 1.0, "uint8": 255.0, "uint16": 65535.0}  # value_max per signature dtype
RESIZE_METHOD = "bilinear"  # antialiased when shrinking (model input), plain when enlarging (probabilities)
# What each output of the raw signatures means (recorded in export.json).
_RAW_OUTPUTS = {
    "probability": "pneumothorax probability at the input's size",
    "mask": "1 where probability > mask_threshold, at the input's size",
    "area": "mask pixels at the input's size",
    "score": "(area at the model resolution + max_probability / 2) * (reference_size / S)^2, as ptx_keras.diagnosis",
    "max_probability": "highest pneumothorax probability",
    "diagnosis": "1 if more than min_area * (S / reference_size)^2 pixels exceed mask_threshold at the model resolution",
}


# ---------------------------------------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------------------------------------
def check_thresholds(thresholds, where="thresholds"):
    """Validates and normalises a diagnosis thresholds dict.

    Args:
        thresholds: Mapping with `min_area` (pixels at `reference_size`^2, >= 0), `mask_threshold` (in (0, 1))
            and `reference_size` (pixels, > 0).
        where: Name of the origin (a file) used in error messages.

    Returns:
        A new dict with exactly those keys, as float, float and int.

    Raises:
        ModelError: for a missing key or an out-of-range value.
    """
    if not isinstance(thresholds, dict):
        raise ModelError(f"{where}: expected a mapping with {list(THRESHOLD_KEYS)}. Received: {thresholds!r}")
    missing = [k for k in THRESHOLD_KEYS if k not in thresholds]
    if missing:
        raise ModelError(f"{where}: missing key(s) {missing}; expected {list(THRESHOLD_KEYS)}")
    try:
        out = {
            "min_area": float(thresholds["min_area"]),
            "mask_threshold": float(thresholds["mask_threshold"]),
            "reference_size": int(thresholds["reference_size"]),
        }
    except (TypeError, ValueError) as e:
        raise ModelError(f"{where}: non-numeric threshold ({e})") from None
    if out["min_area"] < 0:
        raise ModelError(f"{where}: min_area must be >= 0. Received: min_area={out['min_area']}")
    if not 0.0 < out["mask_threshold"] < 1.0:
        raise ModelError(f"{where}: mask_threshold must be in (0, 1). Received: mask_threshold={out['mask_threshold']}")
    if out["reference_size"] <= 0:
        raise ModelError(f"{where}: reference_size must be > 0. Received: reference_size={out['reference_size']}")
    return out


def default_thresholds():
    """The paper's rule from `ptx_keras.constants`: more than 50 pixels at 256 x 256, probability > 0.5."""
    return {
        "min_area": float(C.DIAGNOSIS_MIN_AREA),
        "mask_threshold": float(C.MASK_THRESHOLD),
        "reference_size": int(C.DIAGNOSIS_REFERENCE_SIZE),
    }


def run_thresholds(run_dir, cfg=None):
    """The thresholds a run deploys with, and where they came from.

    The same choice as evaluation (`ptx_keras.evaluation.load_thresholds`): `RUN_DIR/eval/val/thresholds.json`
    (chosen on the validation split) wins over the run configuration's `diagnosis` section.

    Returns:
        `(thresholds, source)`: the checked dict and the file it came from.

    Raises:
        DataError: if thresholds.json exists but is unreadable or invalid.
    """
    from ptx_keras.evaluation import load_thresholds

    if cfg is None:
        from ptx_keras.config import load_run_config

        cfg = load_run_config(run_dir)
    found = load_thresholds(run_dir, cfg)
    source = found.get("file") or os.path.join(run_dir, "config.yaml")
    return check_thresholds({k: found[k] for k in THRESHOLD_KEYS}, source), source


# ---------------------------------------------------------------------------------------------------------
# Loading a run
# ---------------------------------------------------------------------------------------------------------
def load_run(run_dir):
    """Loads a training run's model, configuration and deployment thresholds.

    Args:
        run_dir: A run directory with `config.yaml` and `best.keras`.

    Returns:
        dict with `model` (the Keras model, uncompiled), `config`, `thresholds`, `thresholds_source`,
        `model_name`, `image_size`, `channels` and `run_dir` (absolute).

    Raises:
        ModelError: if the directory is not a run directory, or its model is missing or cannot be loaded.
        DataError: if its `eval/val/thresholds.json` is unreadable or invalid.
    """
    from ptx_keras.config import load_run_config
    from ptx_keras.errors import ConfigError

    if not os.path.isdir(run_dir):
        raise ModelError(f"Run directory not found: {run_dir}")
    try:
        cfg = load_run_config(run_dir)
    except ConfigError as e:
        raise ModelError(str(e)) from None
    from ptx_keras.loading import load_model
    from ptx_keras.training import BEST_MODEL_FILENAME

    path = os.path.join(run_dir, BEST_MODEL_FILENAME)
    if not os.path.isfile(path):
        raise ModelError(f"{run_dir} has no trained model ({BEST_MODEL_FILENAME}); train it first")
    model = load_model(path)
    thresholds, source = run_thresholds(run_dir, cfg)
    size, channels = _model_input(model, path)
    return {
        "model": model,
        "config": cfg,
        "thresholds": thresholds,
        "thresholds_source": source,
        "model_name": cfg.model.name,
        "image_size": size,
        "channels": channels,
        "bit_depth": int(cfg.data.bit_depth),
        "run_dir": os.path.abspath(run_dir),
    }


def _model_input(model, where):
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] is None:
        raise ModelError(
            f"{where}: expected a model with a fixed square input (batch, S, S, C). Received: input_shape={shape}"
        )
    out = tuple(model.output_shape)
    if len(out) != 4 or out[-1] != C.NUM_CLASSES:
        raise ModelError(f"{where}: expected a {C.NUM_CLASSES}-class softmax output. Received: output_shape={out}")
    return int(shape[1]), int(shape[3])


# ---------------------------------------------------------------------------------------------------------
# The graph: preprocessing and postprocessing (TensorFlow ops; shared with ptx_keras.predict)
# ---------------------------------------------------------------------------------------------------------
def preprocess_images(images, image_size, channels, value_max=1.0, bit_depth=C.IMAGE_BIT_DEPTH):
    """Raw grayscale images of any size -> the model input, as training data preparation makes it.

    Args:
        images: Tensor `(batch, height, width)` or `(batch, height, width, 1)`, any real dtype.
        image_size: The model's input size S.
        channels: The model's input channels C (grayscale is replicated).
        value_max: The largest value the images' type can take (scalar or `(batch,)`): 255 for 8-bit, 65535
            for 16-bit, 4095 for a 12-bit DICOM, 1.0 for float images in [0, 1].
        bit_depth: The training bit depth (8 or 16): values are rounded to `2**bit_depth - 1` levels, as the
            prepared PNGs were.

    Returns:
        float32 tensor `(batch, S, S, C)` in [0, 1]:
        `round(resize(images) * levels / value_max) / levels`, clipped, with `levels = 2**bit_depth - 1`.
    """
    import tensorflow as tf

    x = tf.cast(_batch_hw(images), tf.float32)
    x = tf.image.resize(x[..., None], (image_size, image_size), method=RESIZE_METHOD, antialias=True)
    levels = float(2 ** int(bit_depth) - 1)
    value_max = tf.reshape(tf.cast(value_max, tf.float32), [-1, 1, 1, 1])
    x = tf.clip_by_value(tf.round(x * (levels / value_max)), 0.0, levels) / levels
    if channels > 1:
        x = tf.repeat(x, channels, axis=-1)
    return x


def _batch_hw(images):
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    rank = tf.rank(images)
    shape = tf.shape(images)
    checks = [
        tf.debugging.Assert(
            tf.logical_or(tf.equal(rank, 3), tf.equal(rank, 4)),
            ["images must be (batch, height, width) or (batch, height, width, 1); got shape", shape],
        ),
    ]
    with tf.control_dependencies(checks):
        shape = tf.identity(shape)
    checks = [
        tf.debugging.Assert(
            tf.logical_or(tf.equal(rank, 3), tf.equal(shape[-1], 1)),
            ["grayscale images only: the last axis of a 4-D input must be 1; got shape", shape],
        ),
        tf.debugging.Assert(tf.reduce_all(shape[1:3] > 0), ["images must not be empty; got shape", shape]),
    ]
    with tf.control_dependencies(checks):
        # A static rank of 3 lets the resize below know its input rank even when the signature's is unknown.
        return tf.reshape(images, tf.stack([shape[0], shape[1], shape[2]]))


def postprocess_probabilities(ptx_probability, height, width, thresholds):
    """Model-resolution PTX probabilities -> the deployed outputs at the input's size.

    The diagnosis follows the paper at the prediction (model) resolution: pneumothorax if more than
    `min_area * S * S / reference_size**2` pixels have probability > `mask_threshold` (50 pixels at 256 x 256).
    The same rule as `ptx_keras.diagnosis.diagnose`.

    Args:
        ptx_probability: float32 `(batch, S, S)`, softmax channel 1.
        height: Output height (scalar int tensor or int).
        width: Output width.
        thresholds: Checked thresholds dict (`check_thresholds`).

    Returns:
        dict of tensors: `probability` float32 `(batch, height, width)`, `mask` uint8 `(batch, height, width)`,
        `area` int64 `(batch,)` (at the input's size), `score` float32 `(batch,)` (the continuous score of
        `ptx_keras.diagnosis.diagnose`: `(model_area + max_probability / 2) * reference_size**2 / S**2`, the
        predicted area in reference pixels with ties broken by the most confident pixel), `max_probability`
        float32 `(batch,)` and `diagnosis` int32 `(batch,)`.
    """
    import tensorflow as tf

    p = tf.cast(ptx_probability, tf.float32)
    size = int(p.shape[1])
    threshold = float(thresholds["mask_threshold"])
    min_pixels = min_area_pixels(thresholds, size)
    model_area = tf.reduce_sum(tf.cast(p > threshold, tf.float32), axis=[1, 2])
    diagnosis = tf.cast(model_area > min_pixels, tf.int32)
    max_probability = tf.reduce_max(p, axis=[1, 2])
    score = (model_area + 0.5 * max_probability) * (float(thresholds["reference_size"]) ** 2 / (size * size))
    full = tf.image.resize(p[..., None], tf.stack([height, width]), method=RESIZE_METHOD)[..., 0]
    full = tf.clip_by_value(full, 0.0, 1.0)
    mask = tf.cast(full > threshold, tf.uint8)
    area = tf.reduce_sum(tf.cast(mask, tf.int64), axis=[1, 2])
    return {
        "probability": full,
        "mask": mask,
        "area": area,
        "score": score,
        "max_probability": max_probability,
        "diagnosis": diagnosis,
    }


def min_area_pixels(thresholds, size):
    """`min_area` (given at `reference_size`^2) scaled by area to a `size x size` prediction."""
    return float(thresholds["min_area"]) * size * size / float(thresholds["reference_size"]) ** 2


class GraphPipeline:
    """Compiled (`tf.function`) pre- and postprocessing for one model, applied image by image.

    One trace per input dtype and one for the postprocessing, whatever the image sizes.

    Args:
        image_size: The model's input size S.
        channels: The model's input channels C.
        thresholds: Checked thresholds dict.
        bit_depth: The training bit depth (see `preprocess_images`).
    """

    def __init__(self, image_size, channels, thresholds, bit_depth=C.IMAGE_BIT_DEPTH):
        import tensorflow as tf

        self.image_size, self.channels, self.bit_depth = int(image_size), int(channels), int(bit_depth)
        self.thresholds = check_thresholds(thresholds)
        self._pre = {}
        for dtype in DTYPE_VALUE_MAX:
            self._pre[dtype] = tf.function(
                self._preprocess_graph,
                input_signature=[tf.TensorSpec([None, None, None], dtype), tf.TensorSpec([], tf.float32)],
                autograph=False,  # plain TensorFlow ops, no Python control flow to convert
            )
        self._post = tf.function(
            self._postprocess_graph,
            autograph=False,
            input_signature=[
                tf.TensorSpec([None, self.image_size, self.image_size], tf.float32),
                tf.TensorSpec([], tf.int32),
                tf.TensorSpec([], tf.int32),
            ],
        )

    def _preprocess_graph(self, images, value_max):
        return preprocess_images(images, self.image_size, self.channels, value_max, self.bit_depth)

    def _postprocess_graph(self, ptx_probability, height, width):
        return postprocess_probabilities(ptx_probability, height, width, self.thresholds)

    def preprocess(self, image, value_max=None):
        """One image -> the model input.

        Args:
            image: 2-D array `(height, width)`, uint8, uint16 or float (other types are cast to float32).
            value_max: The largest value the image's type can take (e.g. `read_image`'s
                `info["value_range"][1]`); default: that of its dtype (`DTYPE_VALUE_MAX`).

        Returns:
            float32 array `(S, S, C)`.

        Raises:
            ValueError: if the image is not 2-D or empty, or value_max is not positive.
        """
        import numpy as np

        image = np.asarray(image)
        if image.ndim != 2 or image.size == 0:
            raise ValueError(f"expected a non-empty 2-D grayscale image (height, width). Received: shape={image.shape}")
        if image.dtype.name not in self._pre:
            image = image.astype(np.float32)
        value_max = DTYPE_VALUE_MAX[image.dtype.name] if value_max is None else float(value_max)
        if not value_max > 0:
            raise ValueError(f"value_max must be > 0. Received: value_max={value_max}")
        return self._pre[image.dtype.name](image[None], value_max).numpy()[0]

    def postprocess(self, ptx_probability, height, width):
        """`(S, S)` PTX probabilities -> dict of NumPy outputs for one image of size `(height, width)`."""
        import numpy as np

        out = self._post(np.asarray(ptx_probability, np.float32)[None], int(height), int(width))
        return {k: v.numpy()[0] for k, v in out.items()}


# ---------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------
def export_saved_model(run_dir_or_model, output=None, *, version=1, thresholds=None, verbose=True):
    """Exports a trained model as a TF Serving SavedModel with in-graph preprocessing and diagnosis.

    Args:
        run_dir_or_model: A run directory (uses `best.keras`, its config and thresholds) or a `keras.Model`
            with input `(batch, S, S, C)` and a 2-class softmax output `(batch, S, S, 2)`.
        output: The model base directory; the SavedModel goes to `output/<version>/`. Default for a run
            directory: `RUN_DIR/saved_model`; required for a model.
        version: Positive integer version (TF Serving serves the highest).
        thresholds: Diagnosis thresholds dict (`min_area`, `mask_threshold`, `reference_size`) overriding the
            run's (`eval/val/thresholds.json`, else `config.yaml`) or, for a model, the package defaults.
        verbose: Print where the model went.

    Returns:
        dict with `path` (the version directory), `base_dir`, `version`, `metadata` (the export.json path),
        `signatures` (names), `thresholds`, `image_size`, `channels`.

    Raises:
        ModelError: for a bad run directory, model, version or thresholds.
        DataError: for an unreadable or invalid `eval/val/thresholds.json`.
    """
    import keras
    import tensorflow as tf

    from ptx_keras import __version__

    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelError(f"version must be a positive integer. Received: version={version!r}")
    if isinstance(run_dir_or_model, keras.Model):
        model = run_dir_or_model
        if output is None:
            raise ModelError("output is required when exporting a model object (no run directory to put it in)")
        size, channels = _model_input(model, f"model {model.name!r}")
        source_run, model_name, bit_depth = None, model.name, C.IMAGE_BIT_DEPTH
        base_thresholds, thresholds_source = default_thresholds(), "ptx_keras.constants"
    else:
        run = load_run(os.fspath(run_dir_or_model))
        model, size, channels = run["model"], run["image_size"], run["channels"]
        source_run, model_name, bit_depth = run["run_dir"], run["model_name"], run["bit_depth"]
        base_thresholds, thresholds_source = run["thresholds"], run["thresholds_source"]
        if output is None:
            output = os.path.join(source_run, SAVED_MODEL_DIRNAME)
    if thresholds is not None:
        base_thresholds, thresholds_source = check_thresholds(thresholds), "argument"
    th = base_thresholds

    # The network is traced once, as its own function, and called by every signature: tracing it once per
    # signature made exporting the paper's model take minutes and stored its graph four times.
    network = tf.function(
        lambda images: tf.cast(model(images, training=False), tf.float32),
        input_signature=[tf.TensorSpec([None, size, size, channels], tf.float32)],
        autograph=False,
    )

    def raw_endpoint(value_max):
        def fn(images):
            probs = network(preprocess_images(images, size, channels, value_max, bit_depth))
            shape = tf.shape(images)
            return postprocess_probabilities(probs[..., C.PTX_CLASS], shape[1], shape[2], th)

        return fn

    def preprocessed_fn(images):
        return {"probabilities": network(images)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, dtype in RAW_SIGNATURES:
        archive.add_endpoint(
            name, raw_endpoint(DTYPE_VALUE_MAX[dtype]), input_signature=[tf.TensorSpec(None, dtype, name="images")]
        )
    archive.add_endpoint(
        PREPROCESSED_SIGNATURE,
        preprocessed_fn,
        input_signature=[tf.TensorSpec([None, size, size, channels], tf.float32, name="images")],
    )

    base = os.path.abspath(os.fspath(output))
    final = os.path.join(base, str(version))
    os.makedirs(base, exist_ok=True)
    tmp = os.path.join(base, f".{version}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        archive.write_out(tmp, verbose=False)
        metadata = {
            "format": "tensorflow-saved-model",
            "model_name": model_name,
            "input_size": size,
            "channels": channels,
            "num_classes": C.NUM_CLASSES,
            "ptx_class": C.PTX_CLASS,
            "thresholds": th,
            "thresholds_source": thresholds_source,
            "min_area_pixels_at_model_size": min_area_pixels(th, size),
            "bit_depth": bit_depth,
            "preprocessing": {
                "value_max": {name: DTYPE_VALUE_MAX[dtype] for name, dtype in RAW_SIGNATURES},
                "intensity": f"x / value_max, rounded to {2 ** bit_depth - 1} levels, clipped to [0, 1]",
                "resize": f"{RESIZE_METHOD}, antialiased, to {size}x{size}",
                "channels": f"grayscale replicated to {channels}",
            },
            "signatures": _describe_signatures(tmp),
            "version": version,
            "package": "ptx_keras",
            "package_version": __version__,
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
            "source_run": source_run,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        # A copy inside the version directory keeps a lone copied version self-describing (TF Serving ignores it).
        extra = os.path.join(tmp, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        _write_json(os.path.join(extra, EXPORT_METADATA_FILENAME), metadata)
        # Swap in the new version: the old one is renamed aside first so a failure never leaves a half directory.
        old = None
        if os.path.exists(final):
            old = os.path.join(base, f".{version}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta_path = os.path.join(base, EXPORT_METADATA_FILENAME)
    _write_json(meta_path, metadata)
    if verbose:
        print(f"SavedModel written to {final} (signatures: {', '.join(metadata['signatures'])})")
    return {
        "path": final,
        "base_dir": base,
        "version": version,
        "metadata": meta_path,
        "signatures": list(metadata["signatures"]),
        "thresholds": th,
        "image_size": size,
        "channels": channels,
    }


def _describe_signatures(path):
    """Reads the signatures back from the written SavedModel (what a client really sees)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    out = {}
    for name, fn in loaded.signatures.items():
        _, inputs = fn.structured_input_signature
        out[name] = {
            "inputs": {k: _spec(v) for k, v in inputs.items()},
            "outputs": {k: _spec(v) for k, v in sorted(fn.structured_outputs.items(), key=_output_order)},
        }
        for k, meaning in _RAW_OUTPUTS.items():
            if k in out[name]["outputs"]:
                out[name]["outputs"][k]["meaning"] = meaning
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != "serving_default", kv[0])))


def _output_order(item):
    names = list(_RAW_OUTPUTS)
    return (names.index(item[0]) if item[0] in names else len(names), item[0])


def _spec(spec):
    shape = None if spec.shape.rank is None else [d for d in spec.shape.as_list()]
    return {"dtype": spec.dtype.name, "shape": shape}


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: unreadable {what} ({e})") from None


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------
# Reading an export back (ptx_keras.predict)
# ---------------------------------------------------------------------------------------------------------
def is_saved_model_dir(path):
    """True for a SavedModel directory (`saved_model.pb`) or a base directory holding numbered versions."""
    return find_saved_model_version(path) is not None


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
            meta = _read_json(path, "export metadata")
            missing = [k for k in ("input_size", "channels", "thresholds") if k not in meta]
            if missing:
                raise ModelError(f"{path}: export metadata lacks {missing}")
            meta["thresholds"] = check_thresholds(meta["thresholds"], path)
            return meta
    raise ModelError(
        f"{version_dir}: no {EXPORT_METADATA_FILENAME} found (looked in {' and '.join(candidates)}); "
        "export it with ptx-export"
    )
