"""Source readers: a folder of images and masks, a CSV manifest, SIIM-ACR (DICOM + RLE), and sample loading.

A reader turns a source into `SampleRecord`s (`ptx_keras.data.records`) without reading pixels; preparation
workers then call `load_sample(record)`. Readers return a `SourceRecords` list, which also carries what
the source held but the records do not (files without labels, samples skipped with `skip_bad=True`), so
that preparation can report them instead of dropping them silently. A problem with one sample (a missing
file, a malformed manifest row) raises `BadSampleError` unless `skip_bad=True`; a problem with the source as
a whole (no such layout, a missing column) raises `DataError` either way.

Accepted layouts (`discover_source`):

* **folder**: `ROOT/images/<stem>.<ext>` and `ROOT/masks/<stem>.<ext>` (or `<stem>_mask.<ext>`), any
  image extension (PNG, JPEG, TIFF, BMP, DICOM) on either side. An image without a mask file is a
  **negative** (label 0, empty mask): datasets commonly store only the masks of positive images. A mask
  without an image is an error.
* **csv**: a CSV file with column `image` and optional `mask`, `label` (0/1), `split`
  (train/val/test; also validation/valid), `group` (or `patient_id`) and `id`. Paths are relative to the
  CSV. A row without mask is a negative unless its label says 1 (an error: a positive needs a mask).
* **siim**: a folder with DICOM files (`*.dcm`, searched recursively) and a run-length CSV (`*rle*.csv`,
  e.g. `train-rle.csv`, columns `ImageId` and `" EncodedPixels"`). DICOM files without a CSV row (e.g.
  the challenge's test images) are listed in `SourceRecords.unlabelled`, not returned as samples.
"""

import logging
import os
import typing
import warnings

import numpy as np

from ptx_keras.constants import SIIM_SIZE, SPLITS
from ptx_keras.data.dicom import DICOM_EXTENSIONS, is_dicom, read_dicom, read_dicom_header
from ptx_keras.data.limits import check_image_size
from ptx_keras.data.records import LoadedSample, SampleRecord
from ptx_keras.data.rle import rle_decode, rle_validate
from ptx_keras.errors import BadSampleError, DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "MASK_SUFFIX",
    "SPLIT_ALIASES",
    "SourceRecords",
    "check_pixels",
    "discover_source",
    "load_sample",
    "read_csv_manifest",
    "read_folder",
    "read_image",
    "read_mask",
    "read_siim",
]


logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp") + DICOM_EXTENSIONS
MASK_SUFFIX = "_mask"
SPLIT_ALIASES = {"validation": "val", "valid": "val"}
LAYOUTS = (
    "a CSV manifest file (column 'image', optional 'mask', 'label', 'split', 'group')",
    "a folder with 'images/' and 'masks/' subfolders",
    "a SIIM-ACR folder with *.dcm files and a '*rle*.csv' (ImageId, EncodedPixels)",
)


class SourceRecords(list):
    """A list of `SampleRecord`s with what the source held besides them.

    Attributes:
        format: `"folder"`, `"csv"` or `"siim"`.
        source: The path that was read.
        unlabelled: Paths of images the source has no labels for (not in the list).
        skipped: `(sample id or path, reason)` for samples dropped because `skip_bad=True`.
        notes: Human-readable remarks for the preparation report (e.g. how many negatives had no mask).
    """

    def __init__(self, records=(), *, format, source, unlabelled=(), skipped=(), notes=()):
        super().__init__(records)
        self.format = format
        self.source = os.fspath(source)
        self.unlabelled = list(unlabelled)
        self.skipped = list(skipped)
        self.notes = list(notes)


class _Skipper:
    """Raises `BadSampleError` for a bad sample, or with `skip_bad` records it (`(name, reason)`) and goes on."""

    def __init__(self, skip_bad):
        self.skip_bad, self.skipped = bool(skip_bad), []

    def __call__(self, name, problem):
        if not self.skip_bad:
            raise BadSampleError(problem)
        self.skipped.append((str(name), str(problem)))


# --- Pixels ---------------------------------------------------------------------------------------------


def _open_pillow(path, what, max_pixels=None):
    """Opens an image with Pillow, checks its size from the header (`check_image_size`), then decodes it."""
    from PIL import Image, UnidentifiedImageError

    try:
        # Pillow's own bomb check (a warning, then DecompressionBombError at twice its MAX_IMAGE_PIXELS) is
        # replaced by `check_image_size` with the configured limit, which is applied before decoding.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        frames = getattr(image, "n_frames", 1)
        width, height = image.size
        check_image_size(path, height, width, len(image.getbands()), frames, max_pixels)
        image.load()  # decode now, so that truncated files fail here
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable {what} (unknown or corrupt image format)") from None
    except Image.DecompressionBombError as exc:  # defensive: the limit is ours, but never let it escape
        raise DataError(f"{path}: {what} too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:  # truncated or corrupt data
        raise DataError(f"{path}: unreadable {what} ({type(exc).__name__}: {exc})") from None
    if frames > 1:
        raise DataError(f"{path}: {what} has {frames} frames; expected a single image")
    return image


def _pillow_array(image, path):
    """Returns the pixels of a Pillow image as a 2-D grayscale array (or 3-D for colour modes)."""
    mode = image.mode
    if mode == "1":
        return np.asarray(image, dtype=np.uint8) * np.uint8(255)
    if mode in ("L", "P"):
        return np.asarray(image)
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)
    if mode == "I":
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise DataError(
                f"{path}: 32-bit integer image with values {values.min()}..{values.max()}; expected 0..65535"
            )
        return values.astype(np.uint16)
    if mode == "F":
        return np.asarray(image, dtype=np.float32)
    if mode in ("LA", "La"):
        return np.asarray(image)[..., 0]
    if mode in ("RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"):
        return np.asarray(image.convert("RGB"))
    raise DataError(f"{path}: unsupported image mode {mode!r}")


def check_pixels(image, path):
    """The pixel checks every image read goes through (preparation and prediction alike).

    A NaN or infinite pixel has no intensity: scaling or resizing would silently turn it (or, for an
    infinity, the whole image) into zeros, so such an image is refused. A constant image (every pixel
    equal, e.g. a blank export) is legal but carries nothing to segment: it is logged as a warning.

    Args:
        image: The pixels as read, before any scaling.
        path: The file, named in the message.

    Raises:
        DataError: If any pixel is NaN or infinite (the counts are given).
    """
    image = np.asarray(image)
    if image.size and image.dtype.kind == "f":
        finite = np.isfinite(image)
        if not finite.all():
            nans = int(np.count_nonzero(np.isnan(image)))
            infs = image.size - int(np.count_nonzero(finite)) - nans
            raise DataError(
                f"{path}: {nans} NaN and {infs} infinite pixel(s) of {image.size}; image pixels must be finite"
            )
    if image.size and image.min() == image.max():
        logger.warning("%s: constant image (every pixel is %s); it holds nothing to segment", path, image.flat[0])


def read_image(path, *, dicom=None, max_pixels=None):
    """Reads a grayscale image from PNG/JPEG/TIFF/BMP (Pillow) or DICOM.

    DICOM is recognised by `ptx_keras.data.dicom.is_dicom` (extension `.dcm`/`.dicom` or the `DICM` magic) and
    read with `read_dicom`.
    Colour images become grayscale: exactly when all channels are equal, else with the ITU-R 601 luma
    (Pillow's `L` conversion); palette images are mapped through their palette. Every image passes
    `check_pixels` (non-finite pixels refused, constant images logged).

    Args:
        path: The image file.
        dicom: True to read the file as DICOM whatever its name; None to recognise DICOM as above.
        max_pixels: The size limit (`ptx_keras.data.limits.check_image_size`; None: `MAX_IMAGE_PIXELS`),
            checked from the header before any pixel is decoded.

    Returns:
        `(image, info)`: `image` is a 2-D array `(height, width)`, uint8, uint16 (16-bit PNG/TIFF, DICOM
        with more than 8 bits) or float32 (floating-point TIFF, scaled per image to [0, 1]). `info` holds
        `spacing` (`(row_mm, col_mm)` or None), `bits_stored`, `photometric` (DICOM only, else None),
        `rows`, `cols` and `value_range` (`(low, high)` the image type can take).

    Raises:
        DataError: If the file is missing, unreadable, truncated, multi-frame, larger than `max_pixels`, of an
            unsupported kind, or has NaN or infinite pixels.
    """
    path = os.fspath(path)
    if dicom or (dicom is None and is_dicom(path)):
        image, info = read_dicom(path, max_pixels=max_pixels)
        check_pixels(image, path)
        return image, info
    image = _open_pillow(path, "image", max_pixels)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    values = _pillow_array(image, path)
    if values.ndim == 3:
        rgb = values[..., :3]
        if (rgb == rgb[..., :1]).all():
            values = np.ascontiguousarray(rgb[..., 0])
        else:
            from PIL import Image

            values = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("L"))
    check_pixels(values, path)
    if values.dtype == np.uint8:
        bits, value_range = 8, (0.0, 255.0)
    elif values.dtype == np.uint16:
        bits, value_range = 16, (0.0, 65535.0)
    else:
        # Floating-point files have no natural range: scale each image to [0, 1].
        low, high = float(values.min()), float(values.max())
        values = ((values - low) / (high - low) if high > low else np.zeros_like(values)).astype(np.float32)
        bits, value_range = 32, (0.0, 1.0)
    info = {
        "spacing": None,
        "bits_stored": bits,
        "photometric": None,
        "rows": int(values.shape[0]),
        "cols": int(values.shape[1]),
        "value_range": value_range,
    }
    return values, info


def read_mask(path, expected_shape=None, max_pixels=None):
    """Reads a binary mask image.

    Accepted values: a subset of {0, 1}, {0, 255} or {0, 65535} (8- or 16-bit PNG/TIFF/BMP, or 1-bit).
    Palette images are read by palette index (their indices are the labels). Colour masks are accepted only
    when all colour channels are equal (alpha is ignored).

    Args:
        path: The mask file.
        expected_shape: Optional `(height, width)` the mask must have (its image's shape).
        max_pixels: The size limit, as for `read_image`.

    Returns:
        Bool array `(height, width)`.

    Raises:
        DataError: If the file is unreadable, has differing colour channels, holds other values (listed; a
            JPEG mask usually does, being lossy) or has a shape other than `expected_shape` (both named).
    """
    path = os.fspath(path)
    image = _open_pillow(path, "mask", max_pixels)
    values = _pillow_array(image, path)
    if values.ndim == 3:
        rgb = values[..., :3]
        if not (rgb == rgb[..., :1]).all():
            raise DataError(f"{path}: colour mask with differing channels; expected a grayscale 0/1 or 0/255 mask")
        values = rgb[..., 0]
    if expected_shape is not None and tuple(values.shape) != tuple(expected_shape):
        raise DataError(
            f"{path}: mask shape {tuple(values.shape)} differs from the image shape {tuple(expected_shape)}"
        )
    present = np.unique(values)
    for allowed in ((0, 1), (0, 255), (0, 65535)):
        if np.isin(present, allowed).all():
            return values != 0
    offending = [v.item() for v in present if v not in (0, 1, 255)][:10] or [v.item() for v in present]
    hint = " (JPEG is lossy: store masks as PNG)" if path.lower().endswith((".jpg", ".jpeg")) else ""
    raise DataError(
        f"{path}: mask is not binary: values {sorted(present.tolist())[:12]} found, offending {offending}; "
        f"expected 0/1 or 0/255{hint}"
    )


# --- Readers --------------------------------------------------------------------------------------------


def _kind(path):
    return "dicom" if is_dicom(path) else "image"


def _files_by_stem(folder, what, skip):
    """`{stem: path}` of the image files in `folder`; a stem two files share maps to None (reported to `skip`)."""
    stems, ignored = {}, []
    for name in sorted(os.listdir(folder)):
        full = os.path.join(folder, name)
        if name.startswith(".") or not os.path.isfile(full):
            continue
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTENSIONS:
            ignored.append(name)
            continue
        if stem in stems:
            if stems[stem] is not None:
                skip(
                    stem,
                    f"{folder}: two {what} files share the name {stem!r} ({os.path.basename(stems[stem])} and "
                    f"{name}); names must be unique without extension",
                )
            stems[stem] = None
            continue
        stems[stem] = os.path.abspath(full)
    return stems, ignored


def read_folder(path, *, skip_bad=False):
    """Reads a folder with `images/` and `masks/` subfolders (matched by file name without extension).

    A mask matches an image with the same stem or the stem plus `_mask`. Images without a mask file are
    negatives (label 0): their count is given in `notes`. Files with other extensions are ignored and
    counted in `notes`.

    Args:
        path: The folder.
        skip_bad: If True, images that share a stem, images with two matching masks (or a mask stem two
            files share) and masks without an image are left out and listed in `skipped`; if False they
            raise `BadSampleError`.

    Returns:
        `SourceRecords` (format `"folder"`), one record per image, sorted by name; `label` is None for
        images with a mask (read from the mask when loading), 0 for those without.

    Raises:
        DataError: If a subfolder is missing or there are no images; `BadSampleError` (without
            `skip_bad`) if two files share a stem, a mask has no image, or a mask matches ambiguously.
    """
    root = os.path.abspath(os.fspath(path))
    image_dir, mask_dir = os.path.join(root, "images"), os.path.join(root, "masks")
    for folder in (image_dir, mask_dir):
        if not os.path.isdir(folder):
            raise DataError(f"{root}: folder layout needs an '{os.path.basename(folder)}/' subfolder")
    skip = _Skipper(skip_bad)
    images, ignored_images = _files_by_stem(image_dir, "image", skip)
    masks, ignored_masks = _files_by_stem(mask_dir, "mask", skip)
    if not images:
        raise DataError(f"{image_dir}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})")
    records, used, negatives = [], set(), 0
    for stem, image_path in images.items():
        candidates = [s for s in (stem, stem + MASK_SUFFIX) if s in masks]
        used.update(candidates)
        if image_path is None:
            continue  # two images share the stem: reported
        if len(candidates) > 1:
            skip(stem, f"{mask_dir}: image {stem!r} matches two masks ({stem} and {stem}{MASK_SUFFIX}); keep one")
            continue
        if candidates and masks[candidates[0]] is None:
            continue  # two mask files share the stem: reported
        mask_path = masks[candidates[0]] if candidates else None
        negatives += mask_path is None
        records.append(
            SampleRecord(
                sample_id=stem,
                image_path=image_path,
                kind=_kind(image_path),
                mask_path=mask_path,
                label=None if mask_path else 0,
                source=root,
            )
        )
    orphans = sorted(stem for stem in set(masks) - used if masks[stem] is not None)
    if orphans and not skip_bad:
        raise BadSampleError(
            f"{mask_dir}: {len(orphans)} mask(s) without an image in {image_dir}: {', '.join(orphans[:5])}"
            + (" ..." if len(orphans) > 5 else "")
        )
    for stem in orphans:
        skip(masks[stem], f"{masks[stem]}: mask without an image in {image_dir}")
    notes = []
    if negatives:
        notes.append(f"{negatives} image(s) without a mask file taken as negatives (label 0)")
    ignored = len(ignored_images) + len(ignored_masks)
    if ignored:
        notes.append(f"{ignored} file(s) with non-image extensions ignored")
        logger.warning("%s: ignored %d non-image file(s)", root, ignored)
    if skip.skipped:
        notes.append(f"{len(skip.skipped)} bad sample(s) or orphan mask(s) skipped")
    if not records:
        raise DataError(f"{root}: no usable samples ({len(images)} image names, {len(skip.skipped)} skipped as bad)")
    return SourceRecords(records, format="folder", source=root, skipped=skip.skipped, notes=notes)


def _read_csv(csv_path):
    import pandas as pd

    try:
        # Strings throughout: ids and RLE must not be parsed as numbers; empty cells stay "".
        return pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=False)
    except FileNotFoundError:
        raise DataError(f"{csv_path}: CSV file not found") from None
    except Exception as exc:  # pandas raises several parser error types
        raise DataError(f"{csv_path}: unreadable CSV ({type(exc).__name__}: {exc})") from None


def _parse_label(value, where):
    text = value.strip().lower()
    if text == "":
        return None
    if text in ("0", "1", "0.0", "1.0", "true", "false"):
        return int(text in ("1", "1.0", "true"))
    raise BadSampleError(f"{where}: label {value!r} is not 0 or 1")


def _parse_split(value, where):
    text = value.strip().lower()
    if text == "":
        return None
    text = SPLIT_ALIASES.get(text, text)
    if text not in SPLITS:
        raise BadSampleError(f"{where}: unknown split {value!r}; expected one of {', '.join(SPLITS)}")
    return text


def _manifest_row(row, where, base, group_column):
    """One CSV manifest row as a dict of record fields; a problem raises `BadSampleError` naming `where`."""
    image_rel = row["image"].strip()
    if not image_rel:
        raise BadSampleError(f"{where}: empty 'image' path")
    image_path = os.path.normpath(os.path.join(base, image_rel))
    if not os.path.isfile(image_path):
        raise BadSampleError(f"{where}: image file not found: {image_path}")
    mask_rel = row.get("mask", "").strip()
    mask_path = os.path.normpath(os.path.join(base, mask_rel)) if mask_rel else None
    if mask_path and not os.path.isfile(mask_path):
        raise BadSampleError(f"{where}: mask file not found: {mask_path}")
    label = _parse_label(row.get("label", ""), where)
    if mask_path is None:
        if label == 1:
            raise BadSampleError(f"{where}: label 1 (pneumothorax) but no mask; a positive sample needs a mask")
        label = 0
    return dict(
        id=row.get("id", "").strip(),
        image_rel=image_rel,
        image_path=image_path,
        mask_path=mask_path,
        label=label,
        split=_parse_split(row.get("split", ""), where),
        group=(row[group_column].strip() or None) if group_column else None,
    )


def read_csv_manifest(csv_path, *, skip_bad=False):
    """Reads a CSV manifest.

    Columns: `image` (required), `mask`, `label` (0/1), `split` (train/val/test, also validation/valid),
    `group` or `patient_id` (the grouping key for the split), `id` (sample id; default the image file
    name without extension, or its relative path when names collide). Paths are relative to the CSV's
    folder (absolute paths allowed). A row without a mask is a negative (label 0) unless its label is 1.

    Args:
        csv_path: The CSV file.
        skip_bad: If True, bad rows (below) are left out and listed in `skipped` (image path, or the line
            when it has none, and the reason); if False the first raises `BadSampleError`.

    Returns:
        `SourceRecords` (format `"csv"`), in row order.

    Raises:
        DataError: Naming the CSV: a missing `image` column, an empty file, no usable row; and naming the
            line (`BadSampleError`, without `skip_bad`): a missing image or mask file, a bad label or
            split, a positive label without a mask, or an id used before.
    """
    csv_path = os.path.abspath(os.fspath(csv_path))
    base = os.path.dirname(csv_path)
    frame = _read_csv(csv_path)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    if "image" not in frame.columns:
        raise DataError(f"{csv_path}: CSV manifest needs an 'image' column; found {list(frame.columns)}")
    if frame.empty:
        raise DataError(f"{csv_path}: CSV manifest has no rows")
    group_column = "group" if "group" in frame.columns else ("patient_id" if "patient_id" in frame.columns else None)

    skip, rows = _Skipper(skip_bad), []
    for index, row in enumerate(frame.to_dict("records")):
        line = index + 2  # line 1 is the header
        try:
            rows.append(dict(_manifest_row(row, f"{csv_path}: line {line}", base, group_column), line=line))
        except BadSampleError as exc:
            image = row["image"].strip()
            skip(os.path.normpath(os.path.join(base, image)) if image else f"{csv_path}: line {line}", exc.problem)

    stems = [os.path.splitext(os.path.basename(r["image_rel"]))[0] for r in rows]
    stems_unique = len(set(stems)) == len(stems)
    records, seen = [], {}
    for r, stem in zip(rows, stems):
        sample_id = r["id"] or (
            stem if stems_unique else os.path.splitext(os.path.normpath(r["image_rel"]))[0].replace(os.sep, "__")
        )
        if sample_id in seen:
            skip(
                r["image_path"],
                f"{csv_path}: line {r['line']}: sample id {sample_id!r} already used on line {seen[sample_id]}",
            )
            continue
        seen[sample_id] = r["line"]
        records.append(
            SampleRecord(
                sample_id=sample_id,
                image_path=r["image_path"],
                kind=_kind(r["image_path"]),
                mask_path=r["mask_path"],
                label=r["label"],
                group=r["group"],
                split=r["split"],
                source=csv_path,
            )
        )
    notes = [f"{len(skip.skipped)} row(s) skipped as bad"] if skip.skipped else []
    if not records:
        raise DataError(f"{csv_path}: no usable rows ({len(frame)} rows, {len(skip.skipped)} skipped as bad)")
    return SourceRecords(records, format="csv", source=csv_path, skipped=skip.skipped, notes=notes)


def _find_files(root, extensions, first_only=False):
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.lower().endswith(extensions) and not name.startswith("."):
                found.append(os.path.join(folder, name))
                if first_only:
                    return found
    return found


def _rle_csvs(root):
    return sorted(
        os.path.join(root, name)
        for name in os.listdir(root)
        if name.lower().endswith(".csv") and "rle" in name.lower() and os.path.isfile(os.path.join(root, name))
    )


def _siim_columns(frame, csv_path):
    columns = {str(c).strip().lower(): c for c in frame.columns}
    if "imageid" not in columns or "encodedpixels" not in columns:
        raise DataError(
            f"{csv_path}: SIIM-ACR RLE CSV needs columns 'ImageId' and 'EncodedPixels'; found {list(frame.columns)}"
        )
    return columns["imageid"], columns["encodedpixels"]


def _dicom_header(path):
    """`((rows, cols), patient_id or None)` from the header, pixels not read."""
    try:
        ds = read_dicom_header(path)
        size = (int(ds.Rows), int(ds.Columns))
        patient = str(ds.get("PatientID", "") or "").strip() or None
    except Exception as exc:  # DataError from the header, or no valid Rows/Columns in it
        read_dicom(path)  # raises the precise diagnosis (truncated, not DICOM, ...) where there is one
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: unreadable DICOM header ({type(exc).__name__}: {exc})") from None
    return size, patient


def read_siim(root, rle_csv=None, *, skip_bad=False, read_headers=True):
    """Reads the SIIM-ACR pneumothorax layout: DICOM files and a run-length CSV.

    The ImageId of a DICOM file is its name without extension. The CSV (`ImageId`, `" EncodedPixels"`, the
    leading space optional) may hold several rows per image: their masks are unioned; `-1` is empty. Each
    RLE is checked here (syntax, and extent against the DICOM's Rows x Columns when headers are read).

    Args:
        root: Folder searched recursively for `*.dcm`.
        rle_csv: The RLE CSV; default the single `*rle*.csv` in `root`.
        skip_bad: If True, images whose CSV rows are malformed (bad RLE, empty ImageId), whose DICOM is
            missing, ambiguous (two files) or has an unreadable header are left out and listed in `skipped`
            (ImageId, or the CSV line, and the reason); if False the first raises `BadSampleError`.
        read_headers: Read each DICOM header (without pixels) for its size and PatientID (the record's
            `mask_size` and `group`). If False, `mask_size` is `(SIIM_SIZE, SIIM_SIZE)`, checked again
            against the image at load time, and `group` is None.

    Returns:
        `SourceRecords` (format `"siim"`) in CSV order; `unlabelled` lists DICOM files without a CSV row.

    Raises:
        DataError: If the CSV is missing, ambiguous or lacks columns, or no sample remains;
            `BadSampleError` (without `skip_bad`) if an RLE is malformed, an ImageId is empty, has no
            DICOM or two DICOM files, or a DICOM header is unreadable.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise DataError(f"{root}: SIIM-ACR root folder not found")
    rle_csv = _siim_csv(root, rle_csv)
    skip = _Skipper(skip_bad)
    frame = _read_csv(rle_csv)
    columns = _siim_columns(frame, rle_csv)
    files = _dicom_files(root, skip_bad)
    rows = _rle_rows(frame, columns, rle_csv, skip)
    records = [_siim_record(image_id, files, rows, read_headers, skip) for image_id in rows.runs]
    records = [record for record in records if record is not None]
    dicoms, duplicates, runs = files.by_id, files.duplicates, rows.runs
    unlabelled = sorted(
        os.path.abspath(p) for stem, p in dicoms.items() if stem not in runs for p in duplicates.get(stem, [p])
    )
    notes = []
    if unlabelled:
        notes.append(f"{len(unlabelled)} DICOM file(s) without a row in {os.path.basename(rle_csv)} (unlabelled)")
        logger.warning("%s: %d DICOM file(s) have no RLE row and are not used", root, len(unlabelled))
    if skip.skipped:
        notes.append(f"{len(skip.skipped)} image(s) skipped as bad")
    if not records:
        raise DataError(
            f"{root}: no usable SIIM-ACR samples ({len(runs)} ImageIds in {rle_csv}, {len(dicoms)} DICOM files, "
            f"{len(skip.skipped)} skipped)"
        )
    return SourceRecords(records, format="siim", source=root, unlabelled=unlabelled, skipped=skip.skipped, notes=notes)


def _siim_csv(root, rle_csv):
    """The absolute path of the RLE CSV: `rle_csv`, else the single `*rle*.csv` in `root`."""
    if rle_csv is None:
        candidates = _rle_csvs(root)
        if len(candidates) != 1:
            found = ", ".join(os.path.basename(c) for c in candidates) or "none"
            raise DataError(f"{root}: expected exactly one '*rle*.csv' file (found {found}); pass rle_csv")
        rle_csv = candidates[0]
    return os.path.abspath(os.fspath(rle_csv))


class _DicomFiles(typing.NamedTuple):
    """The DICOM files of a SIIM-ACR folder: `by_id` `{ImageId: path}`, `duplicates` `{ImageId: [paths]}`."""

    root: str
    by_id: dict
    duplicates: dict


class _RleRows(typing.NamedTuple):
    """The rows of a SIIM-ACR RLE CSV, by ImageId in CSV order: `runs` `{ImageId: [RLE]}`, `lines` their lines."""

    csv: str
    runs: dict
    lines: dict


def _dicom_files(root, skip_bad):
    """The `_DicomFiles` under `root`; an ImageId two files share is an error without `skip_bad`."""
    dicoms, duplicates = {}, {}
    for path in _find_files(root, DICOM_EXTENSIONS):
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in dicoms:
            if not skip_bad:
                raise BadSampleError(f"{root}: ImageId {stem!r} has two DICOM files: {dicoms[stem]} and {path}")
            duplicates.setdefault(stem, [dicoms[stem]]).append(path)
            continue
        dicoms[stem] = path
    return _DicomFiles(root, dicoms, duplicates)


def _rle_rows(frame, columns, rle_csv, skip):
    """The `_RleRows` of the CSV read as `frame`; a row without ImageId goes to `skip`."""
    id_column, rle_column = columns
    runs, lines = {}, {}
    for index, (image_id, rle) in enumerate(zip(frame[id_column], frame[rle_column])):
        image_id = image_id.strip()
        if not image_id:
            skip(f"{rle_csv}: line {index + 2}", f"{rle_csv}: line {index + 2}: empty ImageId")
            continue
        runs.setdefault(image_id, []).append(rle.strip())
        lines.setdefault(image_id, []).append(index + 2)
    if not runs and not skip.skipped:
        raise DataError(f"{rle_csv}: RLE CSV has no rows")
    return _RleRows(rle_csv, runs, lines)


def _siim_record(image_id, files, rows, read_headers, skip):
    """The `SampleRecord` of one ImageId, its RLEs checked against its DICOM's size; None if it went to `skip`."""
    root, rle_csv, duplicates = files.root, rows.csv, files.duplicates
    runs, lines, path = rows.runs[image_id], rows.lines[image_id], files.by_id.get(image_id)
    if image_id in duplicates:
        files = ", ".join(duplicates[image_id])
        skip(image_id, f"{root}: ImageId {image_id!r} has {len(duplicates[image_id])} DICOM files: {files}")
        return None
    if path is None:
        skip(image_id, f"{rle_csv}: line {lines[0]}: ImageId {image_id!r} has no DICOM file under {root}")
        return None
    size, group = (SIIM_SIZE, SIIM_SIZE), None
    try:
        if read_headers:
            size, group = _dicom_header(path)
        pixels = sum(
            rle_validate(rle, *size, where=f"{rle_csv}: line {line} ({image_id})") for rle, line in zip(runs, lines)
        )
    except DataError as exc:
        skip(image_id, str(exc))
        return None
    return SampleRecord(
        sample_id=image_id,
        image_path=os.path.abspath(path),
        kind="dicom",
        rle=tuple(r for r in runs if rle_validate(r) > 0),
        mask_size=size,
        label=int(pixels > 0),
        group=group,
        source=rle_csv,
    )


def discover_source(path, *, skip_bad=False):
    """Detects the layout of a data source and reads it.

    Args:
        path: A CSV manifest, a SIIM-ACR RLE CSV, or a folder (SIIM-ACR: `*rle*.csv` plus `*.dcm`
            files; folder layout: `images/` and `masks/`).
        skip_bad: Passed to the reader: leave out the samples it finds bad (missing files, malformed
            rows) and list them in `records.skipped`, instead of raising `BadSampleError`.

    Returns:
        `(format_name, records)` with `format_name` one of `"csv"`, `"siim"`, `"folder"` and `records` a
        non-empty `SourceRecords`.

    Raises:
        DataError: If the path does not exist, matches no accepted layout (the message lists them), or
            the source holds no samples; `BadSampleError` for a bad sample without `skip_bad`.
    """
    path = os.path.abspath(os.fspath(path))
    accepted = "; ".join(LAYOUTS)
    if not os.path.exists(path):
        raise DataError(f"{path}: data source not found")
    if os.path.isfile(path):
        if not path.lower().endswith(".csv"):
            raise DataError(f"{path}: not a recognised data source; accepted: {accepted}")
        columns = [str(c).strip().lower() for c in _read_csv(path).columns]
        if "imageid" in columns and "encodedpixels" in columns:
            records = read_siim(os.path.dirname(path), rle_csv=path, skip_bad=skip_bad)
        else:
            records = read_csv_manifest(path, skip_bad=skip_bad)
    elif _rle_csvs(path) and _find_files(path, DICOM_EXTENSIONS, first_only=True):
        records = read_siim(path, skip_bad=skip_bad)
    elif os.path.isdir(os.path.join(path, "images")) and os.path.isdir(os.path.join(path, "masks")):
        records = read_folder(path, skip_bad=skip_bad)
    else:
        raise DataError(f"{path}: not a recognised data source; accepted: {accepted}")
    if not records:
        raise DataError(f"{path}: the {records.format} source holds no samples")
    return records.format, records


# --- Loading --------------------------------------------------------------------------------------------


def load_sample(record, max_pixels=None):
    """Loads one record's image and mask at native resolution.

    The mask comes from the mask file, the union of the record's RLE strings decoded at the image's size,
    or is empty for a negative. A record's label, when given, must agree with the mask.

    Args:
        record: A `SampleRecord`.
        max_pixels: The image size limit for the image and the mask (`read_image`).

    Returns:
        A `LoadedSample`; `meta` holds `value_min`/`value_max` (the range the image type can take, for
        intensity scaling), `photometric` (DICOM) and `image_path`.

    Raises:
        DataError: Naming the file(s): unreadable image or mask, mask shape differing from the image
            shape, RLE size differing from the image size, non-binary mask, malformed RLE, or a label
            that disagrees with the mask.
    """
    image, info = read_image(record.image_path, dicom=(record.kind == "dicom") or None, max_pixels=max_pixels)
    if image.ndim != 2:
        raise DataError(f"{record.image_path}: expected a 2-D grayscale image, got shape {image.shape}")
    shape = tuple(image.shape)
    if record.mask_path:
        try:
            mask = read_mask(record.mask_path, expected_shape=shape, max_pixels=max_pixels)
        except DataError as exc:
            raise DataError(f"{exc} [image {record.image_path}]") from None
    elif record.rle:
        if record.mask_size is not None and tuple(record.mask_size) != shape:
            raise DataError(
                f"{record.image_path}: image is {shape[0]}x{shape[1]} but the RLE in {record.source} "
                f"is for {record.mask_size[0]}x{record.mask_size[1]}"
            )
        mask = np.zeros(shape, dtype=bool)
        for rle in record.rle:
            mask |= rle_decode(rle, *shape, where=f"{record.source} ({record.sample_id})")
    else:
        mask = np.zeros(shape, dtype=bool)
    label = int(mask.any())
    if record.label is not None and int(record.label) != label:
        described = record.mask_path or (f"RLE in {record.source}" if record.rle else "no mask")
        raise DataError(
            f"{record.image_path}: label {record.label} disagrees with the mask ({described}), which is "
            f"{'non-empty' if label else 'empty'}"
        )
    meta = {"value_min": float(info["value_range"][0]), "value_max": float(info["value_range"][1])}
    meta["image_path"] = record.image_path
    if info.get("photometric"):
        meta["photometric"] = info["photometric"]
    return LoadedSample(
        sample_id=record.sample_id,
        image=image,
        mask=mask,
        label=label,
        spacing=info.get("spacing"),
        bits_stored=int(info["bits_stored"]),
        meta=meta,
    )
