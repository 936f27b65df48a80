"""What an ONNX or LiteRT export may replace: only its own earlier artifacts, recognised by their metadata.

`ptx-export --format onnx|litert --output DIR` writes `DIR/model.onnx` (or `model.tflite`) and `DIR/export.json`.
A file of that name that ptx_keras did not write (another project's model, a hand-tuned conversion) is never
replaced: `check_replaceable` refuses it before any conversion work. One that ptx_keras wrote is replaced, and
the replacement is logged, naming the earlier export.

Recognition: an ONNX file carries its export metadata inside (`metadata_props`), so an `.onnx` is ours when that
entry is there. A `.tflite` carries none; it is ours when the `export.json` beside it describes a LiteRT export
and records the file's SHA-256 (`sha256`, written by `export_litert`; an `export.json` from before that field
counts by its format alone).
"""

import logging
import os

from ptx_keras.artifacts import FILENAMES
from ptx_keras.errors import ModelError, OutputError
from ptx_keras.files import file_sha256
from ptx_keras.serving import EXPORT_METADATA_FILENAME

__all__ = [
    "check_replaceable",
    "own_artifact",
]


logger = logging.getLogger(__name__)


def _beside_metadata(path):
    from ptx_keras.serving import read_export_metadata_file

    beside = os.path.join(os.path.dirname(path), EXPORT_METADATA_FILENAME)
    if not os.path.isfile(beside):
        return None
    try:
        return read_export_metadata_file(beside)
    except ModelError:
        return None


def own_artifact(fmt, path):
    """The export metadata of `path` if ptx_keras wrote it as a `fmt` export, else None."""
    if fmt == "onnx":
        from ptx_keras.artifacts import _onnx_embedded_metadata

        try:
            return _onnx_embedded_metadata(path)
        except ModelError:  # not a readable ONNX model
            return None
    meta = _beside_metadata(path)
    if meta is None or meta.get("format") != fmt:
        return None
    recorded = meta.get("sha256")
    if recorded is not None and recorded != file_sha256(path):
        return None  # the export.json is ours, but the file beside it was replaced since
    return meta


def check_replaceable(fmt, output_dir):
    """Refuses to replace a model file (or an `export.json`) in `output_dir` that ptx_keras did not write.

    Args:
        fmt: `"onnx"` or `"litert"`.
        output_dir: The export's directory.

    Returns:
        The path of the earlier ptx_keras export it will replace (logged as a warning), or None.

    Raises:
        OutputError: naming the file, if the model file or `export.json` there is not a ptx_keras `fmt` export.
    """
    path = os.path.join(os.path.abspath(os.fspath(output_dir)), FILENAMES[fmt])
    meta_path = os.path.join(os.path.dirname(path), EXPORT_METADATA_FILENAME)
    if os.path.lexists(path):
        if not os.path.isfile(path) or own_artifact(fmt, path) is None:
            raise OutputError(
                f"{path} exists and is not a ptx_keras {fmt} export (no ptx_keras export metadata recognised); "
                "refusing to replace it: move it away or pass another --output"
            )
        logger.warning("Replacing the earlier ptx_keras %s export %s", fmt, path)
        return path
    if os.path.lexists(meta_path) and _beside_metadata(path) is None:
        raise OutputError(
            f"{meta_path} exists and is not ptx_keras export metadata; refusing to replace it: move it away or pass "
            "another --output"
        )
    return None
