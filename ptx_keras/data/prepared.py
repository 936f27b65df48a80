"""The prepared-data format: what `prepare_dataset` writes and the pipeline reads.

A prepared directory holds

* `<split>-<index:05d>-of-<count:05d>.tfrecord` shards, one example per sample (`ptx_keras.data.codec`):
  `image` (PNG, 8 or 16 bit grayscale), `mask` (PNG, uint8 0/1), `weight` (zlib-compressed little-endian
  float32, or float16 as an opt-in, row-major `(height, width)`), `sample_id`, `label`, `height`, `width`;
* `manifest.csv`: one row per sample (`MANIFEST_COLUMNS`), in shard order;
* `dataset.json`: the settings, their fingerprint, the counts per split and label, the shard names, the
  bad samples and where the data came from. It is written last: its presence marks a complete data set.
"""

import csv
import json
import os
import re

from ptx_keras.errors import DataError

__all__ = [
    "DATASET_JSON",
    "FORMAT_VERSION",
    "MANIFEST_COLUMNS",
    "MANIFEST_CSV",
    "SHARD_RE",
    "OldFormatError",
    "is_prepared_dir",
    "load_prepared_info",
    "read_manifest",
    "shard_name",
]


# 2: weight maps zlib-compressed, float32 by default (1: raw bytes, float16 by default, clamped at 65,504).
FORMAT_VERSION = 2
DATASET_JSON = "dataset.json"
MANIFEST_CSV = "manifest.csv"
MANIFEST_COLUMNS = (
    "sample_id",
    "split",
    "label",
    "area_pixels",
    "source",
    "shard",
    "orig_height",
    "orig_width",
    "spacing_row_mm",
    "spacing_col_mm",
)
SHARD_RE = re.compile(r"^(train|val|test)-(\d{5})-of-(\d{5})\.tfrecord$")


def shard_name(split, index, count):
    """The file name of shard `index` (0-based) of `count` for `split`."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def is_prepared_dir(path):
    """True if `path` holds a complete prepared data set (a readable `dataset.json`).

    A data set of another format version counts: `load_prepared_info` then says to prepare it again, instead of
    the directory being taken for a raw source.
    """
    try:
        load_prepared_info(path)
    except OldFormatError:
        return True
    except (DataError, OSError):
        return False
    return True


class OldFormatError(DataError):
    """A `dataset.json` of another format version (see `FORMAT_VERSION`)."""


def load_prepared_info(prepared_dir):
    """Reads the `dataset.json` of a prepared data set.

    Args:
        prepared_dir: Output directory of `prepare_dataset`.

    Returns:
        dict, the description written by `prepare_dataset` (see the module docstring).

    Raises:
        DataError: if the directory has no (valid) `dataset.json`.
    """
    path = os.path.join(os.fspath(prepared_dir), DATASET_JSON)
    if not os.path.isfile(path):
        raise DataError(
            f"{prepared_dir} is not a prepared data set (no {DATASET_JSON}); "
            f"run `ptx-prepare SOURCE {prepared_dir}` first"
        )
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not a valid prepared data set description: {e}") from None
    if not isinstance(info, dict) or "format_version" not in info:
        raise DataError(f"{path} is not a valid prepared data set description (no format_version)")
    if info["format_version"] != FORMAT_VERSION:
        old = info["format_version"] == 1
        raise OldFormatError(
            f"{prepared_dir} was prepared in format version {info['format_version']!r}"
            f"{' (weight maps stored as float16 by default, clamped at 65,504)' if old else ''}; this version of "
            f"ptx_keras reads format version {FORMAT_VERSION}. Prepare the data again from its source: "
            f"`ptx-prepare SOURCE {prepared_dir} --overwrite` (or into a new directory)"
        )
    return info


def read_manifest(prepared_dir):
    """The rows of `manifest.csv` as dicts of strings."""
    with open(os.path.join(prepared_dir, MANIFEST_CSV), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
