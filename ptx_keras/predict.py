"""Prediction on new studies: PNG/JPEG/DICOM files or folders -> CSV, overlays, masks, SIIM-ACR submission, DICOM.

`predict_paths(inputs, model, output_dir)` runs a trained run directory (`best.keras`) or an exported model
(`ptx-export`: a SavedModel, an ONNX or a LiteRT file) on every image found. Each image is read at its own size, preprocessed to the model's `S x S`
by the same graph functions as the SavedModel's signatures (`ptx_keras.serving.GraphPipeline`), batched, and its
pneumothorax probabilities are resized back to the image's size. The diagnosis uses the paper's area rule at the
model resolution with the run's thresholds (`eval/val/thresholds.json` when evaluation chose them, else the
configuration's), exactly as the exported `serving_default` signature does.

Outputs in `output_dir`:

* `predictions.csv`: one row per file (`PREDICTION_COLUMNS`); unreadable files have status `error` and the
  message, and the run goes on;
* `overlays/<sample_id>.png`: the predicted mask (filled, with its contour) over the image;
* `masks/<sample_id>.png` (`save_masks=True`): the mask at the image's size, 0/255;
* `submission.csv` (`format="siim"`): SIIM-ACR `ImageId,EncodedPixels`, the mask's run-length encoding
  (`ptx_keras.data.rle.rle_encode`) for images diagnosed pneumothorax and `-1` for the others;
* `uncertainty/<sample_id>.png` (`uncertainty="mc_dropout"` or `"tta"`): the per-pixel standard deviation of the
  pneumothorax probability over the samples (`ptx_keras.inference.ModelRunner.sample`), at the image's size,
  8-bit with `UNCERTAINTY_PNG_SCALE` (pixel value = 510 x std: 255 is a std of 0.5, the largest a probability
  can have); the CSV then also gives `image_probability_std` (the standard deviation over the samples of the
  image-level probability: the aux head's when the model has one, else the largest pixel probability) and
  `diagnosis_agreement` (the fraction of samples whose diagnosis equals the reported one). The reported
  prediction itself stays the deterministic one;
* `dicom/<sample_id>_seg.dcm` and `dicom/<sample_id>_sr.dcm` (`format="dicom"`, DICOM inputs only): a DICOM
  Segmentation and a structured report per image (`ptx_keras.dicom_out`); with `uncertainty`, also
  `dicom/<sample_id>_pm.dcm`, a DICOM Parametric Map of the standard deviation map, whose image-level figures
  the report then carries too;
* `summary.json`: counts, the model and its thresholds, the time taken and images per second.

Run as `ptx-predict` (`python -m ptx_keras.cli.predict`).
"""

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ptx_keras import constants as C
from ptx_keras.errors import DataError, ModelError, PtxError
from ptx_keras.runs import latest_run

__all__ = [
    "DEFAULT_RUNS_DIR",
    "DEFAULT_SAMPLES",
    "FORMATS",
    "MASK_DIRNAME",
    "OVERLAY_DIRNAME",
    "PREDICTIONS_FILENAME",
    "PREDICTION_COLUMNS",
    "PredictionResult",
    "SUBMISSION_FILENAME",
    "SUMMARY_FILENAME",
    "UNCERTAINTY_DIRNAME",
    "UNCERTAINTY_PNG_SCALE",
    "Predictor",
    "collect_inputs",
    "load_predictor",
    "overlay_image",
    "predict_paths",
    "sample_ids",
    "uncertainty_summary",
]


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionResult:
    """What `predict_paths` did (also written to `summary.json`, without `summary`).

    Attributes:
        n_files, n_ok, n_failed, n_positive: Files found, predicted, failed, and diagnosed positive.
        failed: `(file, error)` of every failed file (each also has its row in predictions.csv).
        predictions: The predictions.csv path.
        submission: The SIIM-ACR submission.csv path (format "siim"), else None.
        overlays_dir, masks_dir, uncertainty_dir, dicom_dir: Output folders, None when not written.
        model: The predictor's description (kind, path, size, TTA, ...).
        uncertainty: The uncertainty method and samples, or None.
        seconds: From the first file read to the last output written (model loading excluded).
        images_per_second: Predicted files per second over `seconds` (None when no time passed).
        dicom_skipped: Predicted files that got no DICOM output (not DICOM).
        summary: The summary.json path.
    """

    n_files: int
    n_ok: int
    n_failed: int
    n_positive: int
    failed: list
    predictions: str
    submission: object
    overlays_dir: object
    masks_dir: object
    model: dict
    uncertainty_dir: object
    uncertainty: object
    seconds: float
    images_per_second: object
    dicom_dir: object
    dicom_skipped: list
    summary: str

    def __getitem__(self, key):
        """`result[key]`: the dict interface of earlier versions."""
        if key not in _PREDICTION_RESULT_FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self):
        """The fields as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)


_PREDICTION_RESULT_FIELDS = frozenset(f.name for f in dataclasses.fields(PredictionResult))

FORMATS = ("csv", "siim", "dicom")
PREDICTIONS_FILENAME = "predictions.csv"
SUBMISSION_FILENAME = "submission.csv"
SUMMARY_FILENAME = "summary.json"
OVERLAY_DIRNAME = "overlays"
MASK_DIRNAME = "masks"
UNCERTAINTY_DIRNAME = "uncertainty"
UNCERTAINTY_PNG_SCALE = 510.0  # uint8 value per unit of standard deviation (0.5, the largest possible, is 255)
DEFAULT_SAMPLES = {"mc_dropout": 10, "tta": 2}  # samples per image when not given
DEFAULT_RUNS_DIR = C.RUNS_DIR
PREDICTION_COLUMNS = (
    "file",
    "sample_id",
    "status",
    "error",
    "diagnosis",
    "score",
    "max_probability",
    "area_px",
    "area_mm2",
    "height",
    "width",
    "overlay",
    "mask",
    "aux_probability",
    "image_probability_std",
    "diagnosis_agreement",
    "uncertainty_map",
    "dicom_seg",
    "dicom_sr",
    "dicom_pm",
)
_INT_COLUMNS = ("diagnosis", "area_px", "height", "width")
_OVERLAY_FILL = np.array([255, 40, 40], np.float32)  # red
_OVERLAY_CONTOUR = np.array([255, 230, 0], np.uint8)  # yellow
_OVERLAY_ALPHA = 0.35
_OVERLAY_BAND_PIXELS = 1 << 20  # pixels blended at a time (a 16 MB float32 band)
_LABEL_ROWS = 40  # the rows the overlay's label can touch (its box is 17 rows high)


# ---------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------
class Predictor:
    """A loaded model with its deployment settings: raw images -> model inputs -> PTX probabilities -> outputs.

    Build it with `load_predictor`.

    Attributes:
        kind: `"run"` (Keras model from a run directory) or the export's format (`constants.EXPORT_FORMATS`).
        path: The run directory, the SavedModel version directory or the ONNX / LiteRT file.
        model_name, image_size, channels, bit_depth, thresholds: As exported.
        runner: The `ptx_keras.inference.ModelRunner` (the shared prediction loop's model) with the model's
            deployed test-time augmentation.
        pipeline: The `ptx_keras.serving.GraphPipeline` (shared preprocessing and postprocessing).
        tta: The test-time augmentation it predicts with by default (a run's `evaluation.tta`, an export's).
        graph_tta: The test-time augmentation already inside the loaded graph (an export's; "none" for a run).
    """

    def __init__(
        self, kind, path, call, model_name, image_size, channels, bit_depth, thresholds, *, tta="none", graph_tta="none"
    ):
        from ptx_keras.inference import ModelRunner
        from ptx_keras.serving import GraphPipeline

        self.kind, self.path = kind, path
        self.model_name, self.image_size, self.channels = model_name, int(image_size), int(channels)
        self.bit_depth = int(bit_depth)
        self.tta, self.graph_tta = tta, graph_tta
        self._base_runner = ModelRunner(call, image_size, channels, model_name or kind)
        self.runner = self.runner_for(tta)
        self.pipeline = GraphPipeline(image_size, channels, thresholds, bit_depth)
        self.thresholds = self.pipeline.thresholds

    def runner_for(self, tta=None):
        """The runner predicting with test-time augmentation `tta` (None: the model's own, `self.tta`).

        Raises:
            ConfigError: for TTA "none" on a graph exported with TTA inside (it cannot be taken out).
        """
        from ptx_keras.errors import ConfigError
        from ptx_keras.inference import check_tta

        tta = self.tta if tta is None else tta
        check_tta(tta, ConfigError)
        if self.graph_tta != "none":
            if tta != self.graph_tta:
                raise ConfigError(
                    f"{self.path} was exported with tta={self.graph_tta} inside its graph; export it "
                    f"again with ptx-export --tta {tta} to predict without it"
                )
            return self._base_runner  # the graph averages already
        return self._base_runner.with_tta(tta)

    def probabilities(self, batch):
        """float32 `(batch, S, S, C)` preprocessed images -> float32 `(batch, S, S)` PTX probabilities."""
        return self.runner(batch)

    def describe(self):
        return {
            "kind": self.kind,
            "path": self.path,
            "model_name": self.model_name,
            "image_size": self.image_size,
            "channels": self.channels,
            "bit_depth": self.bit_depth,
            "thresholds": self.thresholds.to_dict(),
            "tta": self.tta,
        }


def load_predictor(model):
    """Loads a run directory or an exported model: a SavedModel (the base directory with numbered versions, or
    one version), an ONNX or a LiteRT file, or the directory `ptx-export` wrote one of them into.

    The exported graphs take raw images; `ptx-predict` preprocesses with the same graph functions so that images
    of any size share a batch, and runs an ONNX or LiteRT file on the preprocessed batch
    (`ptx_keras.artifacts.ArtifactSession.preprocessed_call`: its own preprocessing is then the identity).

    Args:
        model: Path of a run directory (`config.yaml` + `best.keras`) or of an exported model.

    Returns:
        A `Predictor`.

    Raises:
        ModelError: if the path does not exist, is none of these, lacks its export metadata, or its runtime
            (onnxruntime, the LiteRT interpreter) cannot load it.
    """
    from ptx_keras.artifacts import ArtifactSession, find_artifact, read_artifact_metadata
    from ptx_keras.runs import CONFIG_FILENAME, RunDir
    from ptx_keras.serving import load_deployed_run

    model = os.fspath(model)
    if not os.path.exists(model):
        raise ModelError(
            f"Model not found: {model} (pass a run directory or an exported model: a SavedModel, an .onnx or a "
            ".tflite file)"
        )
    if RunDir(model).is_run():
        run = load_deployed_run(model)
        return Predictor(
            "run",
            run.run_dir,
            run.model,
            run.model_name,
            run.image_size,
            run.channels,
            run.bit_depth,
            run.thresholds,
            tta=run.tta,
        )
    found = find_artifact(model)
    if found is None:
        raise ModelError(
            f"{model} is neither a run directory (no {CONFIG_FILENAME}) nor an exported model (no saved_model.pb, "
            "no numbered version directories, no .onnx or .tflite file)"
        )
    fmt, path = found
    meta = read_artifact_metadata(fmt, path)
    if fmt == C.SAVEDMODEL_FORMAT:
        call = _saved_model_call(path)
    else:
        call = ArtifactSession(fmt, path).preprocessed_call(int(meta["channels"]))
    return Predictor(
        fmt,
        os.path.abspath(path),
        call,
        meta.get("model_name"),
        meta["input_size"],
        meta["channels"],
        meta.get("bit_depth", 8),
        meta["thresholds"],
        tta=meta.get("tta", "none"),
        graph_tta=meta.get("tta", "none"),
    )


def _saved_model_call(version_dir):
    """The `serve_preprocessed` signature of a SavedModel version as a `ModelRunner` call."""
    import tensorflow as tf

    from ptx_keras.serving import PREPROCESSED_SIGNATURE

    try:
        loaded = tf.saved_model.load(version_dir)
    except Exception as e:  # TensorFlow raises several unrelated types for a damaged SavedModel
        raise ModelError(f"{version_dir}: cannot load the SavedModel ({type(e).__name__}: {e})") from None
    if PREPROCESSED_SIGNATURE not in loaded.signatures:
        raise ModelError(
            f"{version_dir}: the SavedModel has no {PREPROCESSED_SIGNATURE!r} signature; export it with ptx-export"
        )
    signature = loaded.signatures[PREPROCESSED_SIGNATURE]

    def call(batch):
        # Keep the loaded object alive as long as its signature is used.
        return {k: v.numpy() for k, v in signature(images=tf.constant(batch)).items()} if loaded else None

    return call


# ---------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------
def collect_inputs(inputs):
    """Expands files and folders (recursively; hidden entries skipped) into a sorted list of image files.

    Files named explicitly are kept whatever their extension (a failure to read them is reported per file);
    inside folders only PNG/JPEG/TIFF/BMP/DICOM extensions are taken (`ptx_keras.data.readers.IMAGE_EXTENSIONS`).
    A file reached twice (named and inside a named folder) is kept once.

    Returns:
        List of `(path, sample_id)` with unique sample ids (`sample_ids`).

    Raises:
        DataError: if an input does not exist or no image is found.
    """
    from ptx_keras.data.readers import IMAGE_EXTENSIONS

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isfile(item):
            found.append(item)
        elif os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                        found.append(os.path.join(root, name))
        else:
            raise DataError(f"Input not found: {item}")
    seen, unique = set(), []
    for path in found:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    if not unique:
        exts = ", ".join(IMAGE_EXTENSIONS)
        raise DataError(f"No images found in {', '.join(map(os.fspath, inputs)) or 'the inputs'} (extensions {exts})")
    return list(zip(unique, sample_ids(unique)))


def sample_ids(paths):
    """Unique, deterministic sample ids for image files: they name the overlays, masks and submission rows.

    Each file takes the first of these forms that no other file shares: its name without extension (`x`),
    its name (`x.png`, when `x.png` and `x.tif` both exist), its path relative to the deepest folder holding
    all the files without extension (`a__y` for `a/y.png` beside `b/y.png`; `/` becomes `__`), and that path
    with extension. Ids are compared case-insensitively, since overlays of `X` and `x` would overwrite each
    other on macOS and Windows. Should all forms clash (names that themselves contain `__`), the later files
    in input order get `-2`, `-3`, ... appended.

    Args:
        paths: The image files, in input order.

    Returns:
        List of ids, one per path.
    """
    absolute = [os.path.abspath(os.fspath(p)) for p in paths]
    if not absolute:
        return []
    root = os.path.commonpath([os.path.dirname(p) for p in absolute])

    def forms(path):
        out = []
        for text in (os.path.basename(path), os.path.relpath(path, root)):
            for form in (os.path.splitext(text)[0], text):
                form = form.replace(os.sep, "__").replace("/", "__")
                if form not in out:  # a file in `root` itself has two forms only
                    out.append(form)
        return out

    choices = [forms(p) for p in absolute]
    levels = [0] * len(absolute)
    while True:
        ids = [c[level] for c, level in zip(choices, levels)]
        groups = {}
        for i, sample_id in enumerate(ids):
            groups.setdefault(sample_id.casefold(), []).append(i)
        clashing = [i for g in groups.values() if len(g) > 1 for i in g if levels[i] < len(choices[i]) - 1]
        if not clashing:
            break
        for i in clashing:
            levels[i] += 1
    taken = set()
    for i, sample_id in enumerate(ids):
        candidate, n = sample_id, 1
        while candidate.casefold() in taken:
            n += 1
            candidate = f"{sample_id}-{n}"
        ids[i] = candidate
        taken.add(candidate.casefold())
    return ids


# ---------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------
def overlay_image(image, mask, value_max=None, label=None):
    """Draws a mask (filled, with a contour) over a grayscale image.

    Args:
        image: 2-D array `(height, width)`.
        mask: 2-D array of the same shape; nonzero = pneumothorax.
        value_max: The value shown white (default: that of the dtype, 1.0 for floats).
        label: Optional text written in the top-left corner.

    Returns:
        uint8 RGB array `(height, width, 3)`.
    """
    from scipy import ndimage

    from ptx_keras.serving import DTYPE_VALUE_MAX

    image = np.asarray(image)
    mask = np.asarray(mask) != 0
    if value_max is None:
        value_max = DTYPE_VALUE_MAX.get(image.dtype.name, 1.0)
    # Blended a band of rows at a time: the float32 RGB of a whole 10000 x 10000 image alone would be 1.2 GB
    # (docs/data.md, memory); the band's arithmetic is the whole image's, so the result is the same.
    rgb = np.empty(image.shape + (3,), np.uint8)
    band = max(1, _OVERLAY_BAND_PIXELS // max(1, image.shape[1]))
    for top in range(0, image.shape[0], band):
        rows = slice(top, top + band)
        gray = np.clip(image[rows].astype(np.float32) / float(value_max), 0.0, 1.0) * 255.0
        part = np.repeat(gray[..., None], 3, axis=-1)
        inside = mask[rows]
        part[inside] = (1 - _OVERLAY_ALPHA) * part[inside] + _OVERLAY_ALPHA * _OVERLAY_FILL
        rgb[rows] = part.round().astype(np.uint8)
    if mask.any():
        # About 1 pixel per 512 of image side, so the contour stays visible on 2-3k radiographs.
        width = max(1, round(min(mask.shape) / 512))
        contour = mask & ~ndimage.binary_erosion(mask, iterations=width, border_value=0)
        rgb[contour] = _OVERLAY_CONTOUR
    if label:
        from PIL import Image, ImageDraw

        top = rgb[:_LABEL_ROWS]  # drawn on the top rows only: a copy of a large image costs its size twice
        pil = Image.fromarray(np.ascontiguousarray(top))
        draw = ImageDraw.Draw(pil)
        draw.rectangle((0, 0, 8 + 6 * len(label), 16), fill=(0, 0, 0))
        draw.text((4, 3), label, fill=(255, 255, 255))
        top[...] = np.asarray(pil)
    return rgb


def _save_png(path, array):
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(array)).save(path)


def _progress(total, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="image", desc="predict", disable=not enabled)


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------
def predict_paths(
    inputs,
    model=None,
    output_dir="predictions",
    *,
    format="csv",
    batch_size=8,
    save_masks=False,
    overlays=True,
    progress=True,
    tta=None,
    uncertainty=None,
    samples=None,
    dicom_uid_seed=None,
    max_image_pixels=None,
):
    """Predicts pneumothorax masks and diagnoses for image files and folders.

    Whatever goes wrong with one file (unreadable, too large, a decoder or a DICOM writer failing on its header,
    an output that cannot be written) becomes that file's error row; the other files are predicted and every
    output is written.

    Args:
        inputs: A path or a list of paths: PNG/JPEG/TIFF/DICOM files, or folders searched recursively.
        model: A run directory, an exported model (`load_predictor`: a SavedModel, an `.onnx` or `.tflite` file
            or its export directory), or a `Predictor`; None takes the most recent run under `./runs`.
        output_dir: Where the outputs go (created).
        format: `"csv"` (predictions.csv only), `"siim"` (also a SIIM-ACR `submission.csv`) or `"dicom"` (also a
            DICOM Segmentation and a structured report for each DICOM input; needs at least one).
        batch_size: Images per model call (each image is resized to the model's size first, so sizes may mix).
        save_masks: Also write the masks as PNG (0/255, the image's size).
        overlays: Write overlay PNGs.
        progress: Show a tqdm progress bar.
        tta: Test-time augmentation, `"none"` or `"hflip"`; None: the model's (a run's `evaluation.tta`, an
            export's).
        uncertainty: None, `"mc_dropout"` (a run directory whose model has dropout) or `"tta"`: also write the
            per-pixel standard deviation maps and the uncertainty columns (see the module docstring).
        samples: Samples per image for `uncertainty` (>= 2; default `DEFAULT_SAMPLES`).
        dicom_uid_seed: With `format="dicom"`: None gives every object new UIDs; a string derives them from it
            and the source's UIDs, so that predicting a source again gives the same UIDs
            (`ptx_keras.dicom_out.DicomWriter`'s `uid_seed`; the inference node's).
        max_image_pixels: The image size limit (`ptx_keras.data.limits`; None: `MAX_IMAGE_PIXELS`): a larger
            image, as its header claims, gets an error row without being decoded.

    Returns:
        A frozen `PredictionResult` (counts, failed files, output paths, the model's description, timing);
        `result["n_ok"]` etc. still reads it as the dict of earlier versions.

    Raises:
        ConfigError: for an unknown format, `"dicom"` without any DICOM input, an unknown TTA or uncertainty method, a non-positive batch size, fewer than 2
            samples, or MC dropout on a model without dropout or without its Keras model (a SavedModel).
        DataError: if an input does not exist or no image is found.
        ModelError: if the model cannot be found or loaded.
        OutputError: if `output_dir` cannot be written.
    """
    _check_options(format, batch_size)
    max_image_pixels = _image_pixel_limit(max_image_pixels)
    files = collect_inputs(inputs)
    if format == "dicom":
        _check_dicom_inputs(files)
    predictor = model if isinstance(model, Predictor) else load_predictor(_model_or_latest_run(model))
    tta = predictor.tta if tta is None else tta
    runner = predictor.runner_for(tta)
    uncertainty_info = _check_uncertainty(uncertainty, samples, runner)
    outputs = _Outputs.create(
        output_dir,
        predictor,
        format=format,
        overlays=overlays,
        save_masks=save_masks,
        uncertainty=uncertainty,
        dicom_uid_seed=dicom_uid_seed,
    )
    staged = _StagedPredictor(predictor, runner, outputs, uncertainty_info, max_image_pixels)
    seconds = staged.run(files, batch_size, progress)
    return staged.write_results(seconds, {**predictor.describe(), "tta": tta})


def _check_options(format, batch_size):
    """Raises ConfigError for an unknown output format or a batch size that is not a positive integer."""
    from ptx_keras.errors import ConfigError

    if format not in FORMATS:
        raise ConfigError(f"Unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")


def _image_pixel_limit(max_image_pixels):
    """The image size limit in force (`ptx_keras.data.limits.resolve_limit`); a bad one is a ConfigError."""
    from ptx_keras.data.limits import resolve_limit
    from ptx_keras.errors import ConfigError

    try:
        return resolve_limit(max_image_pixels)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _model_or_latest_run(model):
    """`model`, or, when None, the most recent run under `./runs` (ModelError if there is none)."""
    if model is not None:
        return model
    model = latest_run(DEFAULT_RUNS_DIR)
    if model is None:
        raise ModelError(f"No model given and no trained run found under ./{DEFAULT_RUNS_DIR}; pass --model")
    return model


@dataclass(frozen=True)
class _Outputs:
    """Where one prediction run writes; None for an output that was not asked for."""

    root: str
    overlay_dir: str | None
    mask_dir: str | None
    uncertainty_dir: str | None
    dicom_writer: object | None  # a `ptx_keras.dicom_out.DicomWriter` (format "dicom")
    submission: bool  # format "siim": a SIIM-ACR submission.csv

    @classmethod
    def create(cls, output_dir, predictor, *, format, overlays, save_masks, uncertainty, dicom_uid_seed):
        """Checks that `output_dir` is writable and creates the folders asked for.

        Raises:
            OutputError: if `output_dir` cannot be written.
        """
        from ptx_keras.errors import writable_dir

        root = os.fspath(output_dir)
        writable_dir(root, "prediction output directory")
        wanted = ((OVERLAY_DIRNAME, overlays), (MASK_DIRNAME, save_masks), (UNCERTAINTY_DIRNAME, uncertainty))
        overlay_dir, mask_dir, uncertainty_dir = (os.path.join(root, name) if on else None for name, on in wanted)
        for d in (overlay_dir, mask_dir, uncertainty_dir):
            if d:
                os.makedirs(d, exist_ok=True)
        writer = _dicom_writer(root, predictor, dicom_uid_seed) if format == "dicom" else None
        return cls(root, overlay_dir, mask_dir, uncertainty_dir, writer, format == "siim")

    def relative(self, path):
        """`path` as the CSV gives it: relative to the output directory."""
        return os.path.relpath(path, self.root)


def _dicom_writer(root, predictor, uid_seed):
    from ptx_keras.dicom_out import DICOM_DIRNAME, DicomWriter

    return DicomWriter(
        os.path.join(root, DICOM_DIRNAME),
        predictor.model_name or predictor.kind,
        predictor.thresholds,
        uid_seed=uid_seed,
    )


# The columns of a row that are not the file's identity; a failed file keeps none of them.
_OUTPUT_COLUMNS = tuple(c for c in PREDICTION_COLUMNS if c not in ("file", "sample_id", "status", "error"))
# The columns naming an output file: a failed file's files are removed, since no row lists them.
_FILE_COLUMNS = ("overlay", "mask", "uncertainty_map", "dicom_seg", "dicom_sr", "dicom_pm")


@dataclass(eq=False)
class _ImageState:
    """One file on its way through `_StagedPredictor`: its row's values and, while it is predicted, its arrays.

    The arrays are dropped (set to None) as soon as the stage that needs them is done: an image can be 100 MB.
    """

    file: str
    sample_id: str
    status: str = "ok"
    error: str = ""
    values: dict = field(default_factory=dict)  # the row's `_OUTPUT_COLUMNS`, as the stages compute them
    input: np.ndarray | None = None  # float32 (S, S, C), the preprocessed model input
    image: np.ndarray | None = None  # (height, width), as read
    value_max: float | None = None  # the value shown white in the overlay
    spacing: tuple | None = None  # (row, column) pixel spacing in mm, when the file gives it
    is_dicom: bool = False
    final_mask: np.ndarray | None = None  # the DICOM Segmentation's mask (emptied when diagnosed negative)
    std_map: np.ndarray | None = None  # the DICOM Parametric Map's values, at the image's size

    @property
    def ok(self):
        return self.status == "ok"

    def row(self):
        """The file's `PREDICTION_COLUMNS` (None for those not computed)."""
        identity = {"file": self.file, "sample_id": self.sample_id, "status": self.status, "error": self.error}
        return {k: identity[k] if k in identity else self.values.get(k) for k in PREDICTION_COLUMNS}

    def drop_arrays(self):
        self.input = self.image = self.final_mask = self.std_map = None


class _StagedPredictor:
    """The prediction of a list of files, as stages run batch by batch.

    Load (read and preprocess a batch of files), predict (the shared prediction loop), finish each image (mask,
    diagnosis, overlay, mask PNG, submission row), add its uncertainty, write its DICOM outputs; then write the
    tables and the summary. Whatever goes wrong with one file in any stage becomes that file's error row.
    """

    def __init__(self, predictor, runner, outputs, uncertainty=None, max_image_pixels=None):
        self.predictor, self.runner, self.outputs = predictor, runner, outputs
        self.uncertainty = uncertainty  # `_check_uncertainty`'s record, or None
        self.max_image_pixels = max_image_pixels
        self.items = []  # every file's `_ImageState`, in input order
        self.rle_rows = []  # the submission's `(ImageId, EncodedPixels)`, when one is written

    def run(self, files, batch_size, progress):
        """Predicts `files` (`collect_inputs`'s pairs) into `self.items`; returns the seconds it took."""
        from ptx_keras.inference import predict_batches

        bar = _progress(len(files), progress)
        started = time.perf_counter()
        try:
            for batch in predict_batches(self.runner, self._batches(files, batch_size, bar), progress=False):
                self._finish_batch(batch)
                if self.uncertainty:
                    self._add_uncertainty(batch)
                if self.outputs.dicom_writer is not None:  # after the uncertainty: its map and figures go in
                    for item in batch["item"]:
                        self._write_dicom(item)
        finally:
            bar.close()
        return time.perf_counter() - started

    # Stage 1: load --------------------------------------------------------------------------------------
    def _batches(self, files, batch_size, bar):
        """Reads and preprocesses a batch of files at a time; unreadable ones keep their error row and are not
        predicted."""
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            loaded = [self._load(path, sample_id) for path, sample_id in chunk]
            self.items.extend(loaded)
            bar.update(len(chunk))
            ok = [item for item in loaded if item.ok]
            if ok:
                images = np.stack([item.input for item in ok])
                for item in ok:
                    item.input = None
                yield {"image": images, "item": np.array(ok, dtype=object)}

    def _load(self, path, sample_id):
        from ptx_keras.data.dicom import is_dicom
        from ptx_keras.data.readers import read_image

        item = _ImageState(path, sample_id)
        try:
            image, info = read_image(path, max_pixels=self.max_image_pixels)
            value_max = float(info["value_range"][1]) if info.get("value_range") else None
            item.input = self.predictor.pipeline.preprocess(image, value_max)
        except Exception as e:  # noqa: BLE001 - one file's failure is its error row, whatever raised it
            self._fail(item, e)
            return item
        item.image, item.value_max, item.spacing = image, value_max, info.get("spacing")
        item.is_dicom = is_dicom(path)
        return item

    # Stage 2: finish each predicted image ---------------------------------------------------------------
    def _finish_batch(self, batch):
        aux = batch.get("aux")
        for j, (item, probability) in enumerate(zip(batch["item"], batch["prob"])):
            try:
                self._finish(item, probability, None if aux is None else aux[j])
            except Exception as e:  # noqa: BLE001 - one file's failure is its error row, the run goes on
                self._fail(item, e, "output failed")

    def _finish(self, item, ptx_probability, aux_probability):
        """The image's mask and diagnosis at its own size, its overlay, mask PNG and submission row."""
        image, item.image = item.image, None
        height, width = image.shape
        out = self.predictor.pipeline.postprocess(ptx_probability, height, width, aux_probability)
        values = item.values
        if aux_probability is not None:
            values["aux_probability"] = float(aux_probability)
        mask = out["mask"]
        values.update(
            diagnosis=int(out["diagnosis"]),
            score=float(out["score"]),
            max_probability=float(out["max_probability"]),
            area_px=int(out["area"]),
            height=int(height),
            width=int(width),
        )
        spacing = item.spacing
        values["area_mm2"] = float(values["area_px"] * spacing[0] * spacing[1]) if spacing else None
        self._write_image_outputs(item, image, mask)
        if self.outputs.dicom_writer is not None and item.is_dicom:
            item.final_mask = mask * np.uint8(values["diagnosis"] == 1)

    def _write_image_outputs(self, item, image, mask):
        from ptx_keras.data.rle import EMPTY_RLE, rle_encode

        outputs, values, name = self.outputs, item.values, f"{item.sample_id}.png"
        if outputs.overlay_dir:
            label = (
                f"PTX  score {values['score']:.1f}  area {values['area_px']} px" if values["diagnosis"] else "no PTX"
            )
            _save_png(os.path.join(outputs.overlay_dir, name), overlay_image(image, mask, item.value_max, label))
            values["overlay"] = outputs.relative(os.path.join(outputs.overlay_dir, name))
        if outputs.mask_dir:
            _save_png(os.path.join(outputs.mask_dir, name), (mask * 255).astype(np.uint8))
            values["mask"] = outputs.relative(os.path.join(outputs.mask_dir, name))
        if outputs.submission:  # the submission's run-length encoding: several times the mask's size to compute
            self.rle_rows.append((item.sample_id, rle_encode(mask) if values["diagnosis"] else EMPTY_RLE))

    # Stage 3: uncertainty -------------------------------------------------------------------------------
    def _add_uncertainty(self, batch):
        probs, aux = self.runner.sample(batch["image"], self.uncertainty["method"], self.uncertainty["samples"])
        for j, item in enumerate(batch["item"]):
            if not item.ok:
                continue
            try:
                self._add_uncertainty_one(item, probs[:, j], None if aux is None else aux[:, j])
            except Exception as e:  # noqa: BLE001 - one file's failure is its error row
                self._fail(item, e, "uncertainty failed")

    def _add_uncertainty_one(self, item, probs, aux):
        from PIL import Image

        values = item.values
        u = uncertainty_summary(probs, aux, self.predictor.thresholds, values["diagnosis"])
        std = Image.fromarray(u["std_map"].astype(np.float32)).resize(
            (values["width"], values["height"]), Image.BILINEAR
        )
        png = np.clip(np.round(np.asarray(std) * UNCERTAINTY_PNG_SCALE), 0, 255).astype(np.uint8)
        path = os.path.join(self.outputs.uncertainty_dir, f"{item.sample_id}.png")
        _save_png(path, png)
        values.update(
            image_probability_std=u["image_probability_std"],
            diagnosis_agreement=u["diagnosis_agreement"],
            uncertainty_map=self.outputs.relative(path),
        )
        if self.outputs.dicom_writer is not None and item.is_dicom:
            item.std_map = np.asarray(std, np.float32)

    # Stage 4: DICOM outputs -----------------------------------------------------------------------------
    def _write_dicom(self, item):
        """Writes the SEG (the final mask), the SR and, with uncertainty, the Parametric Map of one DICOM input."""
        mask, std_map = item.final_mask, item.std_map
        item.final_mask = item.std_map = None
        if mask is None or not item.ok:  # not a DICOM input, or failed before
            return
        try:
            seg, sr, pm = self.outputs.dicom_writer.write(item.file, item.sample_id, mask, item.row(), std_map=std_map)
        except Exception as e:  # noqa: BLE001 - whatever the writer (highdicom) raises for one file's header
            message = str(e) if isinstance(e, PtxError) else f"{type(e).__name__}: {e}"
            item.status, item.error = "error", f"DICOM output failed: {message}"
            logger.warning("%s: %s", item.file, item.error)
            return
        item.values.update(
            dicom_seg=self.outputs.relative(seg),
            dicom_sr=self.outputs.relative(sr),
            dicom_pm=self.outputs.relative(pm) if pm else None,
        )

    # Any stage: one file's failure ----------------------------------------------------------------------
    def _fail(self, item, error, stage=None):
        """Turns an item into an error row: status `error`, the message (`stage: ` first when given), no outputs.

        Any exception counts: a decoder or a writer raising something unforeseen for one file must not stop the
        run. Output files already written for the item are listed in no row, so they are removed.
        """
        message = str(error) if isinstance(error, PtxError) else f"{type(error).__name__}: {error}"
        for column in _FILE_COLUMNS:
            if item.values.get(column):
                try:
                    os.remove(os.path.join(self.outputs.root, item.values[column]))
                except OSError:
                    pass
        item.values.clear()
        item.drop_arrays()
        item.status, item.error = "error", f"{stage}: {message}" if stage else message
        logger.warning("%s", item.error if item.file in item.error else f"{item.file}: {item.error}")

    # The tables and the summary -------------------------------------------------------------------------
    def write_results(self, seconds, model):
        """Writes predictions.csv, the submission (format "siim") and summary.json; returns the summary.

        Args:
            seconds: The time `run` took.
            model: The model's description for the summary.
        """
        rows = [item.row() for item in self.items]
        predictions_path = _write_predictions(rows, self.outputs.root)
        submission_path = _write_submission(self.rle_rows, self.outputs.root) if self.outputs.submission else None
        summary = {
            **_counts(rows),
            "predictions": predictions_path,
            "submission": submission_path,
            "overlays_dir": self.outputs.overlay_dir,
            "masks_dir": self.outputs.mask_dir,
            "model": model,
            "uncertainty_dir": self.outputs.uncertainty_dir,
            "uncertainty": self.uncertainty,
            # Throughput from the first file read to the last output written (model loading excluded).
            "seconds": round(seconds, 3),
            "images_per_second": sum(r["status"] == "ok" for r in rows) / seconds if seconds > 0 else None,
            **_dicom_counts(rows, self.outputs.dicom_writer),
        }
        summary_path = os.path.join(self.outputs.root, SUMMARY_FILENAME)
        with open(summary_path, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        return PredictionResult(**summary, summary=summary_path)


def _write_predictions(rows, output_dir):
    import pandas as pd

    table = pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))
    for column in _INT_COLUMNS:  # nullable: failed files have no values, the others stay integers in the CSV
        table[column] = table[column].astype("Int64")
    path = os.path.join(output_dir, PREDICTIONS_FILENAME)
    table.to_csv(path, index=False)
    return path


def _write_submission(rle_rows, output_dir):
    import pandas as pd

    path = os.path.join(output_dir, SUBMISSION_FILENAME)
    pd.DataFrame(rle_rows, columns=["ImageId", "EncodedPixels"]).to_csv(path, index=False)
    return path


def _counts(rows):
    failed = [(r["file"], r["error"]) for r in rows if r["status"] != "ok"]
    return {
        "n_files": len(rows),
        "n_ok": len(rows) - len(failed),
        "n_failed": len(failed),
        "n_positive": int(sum(1 for r in rows if r["status"] == "ok" and r["diagnosis"] == 1)),
        "failed": failed,
    }


def _dicom_counts(rows, writer):
    """The DICOM folder and the predicted files that got no DICOM output (not DICOM)."""
    if writer is None:
        return {"dicom_dir": None, "dicom_skipped": []}
    skipped = [r["file"] for r in rows if r["status"] == "ok" and not r.get("dicom_seg")]
    return {"dicom_dir": writer.output_dir, "dicom_skipped": skipped}


# ---------------------------------------------------------------------------------------------------------
# Uncertainty
# ---------------------------------------------------------------------------------------------------------
def _check_uncertainty(method, samples, runner):
    """What `predict_paths` records about its uncertainty samples (None without), after checking the request."""
    from ptx_keras.errors import ConfigError
    from ptx_keras.inference import UNCERTAINTY_METHODS, dropout_layers

    if method is None:
        if samples is not None:
            raise ConfigError("samples apply only with uncertainty (--uncertainty mc_dropout|tta)")
        return None
    if method not in UNCERTAINTY_METHODS:
        raise ConfigError(f"Unknown uncertainty method {method!r}; choose one of {', '.join(UNCERTAINTY_METHODS)}")
    samples = DEFAULT_SAMPLES[method] if samples is None else samples
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ConfigError(f"samples must be an integer >= 2. Received: samples={samples!r}")
    if method == "mc_dropout":
        if runner.model is None:
            raise ConfigError(
                f"MC dropout needs a run directory's Keras model; {runner.name} is an exported graph "
                "(its dropout is gone). Use --uncertainty tta, or pass the run directory"
            )
        if not dropout_layers(runner.model):
            raise ConfigError(
                f"MC dropout needs a model with dropout; {runner.name} has none (dropout_rate 0, as "
                "in the quick start). Use --uncertainty tta"
            )
    return {
        "method": method,
        "samples": samples,
        "map": f"per-pixel standard deviation of the pneumothorax probability over the samples, PNG value = "
        f"{UNCERTAINTY_PNG_SCALE:g} x std",
        "image_probability_std": "standard deviation over the samples of the image-level probability (the aux "
        "head's if the model has one, else the largest pixel probability)",
        "diagnosis_agreement": "fraction of the samples whose diagnosis equals the reported one",
    }


def uncertainty_summary(probs, aux, thresholds, diagnosis):
    """The uncertainty of one image from its samples.

    Args:
        probs: float32 `(samples, S, S)` pneumothorax probabilities.
        aux: `(samples,)` image-level probabilities, or None without an aux head.
        thresholds: The `Thresholds` of the reported diagnosis.
        diagnosis: The reported (deterministic) diagnosis, 0 or 1.

    Returns:
        dict: `std_map` float32 `(S, S)` (population standard deviation over the samples),
        `image_probability_std` (of `aux`, else of the per-sample largest pixel probability) and
        `diagnosis_agreement` (the fraction of samples diagnosed as `diagnosis`, by `diagnose` at the model
        resolution, as the graph diagnoses).
    """
    from ptx_keras.diagnosis import diagnose

    probs = np.asarray(probs, np.float32)
    image_level = aux if aux is not None else probs.reshape(len(probs), -1).max(axis=1)
    labels = diagnose(probs, thresholds=thresholds, aux_probability=aux).label
    return {
        "std_map": probs.std(axis=0),
        "image_probability_std": float(np.std(np.asarray(image_level, np.float64))),
        "diagnosis_agreement": float(np.mean(np.asarray(labels) == int(diagnosis))),
    }


def _check_dicom_inputs(files):
    """`format="dicom"`: refuses inputs without any DICOM file and warns about the non-DICOM ones."""
    from ptx_keras.data.dicom import is_dicom
    from ptx_keras.errors import ConfigError

    others = [path for path, _ in files if not is_dicom(path)]
    if len(others) == len(files):
        raise ConfigError(
            f"DICOM output (--format dicom) needs DICOM input: a Segmentation references its source image, and none "
            f"of the {len(files)} input file(s) is DICOM (e.g. {others[0]}). Use --format csv for other images"
        )
    if others:
        logger.warning(
            "DICOM output needs DICOM input: %d of %d file(s) are not DICOM and get no SEG/SR, only their CSV row "
            "(e.g. %s)",
            len(others),
            len(files),
            others[0],
        )
