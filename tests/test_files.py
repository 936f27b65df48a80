"""ptx_keras.files: atomic JSON writes, JSON reads that name the file, file hashes (hand-made expectations)."""

import hashlib
import json
import os

import pytest

from ptx_keras.errors import PtxError
from ptx_keras.files import file_sha256, read_json, write_json


def test_write_json_replaces_atomically_and_reads_back(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"x": 1})
    write_json(path, {"x": [1, 2]})
    assert read_json(path, "test file") == {"x": [1, 2]}
    assert path.read_text(encoding="utf-8") == json.dumps({"x": [1, 2]}, indent=2) + "\n"
    assert os.listdir(tmp_path) == ["a.json"]  # no temporary file left behind


def test_read_json_names_the_file_and_what_it_is(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(PtxError, match=r"bad\.json: unreadable run metadata \(JSONDecodeError"):
        read_json(bad, "run metadata")
    with pytest.raises(PtxError, match="missing.json: unreadable thresholds file"):
        read_json(tmp_path / "missing.json", "thresholds file")


def test_file_sha256_is_the_bytes_hash(tmp_path):
    path = tmp_path / "blob"
    data = os.urandom(3 << 20)  # more than one 1 MiB read chunk
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
