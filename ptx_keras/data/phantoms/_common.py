"""Pieces every phantom style shares: argument checks and small vectorised drawing helpers.

Classic phantoms depend on these bit for bit (tests/test_phantoms.py holds checksums of their output), so a
change here that alters a single float is a change of the classic generator.
"""

import numpy as np
from scipy import ndimage

from ptx_keras.constants import PHANTOM_MIN_SIZE

TEXTURE_GRID = 256  # smooth random fields are drawn at most at this resolution, then resampled


# ----------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------
def as_hw(size):
    if isinstance(size, (bool, np.bool_)):
        raise ValueError(f"size must be an int or (height, width). Received: size={size!r}")
    if isinstance(size, (int, np.integer)):
        hw = (int(size), int(size))
    else:
        try:
            hw = tuple(size)
        except TypeError:
            raise ValueError(f"size must be an int or (height, width). Received: size={size!r}") from None
        if len(hw) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in hw):
            raise ValueError(f"size must be an int or (height, width). Received: size={size!r}")
        hw = (int(hw[0]), int(hw[1]))
    if min(hw) < PHANTOM_MIN_SIZE:
        raise ValueError(f"size must be at least {PHANTOM_MIN_SIZE} pixels. Received: size={size!r}")
    return hw


def check_bit_depth(bit_depth):
    if isinstance(bit_depth, bool) or bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16. Received: bit_depth={bit_depth!r}")
    return int(bit_depth)


def check_n(n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer. Received: n={n!r}")
    return int(n)


def check_conspicuity(conspicuity):
    if isinstance(conspicuity, bool) or not isinstance(conspicuity, (int, float)) or not conspicuity > 0:
        raise ValueError(f"conspicuity must be a positive number. Received: conspicuity={conspicuity!r}")
    return float(conspicuity)


def check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer. Received: seed={seed!r}")
    return int(seed)


# ----------------------------------------------------------------------------------------------------
# Small vectorised helpers
# ----------------------------------------------------------------------------------------------------
def smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def band(dist, half, edge):
    """Soft 0..1 indicator of |dist| < half with an anti-aliased edge `edge` wide."""
    return np.clip((half - np.abs(dist)) / edge + 0.5, 0.0, 1.0)


def smooth_noise(rng, hw, sigma_lo, sigma_hi):
    """Band-pass Gaussian noise with unit standard deviation; sigmas in image widths (size-independent)."""
    gh, gw = (min(v, TEXTURE_GRID) for v in hw)
    white = rng.standard_normal((gh, gw)).astype(np.float32)
    fine = ndimage.gaussian_filter(white, sigma_lo * gw, mode="reflect")
    field = fine - ndimage.gaussian_filter(white, sigma_hi * gw, mode="reflect") if sigma_hi else fine
    field /= field.std() + 1e-8
    if (gh, gw) != tuple(hw):
        field = ndimage.zoom(field, (hw[0] / gh, hw[1] / gw), order=1, mode="nearest", grid_mode=True)
    return field


def vessel_tree(p, rng, hw, to_pixels, trunks=6, generations=6):
    """Branching vessel trees from each hilum, splatted and blurred; thicker, brighter vessels centrally.

    Args:
        p: Anatomy parameters (`medi_hw`, `lung_yc`).
        rng: The phantom's `numpy.random.Generator`.
        hw: `(height, width)` of the image.
        to_pixels: `(xa, ya) -> (rows, cols)`, the inverse of the phantom's projection.
        trunks: Vessel trunks per hilum.
        generations: Branching generations (each doubles the segments).

    Returns:
        A float32 `(height, width)` density, about 1 on a thick vessel's centre line.
    """
    h, w = hw
    points = {True: [], False: []}  # thick (first generations) and thin vessels: rows, cols, weights
    step = 0.7 / max(h, w)  # sample spacing along a segment (normalised units)
    for side_index, sign in ((0, -1.0), (1, 1.0)):
        hilum_u = p["medi_hw"] + (0.05 if side_index == 0 else 0.045)
        hilum_y = p["lung_yc"][side_index] - 0.01 * side_index
        angles = np.deg2rad(np.linspace(-100.0, 70.0, trunks) + rng.uniform(-10, 10, trunks))
        # trunks leave the hilum from points spread over its height, so they do not meet in one spot
        starts = np.stack(
            [
                hilum_u + rng.uniform(0.0, 0.025, trunks),
                hilum_y + np.linspace(-0.05, 0.05, trunks) + rng.uniform(-0.01, 0.01, trunks),
            ],
            axis=1,
        )
        length = rng.uniform(0.055, 0.07)
        for gen in range(generations):
            n_seg = len(angles)
            lengths = length * rng.uniform(0.8, 1.2, n_seg)
            ends = starts + lengths[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
            n_pts = int(np.ceil(length * 1.2 / step)) + 1
            t = np.linspace(0.0, 1.0, n_pts)[None, :]
            u = starts[:, :1] + t * (ends[:, :1] - starts[:, :1])
            y = starts[:, 1:] + t * (ends[:, 1:] - starts[:, 1:])
            rows, cols = to_pixels(sign * u.ravel(), y.ravel())
            # per-point weight proportional to the actual spacing: a segment's density is its contrast
            weight = 0.78**gen * (lengths[:, None] / (n_pts - 1) / step).repeat(n_pts, 1).ravel()
            points[gen < 3].append((rows, cols, weight))
            # two children per segment, diverging; a pull towards lateral keeps trees inside the lung
            spread = np.deg2rad(rng.uniform(14.0, 32.0, n_seg))
            angles = np.concatenate([angles - spread, angles + spread]) * 0.97
            starts = np.concatenate([ends, ends])
            length *= 0.78
    out = np.zeros(hw, np.float32)
    for is_thick, sigma, contrast in ((True, 0.0032, 1.0), (False, 0.0016, 0.7)):
        acc = splat(*(np.concatenate(v) for v in zip(*points[is_thick])), hw)
        sig = (max(0.6, sigma * h), max(0.6, sigma * w))
        # Points 0.7 px apart blurred across the line peak at 1 / (0.7 sqrt(2 pi) sigma): undo that so a
        # vessel's contrast does not depend on the resolution.
        norm = np.sqrt(2.0 * np.pi) * 0.5 * (sig[0] + sig[1]) * 0.7
        blurred = ndimage.gaussian_filter(acc, sig, mode="constant") * norm
        out += contrast * blurred
    return out


def splat(rows, cols, weight, hw):
    """Image `(height, width)` holding `weight` splatted at fractional pixel positions (bilinear)."""
    h, w = hw
    r0 = np.floor(rows).astype(np.int64)
    c0 = np.floor(cols).astype(np.int64)
    fr = rows - r0
    fc = cols - c0
    index, weights = [], []
    for dr, dc, wt in ((0, 0, (1 - fr) * (1 - fc)), (1, 0, fr * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 1, fr * fc)):
        rr, cc = r0 + dr, c0 + dc
        ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        index.append(rr[ok] * w + cc[ok])
        weights.append((weight * wt)[ok])
    flat = np.bincount(np.concatenate(index), weights=np.concatenate(weights), minlength=h * w)
    return flat.astype(np.float32).reshape(hw)


def largest_component(mask):
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count <= 1:
        return mask
    return labels == 1 + np.argmax(np.bincount(labels.ravel())[1:])


def rib_family(u, yprime, s0, s1, frac, edge, cortex):
    """Bands at yprime = s0*k + s1*k**2 (k = 0, 1, ...), `frac` of the local spacing thick."""
    yp = np.maximum(yprime, 0.0)
    k = np.floor((-s0 + np.sqrt(s0 * s0 + 4.0 * s1 * yp)) / (2.0 * s1))
    inside = yp - (s0 * k + s1 * k * k)
    thickness = frac * (s0 + s1 * (2.0 * k + 1.0))
    alpha = np.clip(inside / edge + 0.5, 0, 1) * np.clip((thickness - inside) / edge + 0.5, 0, 1)
    margin = 0.18 * thickness
    rim = np.exp(-((inside / margin) ** 2)) + np.exp(-(((thickness - inside) / margin) ** 2))
    return alpha * ((1.0 - cortex) + cortex * np.minimum(rim, 1.0)) * (yprime > -edge) * (k < 12)
