"""Deployment artifacts of a trained model, all built from one graph (`ptx_keras.export.graph.ServingGraph`).

| format | function | writes (default for a run) | runs with |
| --- | --- | --- | --- |
| `savedmodel` | `export_saved_model` | `RUN_DIR/saved_model/<version>/` + `export.json` | TensorFlow, TF Serving |
| `onnx` | `export_onnx` | `RUN_DIR/onnx/model.onnx` + `export.json` | ONNX Runtime |
| `litert` | `export_litert` | `RUN_DIR/litert/model.tflite` + `export.json` | LiteRT |

`export_model(run, format=...)` dispatches; `ptx-export RUN_DIR --format ...` is its command line
(docs/deployment.md). The preprocessing, the network call (test-time augmentation, image-level head) and the
diagnosis rule are `ptx_keras.serving`'s functions in every format.
"""

from ptx_keras import constants as C
from ptx_keras.artifacts import FORMATS
from ptx_keras.errors import ModelError
from ptx_keras.export.litert import export_litert
from ptx_keras.export.metadata import ExportResult
from ptx_keras.export.onnx import export_onnx
from ptx_keras.export.savedmodel import export_saved_model

__all__ = ["FORMATS", "ExportResult", "export_litert", "export_model", "export_onnx", "export_saved_model"]


def export_model(run_dir_or_model, format=C.SAVEDMODEL_FORMAT, output=None, *, version=None, thresholds=None, tta=None):
    """Exports a run (or a model) in one of `FORMATS`.

    Args:
        run_dir_or_model: A run directory or a `keras.Model`.
        format: `"savedmodel"` (default), `"onnx"` or `"litert"`.
        output: Where to write (see each format's function); default: the run's directory for the format.
        version: The SavedModel version (default 1); only for `"savedmodel"`.
        thresholds: A `Thresholds` overriding the run's.
        tta: `"none"` or `"hflip"` overriding the run's `evaluation.tta`.

    Returns:
        `ExportResult`.

    Raises:
        ModelError: for an unknown format, a version with a format that has none, or what the format's
            function raises.
    """
    if format not in FORMATS:
        raise ModelError(f"Unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if format == C.SAVEDMODEL_FORMAT:
        return export_saved_model(
            run_dir_or_model, output, version=1 if version is None else version, thresholds=thresholds, tta=tta
        )
    if version is not None:
        raise ModelError(
            f"version applies to the SavedModel only; the {format} export has none. Received: version={version!r}"
        )
    exporter = export_onnx if format == "onnx" else export_litert
    return exporter(run_dir_or_model, output, thresholds=thresholds, tta=tta)
