"""Small file helpers every layer may use: atomic JSON writes, JSON reads that name the file, file hashes."""

import hashlib
import json
import os

from ptx_keras.errors import PtxError

__all__ = [
    "file_sha256",
    "read_json",
    "write_json",
]


def file_sha256(path):
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path, obj):
    """Writes JSON atomically (a temporary file renamed into place): a reader never sees half a file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path, what):
    """Reads a JSON file.

    Args:
        path: The file.
        what: What it is (e.g. `"run metadata"`), named in the error.

    Raises:
        PtxError: `<path>: unreadable <what> (<reason>)`.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise PtxError(f"{path}: unreadable {what} ({type(e).__name__}: {e})") from None
