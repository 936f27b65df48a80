"""From what a user names (nothing, a raw source, a prepared directory) to a prepared data set.

* no path: the built-in phantoms are written to `<cache>/<phantom set name>` and prepared;
* a prepared directory: used as it is, after checking its resolution;
* a raw source (folder, CSV, SIIM-ACR): prepared into `<cache>/<source name>-prepared-<size>px-<hash of the
  settings>` and reused by every later run with the same settings.

Training and evaluation on other data both come through `resolve_data`.
"""

import dataclasses
import hashlib
import json
import logging
import os

from ptx_keras.data.settings import PrepareSettings
from ptx_keras.errors import DataError

__all__ = ["KINDS", "ResolvedData", "check_prepared_size", "resolve_data", "settings_tag"]


logger = logging.getLogger(__name__)

KINDS = ("phantoms", "source", "prepared")


@dataclasses.dataclass(frozen=True)
class ResolvedData:
    """Where a run's data ended up.

    Attributes:
        prepared_dir: The prepared data set (absolute path).
        kind: `"phantoms"`, `"source"` (a raw source prepared into the cache) or `"prepared"` (given as such).
        source: The raw source or phantom folder that was prepared, or the prepared directory itself.
    """

    prepared_dir: str
    kind: str
    source: str


def settings_tag(settings):
    """`<size>px-<8 hex>`: the cache name's part that changes with any preparation setting and with the
    prepared-data format version (a cache written in an older format is never picked up again)."""
    from ptx_keras.data.prepared import FORMAT_VERSION

    payload = {"format_version": FORMAT_VERSION, **settings.to_dict()}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return f"{settings.image_size}px-{hashlib.sha1(blob).hexdigest()[:8]}"


def check_prepared_size(prepared_dir, image_size):
    """Raises DataError unless `prepared_dir` was prepared at `image_size`; returns its absolute path."""
    from ptx_keras.data.prepared import load_prepared_info

    info = load_prepared_info(prepared_dir)
    if int(info["image_size"]) != int(image_size):
        raise DataError(
            f"{prepared_dir} was prepared at {info['image_size']}x{info['image_size']} but the configuration asks for "
            f"data.image_size={image_size}; prepare it again at that size or set data.image_size={info['image_size']}"
        )
    return os.path.abspath(prepared_dir)


def resolve_data(path, settings, *, cache_dir, phantoms=None, skip_bad=False, workers=None, progress=True):
    """Returns the prepared data set for `path`, generating and preparing data when needed.

    Args:
        path: A raw source, a prepared directory, or None/"" for the built-in phantoms.
        settings: The `PrepareSettings` (a run's `DataConfig` is one).
        cache_dir: Where phantoms and prepared sources are written.
        phantoms: With no path: the phantom set's settings (`n`, `size`, `seed`, `conspicuity`, `style`; a
            run's `data.phantoms`).
        skip_bad: As in `prepare_dataset`.
        workers: As in `prepare_dataset`.
        progress: As in `prepare_dataset`.

    Returns:
        `ResolvedData`.

    Raises:
        DataError: if the path does not exist, prepared data has another resolution than `settings`, a sample
            is bad (without `skip_bad`), or phantoms are needed but not described.
    """
    from ptx_keras.data.prepare import prepare_dataset
    from ptx_keras.data.prepared import is_prepared_dir

    settings = PrepareSettings.of(settings)
    if not path:
        if phantoms is None:
            raise DataError("No data path and no phantom settings: pass a data path (--data)")
        from ptx_keras.data.phantoms import phantom_dataset_name, write_phantom_dataset

        style = getattr(phantoms, "style", "classic")
        name = phantom_dataset_name(
            phantoms.n,
            phantoms.size,
            phantoms.seed,
            style=style,
            conspicuity=phantoms.conspicuity,
            format="png",
            bit_depth=8,
        )
        source = os.path.join(cache_dir, name)
        logger.info(
            "Data: synthetic phantoms (%d images, %dx%d, style %s, conspicuity %g) in %s",
            phantoms.n,
            phantoms.size,
            phantoms.size,
            style,
            phantoms.conspicuity,
            source,
        )
        write_phantom_dataset(
            source,
            phantoms.n,
            size=phantoms.size,
            format="png",
            seed=phantoms.seed,
            conspicuity=phantoms.conspicuity,
            style=style,
            progress=progress,
            workers=workers,
        )
        kind = "phantoms"
    else:
        source = os.fspath(path)
        if not os.path.exists(source):
            raise DataError(f"Data path does not exist: {source}")
        if is_prepared_dir(source):
            return ResolvedData(check_prepared_size(source, settings.image_size), "prepared", os.path.abspath(source))
        kind = "source"
    name = os.path.basename(os.path.normpath(source)) or "data"
    prepared = os.path.join(cache_dir, f"{name}-prepared-{settings_tag(settings)}")
    prepare_dataset(
        source,
        prepared,
        settings,
        skip_bad=skip_bad,
        workers=workers,
        progress=progress,
        max_image_pixels=getattr(settings, "max_image_pixels", None),
    )
    return ResolvedData(os.path.abspath(prepared), kind, os.path.abspath(source))
