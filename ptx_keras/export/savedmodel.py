"""The TF Serving SavedModel: the preprocessing and the diagnosis rule inside the graph.

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
  the model's softmax `(batch, S, S, 2)` (averaged over the horizontal mirror when exported with `tta="hflip"`),
  and `aux_probability` `(batch,)` for a model with an image-level head.

The graph is `ptx_keras.export.graph.ServingGraph`'s, built from `ptx_keras.serving`'s functions, which
`ptx_keras.predict` runs too.
"""

import logging
import os
import shutil

from ptx_keras import constants as C
from ptx_keras.artifacts import EXPORT_METADATA_FILENAME
from ptx_keras.errors import ModelError
from ptx_keras.export.graph import ServingGraph, resolve_deployed
from ptx_keras.export.metadata import ExportResult, describe_outputs, export_metadata, tensor_spec, write_json

__all__ = ["export_saved_model"]


logger = logging.getLogger(__name__)


def export_saved_model(run_dir_or_model, output=None, *, version=1, thresholds=None, tta=None):
    """Exports a trained model as a TF Serving SavedModel with in-graph preprocessing and diagnosis.

    Args:
        run_dir_or_model: A run directory (uses `best.keras`, its config and thresholds) or a `keras.Model`
            with input `(batch, S, S, C)` and a 2-class softmax output `(batch, S, S, 2)`.
        output: The model base directory; the SavedModel goes to `output/<version>/`. Default for a run
            directory: `RUN_DIR/saved_model`; required for a model.
        version: Positive integer version (TF Serving serves the highest).
        thresholds: A `Thresholds` overriding the run's (its validation search, else its configuration) or,
            for a model, the paper's.
        tta: Test-time augmentation inside the graph, `"none"` or `"hflip"`; None: the run's `evaluation.tta`
            (what its thresholds were chosen with), `"none"` for a model.

    Returns:
        `ExportResult`.

    Raises:
        ModelError: for a bad run directory, model, version or thresholds file.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelError(f"version must be a positive integer. Received: version={version!r}")
    deployed, run = resolve_deployed(run_dir_or_model, thresholds, tta)
    if output is None:
        if run is None:
            raise ModelError("output is required when exporting a model object (no run directory to put it in)")
        output = run.saved_model_dir
    archive = ServingGraph(deployed).archive(saved_model=True)

    base = os.path.abspath(os.fspath(output))
    final = os.path.join(base, str(version))
    os.makedirs(base, exist_ok=True)
    tmp = os.path.join(base, f".{version}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        archive.write_out(tmp, verbose=False)
        metadata = export_metadata(
            deployed, C.SAVEDMODEL_FORMAT, run, signatures=_describe_signatures(tmp), version=version
        )
        # A copy inside the version directory keeps a lone copied version self-describing (TF Serving ignores it).
        extra = os.path.join(tmp, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        write_json(os.path.join(extra, EXPORT_METADATA_FILENAME), metadata)
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
    write_json(meta_path, metadata)
    logger.info("SavedModel written to %s (signatures: %s)", final, ", ".join(metadata["signatures"]))
    return ExportResult(
        final,
        base,
        version,
        meta_path,
        tuple(metadata["signatures"]),
        deployed.thresholds,
        deployed.image_size,
        deployed.channels,
    )


def _describe_signatures(path):
    """Reads the signatures back from the written SavedModel (what a client really sees)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    out = {}
    for name, fn in loaded.signatures.items():
        _, inputs = fn.structured_input_signature
        out[name] = {
            "inputs": {k: tensor_spec(v.dtype.name, v.shape) for k, v in inputs.items()},
            "outputs": describe_outputs({k: (v.dtype.name, v.shape) for k, v in fn.structured_outputs.items()}),
        }
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != "serving_default", kv[0])))
