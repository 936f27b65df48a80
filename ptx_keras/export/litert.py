"""LiteRT export: the deployment graph as a `.tflite` file, for edge devices and mobile runtimes.

`export_litert(run_dir)` writes `RUN_DIR/litert/model.tflite` and `RUN_DIR/litert/export.json`. The graph is the
portable entry point of `ptx_keras.export.graph.ServingGraph` (`ptx_keras.artifacts`: inputs `images` float32
`(1, height, width)` of any size and `value_max`, the SavedModel's raw outputs), converted the way Keras'
own `model.export(format="litert")` does (a SavedModel written by `keras.export.ExportArchive`, then
`tf.lite.TFLiteConverter.from_saved_model`), with TFLite builtin ops only, so that any LiteRT runtime runs it
without the TensorFlow (Flex) delegate. Weights stay float32.

The batch is fixed at one image (`LITERT_BATCH`): with a free batch size, LiteRT's default CPU delegate
(XNNPACK) computed the first call right and every later call of the same shape wrong for networks with scSE
blocks in every layer (the paper's; the version it was seen with is in docs/deployment.md, "ONNX and LiteRT");
one image per call avoids it, and is how edge devices run anyway. The parity tests call each artifact
repeatedly to catch that kind of fault.
"""

import hashlib
import logging
import os
import tempfile

from ptx_keras.artifacts import FILENAMES, LITERT_BATCH, PORTABLE_SIGNATURE
from ptx_keras.errors import ModelError
from ptx_keras.export.graph import ServingGraph, resolve_deployed
from ptx_keras.export.metadata import describe_outputs, portable_metadata, portable_result, tensor_spec
from ptx_keras.export.replace import check_replaceable

__all__ = ["export_litert"]


logger = logging.getLogger(__name__)


def export_litert(run_dir_or_model, output=None, *, thresholds=None, tta=None):
    """Exports the deployment graph (preprocessing, network, diagnosis) as a LiteRT (`.tflite`) model.

    Args:
        run_dir_or_model: A run directory or a `keras.Model` (as `export_saved_model`).
        output: The directory to write `model.tflite` and `export.json` into; default `RUN_DIR/litert`,
            required for a model object.
        thresholds: A `Thresholds` overriding the run's.
        tta: `"none"` or `"hflip"` overriding the run's `evaluation.tta`.

    Returns:
        `ptx_keras.export.ExportResult` (`path` is the `.tflite` file, `version` None).

    Raises:
        ModelError: for a bad run, model or argument, or a graph op LiteRT has no builtin for (named by the
            converter).
        OutputError: if `output` holds a `model.tflite` or `export.json` that ptx_keras did not write
            (`ptx_keras.export.replace`); an earlier ptx_keras export there is replaced, with a warning.
    """
    import tensorflow as tf

    deployed, run = resolve_deployed(run_dir_or_model, thresholds, tta)
    if output is None:
        if run is None:
            raise ModelError("output is required when exporting a model object (no run directory to put it in)")
        output = run.litert_dir
    base = os.path.abspath(os.fspath(output))
    check_replaceable("litert", base)  # before the conversion: a foreign model.tflite is never replaced
    os.makedirs(base, exist_ok=True)
    archive = ServingGraph(deployed).archive(saved_model=False, portable=True, portable_batch=LITERT_BATCH)
    logger.info("Converting %s to LiteRT (TensorFlow %s converter)", deployed.model_name, tf.__version__)
    with tempfile.TemporaryDirectory(prefix=".litert-", dir=base) as saved_model:
        archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[PORTABLE_SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            flatbuffer = converter.convert()
        except Exception as e:  # the converter raises ConverterError (and others) naming the unsupported ops
            raise ModelError(f"the LiteRT conversion failed: {type(e).__name__}: {str(e)[-2000:]}") from None

    path = os.path.join(base, FILENAMES["litert"])
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(flatbuffer)
        inputs, outputs = _describe(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    metadata = portable_metadata(
        deployed,
        run,
        "litert",
        path,
        inputs,
        outputs,
        batch=LITERT_BATCH,
        weights="float32",
        sha256=hashlib.sha256(flatbuffer).hexdigest(),
        converter=f"tf.lite.TFLiteConverter (TensorFlow {tf.__version__}), builtin ops only",
    )
    logger.info("LiteRT model written to %s (%.1f MB)", path, len(flatbuffer) / 1e6)
    return portable_result(deployed, path, metadata)


def _describe(path):
    """The entry point's inputs and outputs as the LiteRT interpreter sees them (what a client gets)."""
    from ptx_keras.artifacts import ArtifactSession

    session = ArtifactSession("litert", path, threads=1)
    runner = session.signature_runner
    inputs = {k: tensor_spec(v["dtype"].__name__, _shape(v)) for k, v in runner.get_input_details().items()}
    outputs = {k: (v["dtype"].__name__, _shape(v)) for k, v in runner.get_output_details().items()}
    return inputs, describe_outputs(outputs)


def _shape(details):
    # shape_signature has -1 for the sizes that vary (batch, height, width).
    return [None if d < 0 else int(d) for d in details.get("shape_signature", details["shape"])]
