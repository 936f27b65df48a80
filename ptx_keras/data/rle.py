"""SIIM-ACR run-length encoding of binary masks.

The SIIM-ACR pneumothorax challenge (`train-rle.csv`, column `" EncodedPixels"`) stores a mask as pairs
`"offset length offset length ..."` over the image flattened in **column-major** (Fortran) order. Each
offset is **relative**: it counts the background pixels between the end of the previous run (or pixel 0
for the first run) and the start of this run. `"-1"` (also an empty string or a missing value) is an
empty mask. An image with several pneumothoraces has several rows; their union is the mask (the caller
unions the decoded strings).

Example, a 4 x 4 mask whose column-major flat indices 1, 2 and 9 are set::

    flat (column-major): 0 1 1 0 | 0 0 0 0 | 0 1 0 0 | 0 0 0 0
    run 1 starts at 1 (offset 1 - 0 = 1), length 2, ends at 3
    run 2 starts at 9 (offset 9 - 3 = 6), length 1
    rle = "1 2 6 1"
"""

import math

import numpy as np

from ptx_keras.errors import DataError

__all__ = ["EMPTY_RLE", "rle_decode", "rle_encode", "rle_validate"]


EMPTY_RLE = "-1"


def _is_empty(rle):
    if rle is None:
        return True
    if isinstance(rle, float) and math.isnan(rle):
        return True
    if isinstance(rle, str):
        text = rle.strip()
        return text == "" or text == EMPTY_RLE
    return False


def _parse(rle, where):
    if not isinstance(rle, str):
        raise DataError(f"{where}RLE must be a string, got {type(rle).__name__}: {rle!r}")
    tokens = rle.split()
    try:
        values = np.array([int(token) for token in tokens], dtype=np.int64)
    except ValueError:
        bad = [t for t in tokens if not t.lstrip("+-").isdigit()]
        raise DataError(f"{where}malformed RLE: non-integer token(s) {bad[:5]} in {rle[:80]!r}") from None
    if values.size % 2:
        raise DataError(f"{where}malformed RLE: odd number of values ({values.size}); expected 'offset length' pairs")
    offsets, lengths = values[0::2], values[1::2]
    if (offsets < 0).any():
        raise DataError(f"{where}malformed RLE: negative offset {int(offsets[offsets < 0][0])}")
    if (lengths < 0).any():
        raise DataError(f"{where}malformed RLE: negative run length {int(lengths[lengths < 0][0])}")
    return offsets, lengths


def rle_validate(rle, height=None, width=None, *, where=None):
    """Checks a SIIM-ACR run-length string without building the mask.

    Args:
        rle: The run-length string (empty values as in `rle_decode`).
        height: Image rows, or None to skip the extent check.
        width: Image columns, or None to skip the extent check.
        where: Optional text naming the origin (file, row) prefixed to error messages.

    Returns:
        The number of foreground pixels the string describes (0 for an empty mask).

    Raises:
        DataError: As `rle_decode` (the extent check only when `height` and `width` are given).
    """
    prefix = f"{where}: " if where else ""
    if _is_empty(rle):
        return 0
    offsets, lengths = _parse(rle, prefix)
    if height is not None and width is not None:
        _check_extent(int(offsets.sum() + lengths.sum()), int(height), int(width), prefix)
    return int(lengths.sum())


def _check_extent(end, height, width, prefix):
    if end > height * width:
        raise DataError(
            f"{prefix}malformed RLE: a run ends at pixel {end}, past the end of the "
            f"{height}x{width} image ({height * width} pixels)"
        )


def rle_decode(rle, height, width, *, where=None):
    """Decodes one SIIM-ACR (relative, column-major) run-length string into a mask.

    Args:
        rle: The run-length string `"offset length ..."`; `"-1"`, `""`, whitespace, None or NaN mean an
            empty mask.
        height: Image rows.
        width: Image columns.
        where: Optional text naming the origin (file, row) prefixed to error messages.

    Returns:
        Bool array `(height, width)`.

    Raises:
        DataError: If the string is malformed (odd number of values, non-integer tokens, negative offsets
            or lengths) or a run goes past the end of the `height * width` image.
    """
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive. Received: height={height}, width={width}")
    prefix = f"{where}: " if where else ""
    size = height * width
    if _is_empty(rle):
        return np.zeros((height, width), dtype=bool)
    offsets, lengths = _parse(rle, prefix)
    # Absolute start of run i = sum of offsets up to i + sum of lengths before i.
    starts = np.cumsum(offsets) + np.concatenate(([0], np.cumsum(lengths)[:-1]))
    ends = starts + lengths
    if ends.size:
        _check_extent(int(ends[-1]), height, width, prefix)
    # +1 at each start, -1 at each end; the running sum is 1 inside a run (runs cannot overlap).
    edges = np.bincount(starts, minlength=size + 1) - np.bincount(ends, minlength=size + 1)
    flat = np.cumsum(edges[:size]) > 0
    return flat.reshape((width, height)).T


def rle_encode(mask):
    """Encodes a binary mask as a SIIM-ACR (relative, column-major) run-length string.

    Args:
        mask: 2-D array `(height, width)`; nonzero pixels are foreground.

    Returns:
        The run-length string, `"-1"` for an empty mask. `rle_decode(rle_encode(m), *m.shape)` equals
        `m != 0` exactly.

    Raises:
        ValueError: If `mask` is not 2-D.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (height, width). Received: shape={mask.shape}")
    flat = (mask != 0).ravel(order="F").astype(np.int8)
    edges = np.diff(np.concatenate(([0], flat, [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    if starts.size == 0:
        return EMPTY_RLE
    offsets = starts - np.concatenate(([0], ends[:-1]))
    pairs = np.stack([offsets, ends - starts], axis=1).ravel()
    return " ".join(map(str, pairs.tolist()))
