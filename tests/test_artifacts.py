"""`ptx_keras.artifacts`: finding an exported model in a path and reading its export metadata back, on hand-made
folders (empty model files and hand-written export.json). Running real ONNX / LiteRT exports through
`ArtifactSession` is tests/test_export_formats.py's."""

import json
import os

import pytest

from ptx_keras.artifacts import (
    EXPORT_METADATA_FILENAME,
    find_artifact,
    find_saved_model_version,
    parse_export_metadata,
    read_artifact_metadata,
    read_export_metadata,
)
from ptx_keras.diagnosis import Thresholds
from ptx_keras.errors import ModelError

THRESHOLDS = {"min_area": 20.0, "mask_threshold": 0.6, "reference_size": 256}


def _meta(fmt, **extra):
    return {"format": fmt, "input_size": 64, "channels": 3, "thresholds": dict(THRESHOLDS), **extra}


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()
    return path


def _write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f)
    return path


def test_find_saved_model_version_takes_the_highest_numbered_version(tmp_path):
    base = str(tmp_path / "saved_model")
    assert find_saved_model_version(base) is None  # missing
    for version in ("1", "10", "9"):
        _touch(os.path.join(base, version, "saved_model.pb"))
    os.makedirs(os.path.join(base, "11"))  # a version folder without a graph does not count
    _touch(os.path.join(base, "latest", "saved_model.pb"))  # nor does a name that is not a number
    assert find_saved_model_version(base) == os.path.join(base, "10")  # 10 > 9 as numbers
    assert find_saved_model_version(os.path.join(base, "9")) == os.path.join(base, "9")  # a version itself


def test_find_artifact_by_file_folder_or_saved_model(tmp_path):
    onnx = _touch(str(tmp_path / "o" / "model.onnx"))
    tflite = _touch(str(tmp_path / "l" / "copy.TFLITE"))
    version = os.path.dirname(_touch(str(tmp_path / "s" / "3" / "saved_model.pb")))
    assert find_artifact(onnx) == ("onnx", onnx)
    assert find_artifact(tflite) == ("litert", tflite)  # by extension, any case
    assert find_artifact(str(tmp_path / "o")) == ("onnx", onnx)
    assert find_artifact(str(tmp_path / "s")) == ("savedmodel", version)
    assert find_artifact(_touch(str(tmp_path / "notes.txt"))) is None
    assert find_artifact(str(tmp_path / "l")) is None  # a folder needs the standard file name
    _touch(str(tmp_path / "s" / "model.tflite"))
    with pytest.raises(ModelError, match="holds several exported models"):
        find_artifact(str(tmp_path / "s"))


def test_read_artifact_metadata_beside_the_file(tmp_path):
    model = _touch(str(tmp_path / "model.tflite"))
    _write_json(str(tmp_path / EXPORT_METADATA_FILENAME), _meta("litert"))
    meta = read_artifact_metadata("litert", model)
    assert meta["input_size"] == 64 and meta["thresholds"] == Thresholds(0.6, 20, 256)
    with pytest.raises(ModelError, match="no onnx export metadata"):  # the export.json describes another format
        read_artifact_metadata("onnx", _touch(str(tmp_path / "model.onnx")))
    with pytest.raises(ModelError, match="format must be one of"):
        read_artifact_metadata("tflite", model)


def test_read_export_metadata_prefers_the_versions_own_copy(tmp_path):
    version = str(tmp_path / "saved_model" / "2")
    _write_json(str(tmp_path / "saved_model" / EXPORT_METADATA_FILENAME), _meta("savedmodel", input_size=32))
    assert read_export_metadata(version)["input_size"] == 32  # beside the versions
    _write_json(os.path.join(version, "assets.extra", EXPORT_METADATA_FILENAME), _meta("savedmodel"))
    assert read_export_metadata(version)["input_size"] == 64  # the version's own
    assert read_artifact_metadata("savedmodel", version)["input_size"] == 64
    with pytest.raises(ModelError, match="no export.json found"):
        read_export_metadata(str(tmp_path / "elsewhere" / "1"))


def test_unreadable_export_metadata_names_the_file(tmp_path):
    path = tmp_path / "saved_model" / EXPORT_METADATA_FILENAME
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(ModelError, match="export.json: unreadable export metadata"):
        read_export_metadata(str(tmp_path / "saved_model" / "1"))


@pytest.mark.parametrize(
    "meta, match",
    [
        ([1, 2], "must be a JSON object. Received: list"),
        ({"input_size": 64, "thresholds": THRESHOLDS}, r"lacks \['channels'\]"),
        ({"input_size": 64, "channels": 1, "thresholds": {**THRESHOLDS, "mask_threshold": 2.0}}, "mask_threshold"),
    ],
)
def test_parse_export_metadata_refuses_bad_metadata(meta, match):
    with pytest.raises(ModelError, match=match):
        parse_export_metadata(meta, "x/export.json")


def test_parse_export_metadata_reads_the_thresholds():
    meta = parse_export_metadata(_meta("onnx", extra_key="kept"), "x/export.json")
    assert meta["thresholds"] == Thresholds(0.6, 20, 256) and meta["extra_key"] == "kept"
