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

The graph functions are `ptx_keras.serving`'s, which `ptx_keras.predict` runs too.
"""

import dataclasses
import datetime
import json
import logging
import os
import shutil

from ptx_keras import constants as C
from ptx_keras.diagnosis import Thresholds
from ptx_keras.errors import ModelError, require_tensorflow
from ptx_keras.serving import (
    DTYPE_VALUE_MAX,
    EXPORT_METADATA_FILENAME,
    PREPROCESSED_SIGNATURE,
    RAW_OUTPUTS,
    RAW_SIGNATURES,
    RESIZE_METHOD,
    deployed_model,
    load_deployed_run,
    postprocess_probabilities,
    preprocess_images,
)

require_tensorflow(__name__)  # tf.data/SavedModel/graph code: a clear error on JAX or PyTorch

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What `export_saved_model` wrote.

    Attributes:
        path: The version directory (`<base_dir>/<version>`).
        base_dir: The model base directory TF Serving watches.
        version: The version number.
        metadata: The `export.json` path beside the versions.
        signatures: The signature names.
        thresholds: The `Thresholds` in the graph.
        image_size: The model's input size S.
        channels: The model's input channels C.
    """

    path: str
    base_dir: str
    version: int
    metadata: str
    signatures: tuple
    thresholds: Thresholds
    image_size: int
    channels: int


def export_saved_model(run_dir_or_model, output=None, *, version=1, thresholds=None):
    """Exports a trained model as a TF Serving SavedModel with in-graph preprocessing and diagnosis.

    Args:
        run_dir_or_model: A run directory (uses `best.keras`, its config and thresholds) or a `keras.Model`
            with input `(batch, S, S, C)` and a 2-class softmax output `(batch, S, S, 2)`.
        output: The model base directory; the SavedModel goes to `output/<version>/`. Default for a run
            directory: `RUN_DIR/saved_model`; required for a model.
        version: Positive integer version (TF Serving serves the highest).
        thresholds: A `Thresholds` overriding the run's (its validation search, else its configuration) or,
            for a model, the paper's.

    Returns:
        `ExportResult`.

    Raises:
        ModelError: for a bad run directory, model, version or thresholds file.
    """
    import keras
    import tensorflow as tf

    from ptx_keras import __version__

    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelError(f"version must be a positive integer. Received: version={version!r}")
    if thresholds is not None and not isinstance(thresholds, Thresholds):
        raise ModelError(f"thresholds must be a Thresholds. Received: thresholds={thresholds!r}")
    if isinstance(run_dir_or_model, keras.Model):
        if output is None:
            raise ModelError("output is required when exporting a model object (no run directory to put it in)")
        deployed = deployed_model(run_dir_or_model, thresholds)
    else:
        from ptx_keras.runs import RunDir

        run = RunDir.of(run_dir_or_model)
        deployed = load_deployed_run(run)
        if thresholds is not None:
            deployed = dataclasses.replace(deployed, thresholds=thresholds, thresholds_source="argument")
        if output is None:
            output = run.saved_model_dir
    model, size, channels, bit_depth = deployed.model, deployed.image_size, deployed.channels, deployed.bit_depth
    th = deployed.thresholds

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
            "model_name": deployed.model_name,
            "input_size": size,
            "channels": channels,
            "num_classes": C.NUM_CLASSES,
            "ptx_class": C.PTX_CLASS,
            "thresholds": th.to_dict(),
            "thresholds_source": deployed.thresholds_source,
            "min_area_pixels_at_model_size": th.min_pixels(size),
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
            "source_run": deployed.run_dir,
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
    logger.info("SavedModel written to %s (signatures: %s)", final, ", ".join(metadata["signatures"]))
    return ExportResult(final, base, version, meta_path, tuple(metadata["signatures"]), th, size, channels)


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
        for k, meaning in RAW_OUTPUTS.items():
            if k in out[name]["outputs"]:
                out[name]["outputs"][k]["meaning"] = meaning
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != "serving_default", kv[0])))


def _output_order(item):
    names = list(RAW_OUTPUTS)
    return (names.index(item[0]) if item[0] in names else len(names), item[0])


def _spec(spec):
    shape = None if spec.shape.rank is None else [d for d in spec.shape.as_list()]
    return {"dtype": spec.dtype.name, "shape": shape}


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
