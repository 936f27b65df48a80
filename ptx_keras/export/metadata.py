"""The export metadata every format carries (`export.json`): the model, its input contract, its diagnosis rule,
the versions that made it and the data it was trained on."""

import dataclasses
import datetime
import os

from ptx_keras import constants as C
from ptx_keras.artifacts import EXPORT_METADATA_FILENAME, PORTABLE_SIGNATURE, RUNTIMES
from ptx_keras.diagnosis import Thresholds
from ptx_keras.files import write_json
from ptx_keras.serving import DTYPE_VALUE_MAX, RAW_OUTPUTS, RAW_SIGNATURES, RESIZE_METHOD

__all__ = [
    "ExportResult",
    "describe_outputs",
    "export_metadata",
    "portable_metadata",
    "portable_result",
    "tensor_spec",
    "training_data",
]


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What an export wrote.

    Attributes:
        path: The SavedModel version directory (`<base_dir>/<version>`), or the ONNX / LiteRT file.
        base_dir: The model base directory TF Serving watches, or the directory holding the file.
        version: The SavedModel version number (None for the other formats).
        metadata: The `export.json` path.
        signatures: The signature names (the portable formats: their one entry point).
        thresholds: The `Thresholds` in the graph.
        image_size: The model's input size S.
        channels: The model's input channels C.
        format: `"savedmodel"`, `"onnx"` or `"litert"` (`ptx_keras.artifacts.FORMATS`).
    """

    path: str
    base_dir: str
    version: object
    metadata: str
    signatures: tuple
    thresholds: Thresholds
    image_size: int
    channels: int
    format: str = C.SAVEDMODEL_FORMAT


def export_metadata(deployed, fmt, run=None, **fields):
    """The fields common to every format's `export.json`; `fields` adds the format's own (inputs, signatures).

    Args:
        deployed: The exported `ptx_keras.serving.DeployedModel`.
        fmt: One of `constants.EXPORT_FORMATS` (`"savedmodel"`, `"onnx"` or `"litert"`).
        run: The source `RunDir`, or None for a model object.
        **fields: More entries, placed after the common ones.

    Returns:
        A JSON-ready dict.
    """
    import keras
    import tensorflow as tf

    from ptx_keras import __version__

    size, bit_depth, th = deployed.image_size, deployed.bit_depth, deployed.thresholds
    meta = {
        "format": fmt,
        "model_name": deployed.model_name,
        "input_size": size,
        "channels": deployed.channels,
        "num_classes": C.NUM_CLASSES,
        "ptx_class": C.PTX_CLASS,
        "thresholds": th.to_dict(),
        "thresholds_source": deployed.thresholds_source,
        "tta": deployed.tta,
        "aux_head": deployed.has_aux,
        "min_area_pixels_at_model_size": th.min_pixels(size),
        "bit_depth": bit_depth,
        "preprocessing": {
            "value_max": {name: DTYPE_VALUE_MAX[dtype] for name, dtype in RAW_SIGNATURES},
            "intensity": f"x / value_max, rounded to {2**bit_depth - 1} levels, clipped to [0, 1]",
            "resize": f"{RESIZE_METHOD}, antialiased, to {size}x{size}",
            "channels": f"grayscale replicated to {deployed.channels}",
        },
        "outputs": dict(RAW_OUTPUTS),
        "package": "ptx_keras",
        "package_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "source_run": deployed.run_dir,
        "training_data": training_data(run),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update(fields)
    return meta


def portable_metadata(deployed, run, fmt, path, inputs, outputs, **fields):
    """The `export.json` of an ONNX or LiteRT export: the common fields and its one entry point.

    Args:
        deployed, run: As `export_metadata`.
        fmt: `"onnx"` or `"litert"`.
        path: The model file.
        inputs: `{name: tensor_spec}` of the entry point.
        outputs: `describe_outputs` of the entry point.
        **fields: The format's own entries (converter, opset, ...).
    """
    return export_metadata(
        deployed,
        fmt,
        run,
        file=os.path.basename(path),
        entry_point=PORTABLE_SIGNATURE,
        inputs=inputs,
        signatures={PORTABLE_SIGNATURE: {"inputs": inputs, "outputs": outputs}},
        runtime=RUNTIMES[fmt],
        **fields,
    )


def portable_result(deployed, path, metadata):
    """Writes `export.json` beside an ONNX or LiteRT file and returns the `ExportResult`."""
    base = os.path.dirname(path)
    meta_path = os.path.join(base, EXPORT_METADATA_FILENAME)
    write_json(meta_path, metadata)
    return ExportResult(
        path,
        base,
        None,
        meta_path,
        (PORTABLE_SIGNATURE,),
        deployed.thresholds,
        deployed.image_size,
        deployed.channels,
        metadata["format"],
    )


def training_data(run):
    """What the run trained on, from its `run.json` and the prepared data's `dataset.json` (None for a model).

    Returns:
        dict with `kind`, `source`, `prepared_dir` (run.json) and, when the prepared data is still there, its
        `fingerprint`, `source` description (path, format, records), `image_size`, `bit_depth` and `counts` per
        split and label; `note` says what was missing.
    """
    if run is None:
        return None
    from ptx_keras.data.prepared import load_prepared_info
    from ptx_keras.errors import PtxError

    try:
        meta = run.read_metadata()
    except PtxError as e:
        return {"note": str(e)}
    out = {"kind": meta.get("data_kind"), "source": meta.get("data_source"), "prepared_dir": run.prepared_dir()}
    if not out["prepared_dir"]:
        out["note"] = "the run does not record its prepared data"
        return out
    try:
        info = load_prepared_info(out["prepared_dir"])
    except (PtxError, OSError) as e:
        out["note"] = f"prepared data description unavailable: {e}"
        return out
    out.update(
        fingerprint=info.get("fingerprint"),
        prepared_source=info.get("source"),
        image_size=info.get("image_size"),
        bit_depth=info.get("bit_depth"),
        counts=info.get("counts"),
    )
    return out


def describe_outputs(outputs):
    """`{name: (dtype, shape)}` -> `{name: {"dtype", "shape"[, "meaning"]}}` in the order of `RAW_OUTPUTS`."""
    names = list(RAW_OUTPUTS)

    def order(item):
        return (names.index(item[0]) if item[0] in names else len(names), item[0])

    out = {}
    for k, (dtype, shape) in sorted(outputs.items(), key=order):
        out[k] = tensor_spec(dtype, shape)
        if k in RAW_OUTPUTS:
            out[k]["meaning"] = RAW_OUTPUTS[k]
    return out


def tensor_spec(dtype, shape):
    """`{"dtype": name, "shape": list with None for unknown sizes, or None for an unknown rank}`."""
    if shape is not None and hasattr(shape, "rank"):  # a tf.TensorShape
        shape = None if shape.rank is None else shape.as_list()
    return {"dtype": str(dtype), "shape": None if shape is None else [None if d is None else int(d) for d in shape]}
