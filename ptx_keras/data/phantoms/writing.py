"""Writing phantom data sets (PNG folder, CSV manifest, SIIM-ACR) and naming them."""

import json
import logging
import os

import numpy as np

from ptx_keras.constants import (
    IMAGE_SIZE,
    PHANTOM_FORMATS,
    PHANTOM_STYLE_VERSIONS,
    SIIM_SIZE,
)
from ptx_keras.data.phantoms import generate, siim, styles
from ptx_keras.data.phantoms._common import as_hw, check_bit_depth, check_conspicuity, check_n, check_seed
from ptx_keras.data.pool import run_tasks
from ptx_keras.errors import DataError

__all__ = ["GENERATOR", "default_size", "phantom_dataset_name", "write_phantom_dataset"]


logger = logging.getLogger(__name__)

GENERATOR = "ptx_keras.data.phantoms"
# What a phantoms.json written before a setting existed meant by its absence.
_LEGACY = {"style": "classic", "conspicuity": 1.0, "spec": None}
# Sets smaller than this many pixels in all are generated in this process: a spawn pool costs ~1-2 s.
_POOL_MIN_PIXELS = 1 << 24


def default_size(format):
    """The image side a set gets when none is asked: SIIM-ACR's 1024 for `"siim"`, else `IMAGE_SIZE`."""
    return SIIM_SIZE if format == "siim" else IMAGE_SIZE


def _size_tag(hw):
    return f"{hw[0]}px" if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}px"


def phantom_dataset_name(n, size=None, seed=0, *, style="classic", conspicuity=1.0, format="png", bit_depth=None):
    """The folder name of a phantom set: different settings never share a name (or a cache).

    `phantoms-n400-256px-seed0` is the classic PNG set (the name cached sets always had), with `-c2` for
    conspicuity 2, `-<format>` for CSV/SIIM layouts and `-16bit` / `-mixedbits`; a randomised style puts
    its name, version and the fingerprint of its factor table first: `phantoms-varied-v1-1a2b3c4d5e-n400-...`.

    Args:
        n: As in `write_phantom_dataset`.
        size: As in `write_phantom_dataset`.
        seed: As in `write_phantom_dataset`.
        style: As in `write_phantom_dataset`.
        conspicuity: As in `write_phantom_dataset`.
        format: As in `write_phantom_dataset`.
        bit_depth: As in `write_phantom_dataset`.

    Returns:
        The name (no path).

    Raises:
        ValueError: If an argument is invalid.
    """
    n, hw, seed, style, conspicuity, format, bit_depth = _check(n, size, seed, style, conspicuity, format, bit_depth)
    head = "phantoms"
    if style != "classic":
        head += f"-{style}-v{PHANTOM_STYLE_VERSIONS[style]}-{styles.spec_fingerprint(style)}"
    name = f"{head}-n{n}-{_size_tag(hw)}-seed{seed}"
    name += "" if conspicuity == 1.0 else f"-c{conspicuity:g}"
    name += "" if format == "png" else f"-{format}"
    if bit_depth is None:
        name += "-mixedbits"
    elif bit_depth != 8:
        name += f"-{bit_depth}bit"
    return name


def _check(n, size, seed, style, conspicuity, format, bit_depth):
    n = check_n(n)
    if format not in PHANTOM_FORMATS:
        raise ValueError(f"format must be one of {PHANTOM_FORMATS}. Received: format={format!r}")
    hw = as_hw(default_size(format) if size is None else size)
    seed = check_seed(seed)
    style = generate.check_style(style)
    conspicuity = check_conspicuity(conspicuity)
    if bit_depth is None:
        # Randomised SIIM exports mix 8/12/16 stored bits; everything else is 8-bit unless asked.
        bit_depth = None if (format == "siim" and style != "classic") else 8
    else:
        bit_depth = check_bit_depth(bit_depth)
    return n, hw, seed, style, conspicuity, format, bit_depth


def _settings(n, hw, seed, style, conspicuity, format, bit_depth):
    return {
        "generator": GENERATOR,
        "style": style,
        "version": PHANTOM_STYLE_VERSIONS[style],
        "spec": styles.spec_fingerprint(style),
        "n": n,
        "size": list(hw),
        "seed": seed,
        "format": format,
        "bit_depth": bit_depth,
        "conspicuity": conspicuity,
    }


def _save_png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path, optimize=False, compress_level=1)


def _export(style, seed, index, bit_depth):
    """The DICOM export of sample `index`: fixed for classic, drawn from a stream of its own otherwise."""
    if style == "classic":
        return siim.classic_export(bit_depth)
    rng = np.random.default_rng([seed, index, 0x51, generate.STYLE_STREAMS[style]])
    photometric, bits, transfer = styles.draw_export(style, rng)
    if bit_depth is not None:  # the caller fixed the depth: only the photometric and transfer vary
        bits = bit_depth
        transfer = "explicit" if transfer == "jpeg" and bits != 8 else transfer
    return photometric, bits, transfer


def _write_one(task):
    """Renders and writes sample `index` (runs in a worker); returns `(index, info, rows)`."""
    path, index, positive, hw, seed, style, conspicuity, format, bit_depth = task
    sid = generate.sample_id(index)
    rng = generate.sample_stream(seed, index, style)
    if format == "siim":
        export = _export(style, seed, index, bit_depth)
        image, mask, info, _ = generate.render_phantom(
            hw, rng, positive=positive, seed=None, bits=export[1], conspicuity=conspicuity, style=style
        )
        rows = siim.write_siim_sample(path, sid, image, mask, seed, export, style)
        info = dict(info, export=list(export))
    else:
        image, mask, info = generate.make_phantom(
            hw, rng, positive=positive, bit_depth=bit_depth, conspicuity=conspicuity, style=style
        )
        image_rel = f"images/{sid}.png"
        _save_png(os.path.join(path, image_rel), image)
        mask_rel = f"masks/{sid}.png" if (format == "png" or info["positive"]) else ""
        if mask_rel:
            _save_png(os.path.join(path, mask_rel), mask.astype(np.uint8) * 255)
        rows = [(image_rel, mask_rel, int(info["positive"]))]
    keep = ("positive", "kind", "size_class", "mimics", "devices", "export")
    return index, {k: info[k] for k in keep if k in info}, rows


def _check_workers(workers, n, hw):
    if workers is None:
        return (os.cpu_count() or 1) if n * hw[0] * hw[1] >= _POOL_MIN_PIXELS else 1
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer or None. Received: workers={workers!r}")
    return int(workers)


def _run(tasks, workers, progress, desc):
    """Yields `_write_one` results in sample order, from a spawn pool when `workers > 1` (`run_tasks`); the
    workers import NumPy/SciPy/Pillow only."""
    return run_tasks(_write_one, tasks, workers, progress=progress, desc=desc)


def _tally(results):
    """`(positives, counts, manifest rows)` over `_write_one` results: counts per kind, size class, mimic,
    device and DICOM export."""
    counts = {"kinds": {}, "size_classes": {}, "mimics": {}, "devices": {}, "exports": {}}
    positives, rows = 0, []
    for _, info, sample_rows in results:
        positives += info["positive"]
        for key, values in (
            ("kinds", [info["kind"]]),
            ("size_classes", [info["size_class"]]),
            ("mimics", info.get("mimics", [])),
            ("devices", info.get("devices", [])),
            ("exports", ["/".join(map(str, info["export"]))] if "export" in info else []),
        ):
            for value in values:
                counts[key][value] = counts[key].get(value, 0) + 1
        rows.extend(sample_rows)
    return positives, counts, rows


def _write_manifest(path, format, rows):
    """Writes the CSV the readers take (`manifest.csv` or SIIM-ACR's `train-rle.csv`); None for `"png"`."""
    if format == "csv":
        manifest = os.path.join(path, "manifest.csv")
        with open(manifest, "w", newline="") as f:
            f.write("image,mask,label\n")
            f.writelines(f"{image},{mask},{label}\n" for image, mask, label in rows)
        return manifest
    if format == "siim":
        manifest = os.path.join(path, "train-rle.csv")
        with open(manifest, "w", newline="") as f:
            # SIIM-ACR's exact header and row style: a space after each comma.
            f.write("ImageId, EncodedPixels\n")
            f.writelines(f"{image_id}, {rle}\n" for image_id, rle in rows)
        return manifest
    return None


def _existing(info_path, path, settings):
    """The summary of a complete set with the same settings at `path`, or None if there is none."""
    if not os.path.isfile(info_path):
        return None
    try:
        with open(info_path) as f:
            existing = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"{info_path}: unreadable phantom description ({exc}); remove the folder") from None
    keys = (set(settings) | set(existing)) - {"summary", "factors"}
    differing = {
        k: existing.get(k, _LEGACY.get(k))
        for k in sorted(keys)
        if existing.get(k, _LEGACY.get(k)) != settings.get(k, _LEGACY.get(k))
    }
    if not differing:
        return dict(existing["summary"], written=False)
    raise DataError(
        f"{path} already holds a phantom data set with other settings "
        f"({', '.join(f'{k}={v!r} not {settings.get(k)!r}' for k, v in differing.items())}); "
        "remove it or choose another folder"
    )


def write_phantom_dataset(
    path,
    n,
    size=None,
    format="png",
    seed=0,
    bit_depth=None,
    progress=True,
    conspicuity=1.0,
    style="classic",
    workers=None,
):
    """Writes a phantom data set in one of the layouts the readers accept.

    Layouts (`path` is created):

    - `"png"`: `images/<id>.png` (8- or 16-bit grayscale) and `masks/<id>.png` (uint8, 0/255; an empty
      mask for each negative).
    - `"csv"`: the same images, masks for the positives only, and `manifest.csv` with columns `image`,
      `mask` (empty for negatives), `label`; paths relative to `path`.
    - `"siim"`: SIIM-ACR: `dicom-images-train/<study-uid>/<series-uid>/<ImageId>.dcm` (Secondary Capture,
      `PixelSpacing` 0.14 mm x 1024 / size, `PatientID` = the phantom id) and `train-rle.csv` with header
      `ImageId, EncodedPixels` (note the space), `-1` for negatives, and one row per connected region for
      positives with several (bilateral) regions, to be unioned by the reader. Classic DICOMs are
      MONOCHROME2, 8-bit JPEG Baseline (or uncompressed 16-bit with `bit_depth=16`); the randomised styles
      draw each image's photometric interpretation, stored bits and transfer syntax (`siim.py`).

    Finally `phantoms.json` records every setting (style, its version and factor-table fingerprint, n,
    size, seed, format, bit depth, conspicuity) and a summary. Calling again with the same settings returns
    at once without rewriting anything (the set is deterministic, whatever `workers`).

    Args:
        path: Output folder.
        n: Number of images (balanced: `n // 2` positives when even).
        size: Image side or `(height, width)` (>= 32); default 1024 for `"siim"`, else 256.
        format: `"png"`, `"csv"` or `"siim"`.
        seed: Non-negative integer seed.
        bit_depth: 8 or 16; default 8, except a randomised `"siim"` set, which mixes 8, 12 and 16 stored bits.
        progress: Show a tqdm progress bar.
        conspicuity: As in `make_phantom` (1 = the calibrated hard setting).
        style: `"classic"`, `"varied"` or `"heldout"` (see `make_phantom`).
        workers: Processes rendering in parallel (spawned; they never import TensorFlow). Default: all
            cores for sets of at least 2**24 pixels in all (e.g. 256 images of 256 x 256), else 1.

    Returns:
        A summary dict: `path`, the settings, `positives`, `negatives`, counts per `kinds` and
        `size_classes` (and, for randomised styles, per `mimics`, `devices` and DICOM `exports`), `written`
        (False when an existing complete set was kept), and `manifest` (the CSV the readers take:
        `manifest.csv`, `train-rle.csv`, or None for `"png"`).

    Raises:
        ValueError: If an argument is invalid (naming it).
        DataError: If `path` already holds a phantom set written with other settings.
    """
    n, hw, seed, style, conspicuity, format, bit_depth = _check(n, size, seed, style, conspicuity, format, bit_depth)
    workers = _check_workers(workers, n, hw)
    path = os.path.abspath(os.fspath(path))
    settings = _settings(n, hw, seed, style, conspicuity, format, bit_depth)
    info_path = os.path.join(path, "phantoms.json")
    kept = _existing(info_path, path, settings)
    if kept is not None:
        return kept

    os.makedirs(path, exist_ok=True)
    if format in ("png", "csv"):
        os.makedirs(os.path.join(path, "images"), exist_ok=True)
        os.makedirs(os.path.join(path, "masks"), exist_ok=True)
    labels = generate.balanced_labels(n, seed)
    tasks = [(path, i, bool(labels[i]), hw, seed, style, conspicuity, format, bit_depth) for i in range(n)]
    logger.info("Writing %d %s phantoms (%s, %s) to %s, %d worker(s)", n, style, _size_tag(hw), format, path, workers)
    positives, counts, rows = _tally(_run(tasks, workers, progress, f"phantoms ({style}, {format})"))
    manifest = _write_manifest(path, format, rows)
    summary = dict(
        settings,
        path=path,
        positives=positives,
        negatives=n - positives,
        **{k: dict(sorted(v.items())) for k, v in counts.items() if v or k in ("kinds", "size_classes")},
        manifest=manifest,
    )
    record = dict(settings, summary=summary)
    if style != "classic":
        record["factors"] = {name: list(dist) for name, (dist, _) in styles.SPECS[style].items()}
    # Written last: its presence marks a complete set.
    with open(info_path, "w") as f:
        json.dump(record, f, indent=2)
    return dict(summary, written=True)
