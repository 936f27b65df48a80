"""Spatial weight maps for the spatially weighted cross-entropy (the paper's eq. 6).

For one image with pixel set N, class pixel sets T_c (background, pneumothorax) and boundary set B:

    w_map(x_i) = sum_c |N| / |T_c| * [x_i in T_c]  +  |N| / |B| * [x_i in B]

A class with no pixels contributes no term, so an image without pneumothorax has weight 1 everywhere and
a mask that covers the whole image has weight |N| / |N| = 1 everywhere (it has no boundary, see below).

Boundary definition (the paper: "if the eight neighborhoods of the pixel value '1' have a pixel value of '0',
we define this pixel as boundary contour pixels ... then the boundary range is cross-expanded by
morphological dilation"):

1. A *contour* pixel is a pneumothorax pixel with at least one background pixel among its 8 neighbours.
   Pixels outside the image are NOT background: a pneumothorax touching the image border has no contour
   along that border (the border is the edge of the radiograph, not of the pneumothorax).
2. The contour is widened by `boundary_width` steps of binary dilation with the 3x3 cross (plus-shaped)
   structuring element. The widened band B extends into the background as well (that is what dilating an
   edge does, and what the paper's Fig. 4 shows: a band straddling the edge), so background pixels next to
   the pneumothorax get the background term plus the boundary term. `boundary_width=0` keeps only the
   contour, which lies inside the pneumothorax (B subset of T_pneumothorax, as in the paper's text).

Post-processing, both off by default (the paper uses neither): `normalize="mean"` divides the map by its
mean (mean weight 1), then `clip` caps it from above. Because each present term sums to |N| over the image,
the mean of the raw map is exactly the number of present terms (1, 2 or 3), so normalisation is a division
by that small integer and never changes the ratios between the terms.

Speed: the morphology runs on the bounding box of the pneumothorax (plus a margin) with NumPy slice
arithmetic, which gives the same result as `scipy.ndimage.binary_erosion`/`binary_dilation` (the tests
check this) at a fraction of the cost; a 1024x1024 mask takes about a millisecond
(`benchmarks/weight_maps.py`).

This module only imports NumPy: data preparation workers use it without TensorFlow.
"""

import numbers

import numpy as np

from ptx_keras.constants import BOUNDARY_WIDTH, WEIGHT_CLIP, WEIGHT_NORMALIZE
from ptx_keras.errors import DataError

__all__ = ["NORMALIZE_OPTIONS", "boundary_mask", "class_weight_map", "spatial_weight_map", "weight_map_terms"]


NORMALIZE_OPTIONS = (None, "mean")

# The only foreground values accepted in a mask: 0/1 masks and 0/255 (8-bit PNG) masks.
_FOREGROUND_VALUES = (1, 255)


def _as_binary_mask(mask):
    """Validates a mask and returns it as a 2-D bool array (True = pneumothorax).

    Raises:
        DataError: if the mask is not 2-D, is empty, holds NaN, or holds values other than 0/1 or 0/255.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(
            f"mask must be a 2-D array (height, width); squeeze channel or batch axes first. "
            f"Received: mask.shape={mask.shape}"
        )
    if mask.size == 0:
        raise DataError(f"mask must not be empty. Received: mask.shape={mask.shape}")
    if mask.dtype == bool:
        return mask
    if not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
        raise DataError(f"mask must have a boolean, integer or float dtype. Received: dtype={mask.dtype}")
    high = mask.max()
    if np.issubdtype(mask.dtype, np.floating) and np.isnan(high):
        raise DataError(f"mask contains NaN ({int(np.count_nonzero(np.isnan(mask)))} pixels)")
    low = mask.min()
    if low == 0 and high == 0:
        return np.zeros(mask.shape, bool)
    foreground = mask == high
    if (
        low < 0
        or high not in _FOREGROUND_VALUES
        or (np.count_nonzero(foreground) + np.count_nonzero(mask == 0) != mask.size)
    ):
        values = np.unique(mask)
        shown = ", ".join(f"{v:g}" for v in values[:10].tolist()) + (", ..." if values.size > 10 else "")
        raise DataError(f"mask must be binary (0/1 or 0/255); found values [{shown}]")
    return foreground


def _check_boundary_width(boundary_width):
    if (
        isinstance(boundary_width, (bool, np.bool_))
        or not isinstance(boundary_width, numbers.Integral)
        or boundary_width < 0
    ):
        raise ValueError(
            f"boundary_width must be a non-negative integer (dilation steps). Received: boundary_width={boundary_width!r}"
        )
    return int(boundary_width)


def _check_post(normalize, clip):
    if normalize not in NORMALIZE_OPTIONS:
        raise ValueError(f"normalize must be one of {NORMALIZE_OPTIONS}. Received: normalize={normalize!r}")
    if clip is not None:
        if (
            isinstance(clip, (bool, np.bool_))
            or not isinstance(clip, numbers.Real)
            or not np.isfinite(clip)
            or clip <= 0
        ):
            raise ValueError(f"clip must be None or a positive finite number. Received: clip={clip!r}")


def _erode8(mask):
    """Binary erosion with the full 3x3 element; pixels outside the image count as foreground."""
    padded = np.pad(mask, 1, constant_values=True)
    rows = padded[:, :-2] & padded[:, 1:-1] & padded[:, 2:]
    return rows[:-2] & rows[1:-1] & rows[2:]


def _dilate_cross(band, steps):
    """`steps` binary dilations with the 3x3 cross; the image border is not crossed."""
    for _ in range(steps):
        grown = band.copy()
        grown[1:] |= band[:-1]
        grown[:-1] |= band[1:]
        grown[:, 1:] |= band[:, :-1]
        grown[:, :-1] |= band[:, 1:]
        band = grown
    return band


def _bounding_box(mask, margin):
    """Slices of the mask's bounding box grown by `margin` pixels (clipped to the image), or None."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    height, width = mask.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, height)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, width)),
    )


def _boundary_in_box(fg, boundary_width):
    """Returns `(box, band)`: the crop holding the boundary band and the band inside it (None if no PTX).

    The crop margin `boundary_width + 1` guarantees that (a) every pneumothorax pixel has its 8 neighbours
    inside the crop or outside the image, so erosion on the crop equals erosion on the image, and (b) the
    dilated band cannot reach the crop's edge unless that edge is the image border.
    """
    box = _bounding_box(fg, boundary_width + 1)
    if box is None:
        return None, None
    crop = fg[box]
    contour = crop & ~_erode8(crop)
    return box, _dilate_cross(contour, boundary_width)


def boundary_mask(mask, boundary_width=BOUNDARY_WIDTH):
    """The boundary band B of eq. 6.

    Contour pixels (pneumothorax pixels with a background 8-neighbour; pixels outside the image are not
    background) widened by `boundary_width` dilations with the 3x3 cross. The band may extend into the
    background.

    Args:
        mask: Binary mask `(height, width)`: bool, 0/1 or 0/255, any integer or float dtype.
        boundary_width: Number of cross dilations applied to the contour (0 keeps the contour only).

    Returns:
        bool array `(height, width)`, True on the boundary band.

    Raises:
        DataError: if `mask` is not 2-D or not binary, or holds NaN.
        ValueError: if `boundary_width` is not a non-negative integer.
    """
    boundary_width = _check_boundary_width(boundary_width)
    fg = _as_binary_mask(mask)
    out = np.zeros(fg.shape, bool)
    box, band = _boundary_in_box(fg, boundary_width)
    if box is not None:
        out[box] = band
    return out


def _class_terms(fg):
    """Returns `(n_ptx, w_background, w_ptx)`; an absent class gets weight 0 (it has no pixels anyway)."""
    total = fg.size
    n_ptx = int(np.count_nonzero(fg))
    n_bg = total - n_ptx
    w_bg = total / n_bg if n_bg else 0.0
    w_ptx = total / n_ptx if n_ptx else 0.0
    return n_ptx, w_bg, w_ptx


def class_weight_map(mask):
    """The class-frequency weights of W-CEL: eq. 6 without the boundary term.

    `|N| / |T_background|` on background pixels and `|N| / |T_pneumothorax|` on pneumothorax pixels; an
    absent class contributes nothing (an empty or a full mask gives all ones).

    Args:
        mask: Binary mask `(height, width)`: bool, 0/1 or 0/255, any integer or float dtype.

    Returns:
        float32 array `(height, width)`.

    Raises:
        DataError: if `mask` is not 2-D or not binary, or holds NaN.
    """
    fg = _as_binary_mask(mask)
    _, w_bg, w_ptx = _class_terms(fg)
    return np.where(fg, np.float32(w_ptx), np.float32(w_bg))


def weight_map_terms(mask, boundary_width=BOUNDARY_WIDTH):
    """The three terms of eq. 6 for one mask, with the set sizes, for reports and data descriptions.

    Args:
        mask: Binary mask `(height, width)`: bool, 0/1 or 0/255, any integer or float dtype.
        boundary_width: As in `spatial_weight_map`.

    Returns:
        dict with `pixels` (|N|), `ptx_pixels` (|T_1|), `boundary_pixels` (|B|), and the weights
        `background`, `ptx`, `boundary` (0.0 for an absent term), as Python numbers.

    Raises:
        DataError, ValueError: as `spatial_weight_map`.
    """
    boundary_width = _check_boundary_width(boundary_width)
    fg = _as_binary_mask(mask)
    n_ptx, w_bg, w_ptx = _class_terms(fg)
    _, band = _boundary_in_box(fg, boundary_width)
    n_band = 0 if band is None else int(np.count_nonzero(band))
    return {
        "pixels": int(fg.size),
        "ptx_pixels": n_ptx,
        "boundary_pixels": n_band,
        "background": float(w_bg),
        "ptx": float(w_ptx),
        "boundary": fg.size / n_band if n_band else 0.0,
    }


def spatial_weight_map(mask, boundary_width=BOUNDARY_WIDTH, normalize=WEIGHT_NORMALIZE, clip=WEIGHT_CLIP):
    """The spatial weight map `w_map` of eq. 6, computed from a ground-truth mask.

    `w_map = |N|/|T_bg| on background + |N|/|T_ptx| on pneumothorax + |N|/|B| on the boundary band B`
    (see the module docstring for B). Then, in this order: `normalize="mean"` divides by the mean weight
    (which is exactly the number of present terms), and `clip` caps the weights at `clip`.

    Args:
        mask: Binary mask `(height, width)`: bool, 0/1 or 0/255, any integer or float dtype.
        boundary_width: Cross dilations applied to the contour (default `constants.BOUNDARY_WIDTH`).
        normalize: None (the paper) or `"mean"` (mean weight 1).
        clip: None (the paper) or a positive upper bound, applied after normalisation.

    Returns:
        float32 array `(height, width)`; all ones for a mask without pneumothorax.

    Raises:
        DataError: if `mask` is not 2-D or not binary (0/1 or 0/255), or holds NaN.
        ValueError: if `boundary_width`, `normalize` or `clip` is invalid.
    """
    boundary_width = _check_boundary_width(boundary_width)
    _check_post(normalize, clip)
    fg = _as_binary_mask(mask)
    n_ptx, w_bg, w_ptx = _class_terms(fg)
    box, band = _boundary_in_box(fg, boundary_width)
    n_band = 0 if band is None else int(np.count_nonzero(band))
    n_terms = (w_bg > 0) + (w_ptx > 0) + (n_band > 0)
    scale = 1.0 / n_terms if normalize == "mean" else 1.0

    # Everything outside the box is background (or the box is the whole image), so fill with the
    # background term and only compute the box.
    weights = np.full(fg.shape, np.float32(w_bg * scale if w_bg else w_ptx * scale), dtype=np.float32)
    if box is not None:
        inner = np.where(fg[box], np.float32(w_ptx * scale), np.float32(w_bg * scale))
        if n_band:
            np.add(inner, np.float32(fg.size / n_band * scale), out=inner, where=band)
        weights[box] = inner
    if clip is not None:
        np.minimum(weights, np.float32(clip), out=weights)
    return weights
