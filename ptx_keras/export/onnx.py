"""ONNX export: the deployment graph converted by tf2onnx, for ONNX Runtime (Triton, C++/C#/Java services).

`export_onnx(run_dir)` writes `RUN_DIR/onnx/model.onnx` and `RUN_DIR/onnx/export.json`. The graph is the
portable entry point of `ptx_keras.export.graph.ServingGraph` (`ptx_keras.artifacts`: inputs `images` float32
`(batch, height, width)` of any size and `value_max`, the SavedModel's raw outputs), converted with `tf2onnx`,
the converter Keras' own `model.export(format="onnx")` uses; Keras' export converts the bare network only, without
the preprocessing and the diagnosis rule, so the package converts its serving function instead.
"""

import json
import logging
import os

from ptx_keras.artifacts import FILENAMES, IMAGES_INPUT, ONNX_METADATA_KEY, PORTABLE_SIGNATURE
from ptx_keras.errors import ModelError
from ptx_keras.export.graph import ServingGraph, resolve_deployed
from ptx_keras.export.metadata import describe_outputs, portable_metadata, portable_result, tensor_spec
from ptx_keras.export.replace import check_replaceable

__all__ = ["DEFAULT_OPSET", "export_onnx"]


logger = logging.getLogger(__name__)

# 17: every op the graph needs (Resize with sizes, MatMul broadcasting, Round); ONNX Runtime 1.16+ runs it.
DEFAULT_OPSET = 17
_INSTALL_HINT = 'install the deployment extra: pip install "ptx_keras[deploy]"'


def export_onnx(run_dir_or_model, output=None, *, thresholds=None, tta=None, opset=DEFAULT_OPSET):
    """Exports the deployment graph (preprocessing, network, diagnosis) as an ONNX model.

    Args:
        run_dir_or_model: A run directory or a `keras.Model` (as `export_saved_model`).
        output: The directory to write `model.onnx` and `export.json` into; default `RUN_DIR/onnx`, required
            for a model object.
        thresholds: A `Thresholds` overriding the run's.
        tta: `"none"` or `"hflip"` overriding the run's `evaluation.tta`.
        opset: The ONNX opset (>= 13).

    Returns:
        `ptx_keras.export.ExportResult` (`path` is the `.onnx` file, `version` None).

    Raises:
        ModelError: for a bad run, model or argument, a missing converter (`ptx_keras[deploy]`), or a graph
            op the converter cannot express (named).
        OutputError: if `output` holds a `model.onnx` or `export.json` that ptx_keras did not write
            (`ptx_keras.export.replace`); an earlier ptx_keras export there is replaced, with a warning.
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 13:
        raise ModelError(f"opset must be an integer >= 13. Received: opset={opset!r}")
    try:
        import onnx
        import tf2onnx
    except ImportError as e:
        raise ModelError(f"the ONNX export needs tf2onnx and onnx ({e}); {_INSTALL_HINT}") from None
    deployed, run = resolve_deployed(run_dir_or_model, thresholds, tta)
    if output is None:
        if run is None:
            raise ModelError("output is required when exporting a model object (no run directory to put it in)")
        output = run.onnx_dir
    check_replaceable("onnx", output)  # before the conversion: a foreign model.onnx is never replaced
    graph = ServingGraph(deployed)
    function = graph.portable_function()
    logger.info("Converting %s to ONNX (opset %d) with tf2onnx %s", deployed.model_name, opset, tf2onnx.__version__)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=graph.portable_signature(), opset=opset)
    _check_converted(proto, onnx)
    proto.graph.name = PORTABLE_SIGNATURE
    proto.producer_name, proto.producer_version = "ptx_keras (tf2onnx)", tf2onnx.__version__
    inputs = {i.name: _onnx_spec(i, onnx) for i in proto.graph.input}
    outputs = describe_outputs({o.name: _onnx_type(o, onnx) for o in proto.graph.output})
    path = os.path.join(os.path.abspath(os.fspath(output)), FILENAMES["onnx"])
    metadata = portable_metadata(
        deployed,
        run,
        "onnx",
        path,
        inputs,
        outputs,
        opset=opset,
        converter=f"tf2onnx {tf2onnx.__version__}, onnx {onnx.__version__}",
    )
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(metadata)

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        onnx.save(proto, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    logger.info("ONNX model written to %s (inputs: %s)", path, ", ".join(inputs))
    return portable_result(deployed, path, metadata)


def _check_converted(proto, onnx):
    """tf2onnx logs an op it cannot convert and keeps the TensorFlow op in the graph; refuse such a model."""
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        unknown = sorted(
            {n.op_type for n in proto.graph.node if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)}
        )
        raise ModelError(
            f"the ONNX conversion left ops ONNX does not define: {unknown or '(see the message)'} ({e})"
        ) from None
    if not any(i.name == IMAGES_INPUT for i in proto.graph.input):
        raise ModelError(f"the converted ONNX graph has no {IMAGES_INPUT!r} input")


def _onnx_type(value_info, onnx):
    tensor = value_info.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    shape = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return dtype, shape


def _onnx_spec(value_info, onnx):
    return tensor_spec(*_onnx_type(value_info, onnx))
