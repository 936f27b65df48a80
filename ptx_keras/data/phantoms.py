"""Synthetic chest-radiograph phantoms with pneumothoraces: the built-in data set.

No real radiographs ship with the package, so the quick start, the tests and the documentation use these
seeded, vectorised renderings (NumPy + `scipy.ndimage`). Each image models, in an attenuation-like scale:

- the body outline (soft tissue, neck and shoulders, thicker abdomen below the diaphragm);
- two lungs (darker, thicker air column centrally), the heart, the mediastinum with the spine and the
  trachea, and the hemidiaphragm domes;
- faint lung texture: branching vessel trees fading towards the periphery plus band-pass "parenchyma" noise;
- posterior ribs (curved bright bands with cortical margins crossing the lung fields), fainter anterior
  ribs, and the clavicles;
- exposure variation (gain, offset, gamma, a linear gradient) and signal-dependent (quantum-like) noise.

A pneumothorax (PTX) is air between the chest wall and the collapsed lung: a band along the chest wall
(apical, lateral, apicolateral, or on both sides) that has no lung texture and is slightly darker, bounded
on the lung side by the thin bright visceral pleural line. Its depth sets the size class (small, moderate,
large). The band's darkness is deliberately within the range of normal lung intensities (it is as dark as
the thick central lung, the exposure varies between images and along each image), so a brightness threshold
does not find it; the pleural line and the missing texture do.

Geometry is defined in normalised coordinates, so an image renders at any size directly (the mask is exact
at that size). Patient sides follow the radiographic convention: the patient's right is on the image left.
"""

import json
import os

import numpy as np
from scipy import ndimage

from ptx_keras.constants import (
    IMAGE_SIZE,
    PHANTOM_FORMATS,
    PHANTOM_MIN_SIZE,
    PHANTOM_POSITIVE_FRACTION,
    PHANTOM_SPACING_MM,
    PHANTOM_VERSION,
    SIIM_SIZE,
)
from ptx_keras.errors import DataError

KINDS = ("apical", "lateral", "apicolateral", "bilateral")
SIZE_CLASSES = ("small", "moderate", "large")
SIDES = ("right", "left")  # the patient's sides; "right" is the image's left half

# Depth of the air band between chest wall and lung edge, in units of the image width, per size class.
_DEPTH_RANGE = {"small": (0.015, 0.027), "moderate": (0.032, 0.055), "large": (0.06, 0.10)}
_SIZE_P = (0.2, 0.4, 0.4)
_KIND_P = {  # (apical, lateral, apicolateral) for unilateral pneumothoraces of each size class
    "small": (0.5, 0.5, 0.0),
    "moderate": (0.3, 0.35, 0.35),
    "large": (0.0, 0.3, 0.7),
}
_BILATERAL_P = 0.15
_PLEURAL_SIGMA = 0.0035  # Gaussian sigma of the pleural line (image widths): about 1 px FWHM at 128 px
_VESSEL_GENERATIONS = 6
_VESSEL_TRUNKS = 6
_TEXTURE_GRID = 256  # smooth random fields are drawn at most at this resolution, then resampled
_SIIM_STUDY_ROOT = "1.2.826.0.1.3680043.10.1234."  # UID root of the phantom DICOMs (arbitrary, fixed)


# ----------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------
def _as_hw(size):
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


def _check_bit_depth(bit_depth):
    if isinstance(bit_depth, bool) or bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16. Received: bit_depth={bit_depth!r}")
    return int(bit_depth)


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer. Received: n={n!r}")
    return int(n)


# ----------------------------------------------------------------------------------------------------
# Small vectorised helpers
# ----------------------------------------------------------------------------------------------------
def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _band(dist, half, edge):
    """Soft 0..1 indicator of |dist| < half with an anti-aliased edge `edge` wide."""
    return np.clip((half - np.abs(dist)) / edge + 0.5, 0.0, 1.0)


def _smooth_noise(rng, hw, sigma_lo, sigma_hi):
    """Band-pass Gaussian noise with unit standard deviation; sigmas in image widths (size-independent)."""
    gh, gw = (min(v, _TEXTURE_GRID) for v in hw)
    white = rng.standard_normal((gh, gw)).astype(np.float32)
    fine = ndimage.gaussian_filter(white, sigma_lo * gw, mode="reflect")
    field = fine - ndimage.gaussian_filter(white, sigma_hi * gw, mode="reflect") if sigma_hi else fine
    field /= field.std() + 1e-8
    if (gh, gw) != tuple(hw):
        field = ndimage.zoom(field, (hw[0] / gh, hw[1] / gw), order=1, mode="nearest", grid_mode=True)
    return field


# ----------------------------------------------------------------------------------------------------
# Random parameters
# ----------------------------------------------------------------------------------------------------
def _draw_anatomy(rng):
    """Patient, projection and exposure parameters; per-side values are (right, left) pairs."""
    u = rng.uniform

    def pair(lo, hi, jitter):
        base = u(lo, hi)
        return (base + u(-jitter, jitter), base + u(-jitter, jitter))

    return {
        # projection: centre, rotation, magnification, vertical shift
        "x0": 0.5 + rng.normal(0.0, 0.012),
        "angle": np.deg2rad(rng.normal(0.0, 1.5)),
        "scale": u(0.9, 1.04),
        "dy": u(-0.03, 0.03),
        # body
        "body_hw": u(0.44, 0.5),
        "neck_hw": u(0.08, 0.11),
        "shoulder_y": u(0.1, 0.16),
        # lungs: capsule = ellipse (upper part) over a vertical lateral wall
        "lung_uc": pair(0.19, 0.21, 0.006),
        "lung_ru": pair(0.155, 0.175, 0.006),
        "lung_yc": pair(0.43, 0.47, 0.01),
        "lung_ry": pair(0.31, 0.35, 0.01),
        "dome_y": (u(0.66, 0.71), u(0.68, 0.73)),  # the right dome is usually higher
        "dome_u": pair(0.15, 0.19, 0.01),
        "dome_a": pair(1.3, 2.0, 0.15),
        "medi_hw": u(0.05, 0.065),
        "knob": u(0.015, 0.03),
        "heart_cx": u(0.06, 0.09),
        "heart_cy": u(0.6, 0.64),
        "heart_rx": u(0.15, 0.18),
        "heart_ry": u(0.12, 0.15),
        # bones
        "rib_y1": pair(0.08, 0.11, 0.008),
        "rib_s0": u(0.044, 0.052),
        "rib_s1": u(0.0012, 0.0022),
        "rib_alpha": u(0.55, 0.75),
        "rib_curl": u(1.6, 2.2),
        "rib_frac": u(0.32, 0.4),
        "ant_y1": pair(0.1, 0.14, 0.01),
        "ant_s0": u(0.055, 0.07),
        "ant_slope": u(0.3, 0.45),
        "clav_y": pair(0.14, 0.19, 0.01),
        "clav_slope": u(0.2, 0.35),
        # attenuation of each tissue (arbitrary units; soft tissue ~0.6)
        "a_soft": u(0.55, 0.65),
        "a_air": u(0.3, 0.38),
        "a_bone": u(0.09, 0.14),
        "a_vessel": u(0.096, 0.144),
        "a_texture": u(0.012, 0.02),
        "ptx_air": u(0.1, 0.35),
        "a_line": u(0.09, 0.14),
        # exposure and detector
        "gain": u(0.85, 1.25),
        "offset": u(-0.06, 0.06),
        "gamma": u(0.75, 1.35),
        "gradient": tuple(rng.normal(0.0, 0.06, size=2)),
        "noise": u(0.01, 0.03),
    }


def _draw_pneumothorax(rng, positive):
    """Returns a list of per-side region descriptions (empty for a negative)."""
    if not positive:
        return []

    def region(side, size_class, kinds_p):
        kind = ("apical", "lateral", "apicolateral")[rng.choice(3, p=kinds_p)]
        lo, hi = _DEPTH_RANGE[size_class]
        return {
            "side": side,
            "kind": kind,
            "size_class": size_class,
            "depth": float(rng.uniform(lo, hi)),
            # extent along the wall, as fractions of the lung height (apex 0, base 1)
            "apical_end": float(rng.uniform(0.22, 0.42)),
            "lateral_centre": float(rng.uniform(0.35, 0.6)),
            "lateral_half": float(rng.uniform(0.2, 0.35)),
            "apicolateral_end": float(rng.uniform(0.5, 0.8)),
            "apicolateral_floor": float(rng.uniform(0.0, 0.3)),
        }

    if rng.random() < _BILATERAL_P:
        return [region(side, SIZE_CLASSES[rng.integers(2)], (0.4, 0.4, 0.2)) for side in SIDES]
    side = SIDES[rng.integers(2)]
    size_class = SIZE_CLASSES[rng.choice(3, p=_SIZE_P)]
    return [region(side, size_class, _KIND_P[size_class])]


def _extent_profile(reg, t):
    """How much of the region's depth applies at relative lung height `t` (0 apex, 1 base)."""
    if reg["kind"] == "apical":
        return 1.0 - _smoothstep((t - 0.08) / (reg["apical_end"] - 0.08))
    if reg["kind"] == "lateral":
        return 1.0 - _smoothstep((np.abs(t - reg["lateral_centre"]) - 0.05) / reg["lateral_half"])
    fade = _smoothstep((t - reg["apicolateral_end"]) / 0.25)
    return 1.0 - (1.0 - reg["apicolateral_floor"]) * fade


# ----------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------
def _coordinates(p, hw):
    """Image pixel centres -> anatomical coordinates (xa lateral signed, + = patient's left; ya down)."""
    h, w = hw
    Y = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None] - 0.5
    X = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :] - p["x0"]
    c, s = np.cos(p["angle"]), np.sin(p["angle"])
    xa = (c * X + s * Y) / p["scale"]
    ya = 0.5 + (-s * X + c * Y) / p["scale"] - p["dy"]
    return xa.astype(np.float32), ya.astype(np.float32)


def _to_pixels(p, hw, xa, ya):
    """Anatomical coordinates -> (row, col) pixel coordinates (inverse of `_coordinates`)."""
    h, w = hw
    c, s = np.cos(p["angle"]), np.sin(p["angle"])
    xr, yr = xa * p["scale"], (ya - 0.5 + p["dy"]) * p["scale"]
    X = c * xr - s * yr + p["x0"]
    Y = s * xr + c * yr + 0.5
    return Y * h - 0.5, X * w - 0.5


def _vessel_tree(p, rng, hw):
    """Branching vessel trees from each hilum, splatted and blurred; thicker, brighter vessels centrally."""
    h, w = hw
    points = {True: [], False: []}  # thick (first generations) and thin vessels: rows, cols, weights
    step = 0.7 / max(h, w)  # sample spacing along a segment (normalised units)
    for side_index, sign in ((0, -1.0), (1, 1.0)):
        hilum_u = p["medi_hw"] + (0.05 if side_index == 0 else 0.045)
        hilum_y = p["lung_yc"][side_index] - 0.01 * side_index
        angles = np.deg2rad(np.linspace(-100.0, 70.0, _VESSEL_TRUNKS) + rng.uniform(-10, 10, _VESSEL_TRUNKS))
        # trunks leave the hilum from points spread over its height, so they do not meet in one spot
        starts = np.stack(
            [
                hilum_u + rng.uniform(0.0, 0.025, _VESSEL_TRUNKS),
                hilum_y + np.linspace(-0.05, 0.05, _VESSEL_TRUNKS) + rng.uniform(-0.01, 0.01, _VESSEL_TRUNKS),
            ],
            axis=1,
        )
        length = rng.uniform(0.055, 0.07)
        for gen in range(_VESSEL_GENERATIONS):
            n_seg = len(angles)
            lengths = length * rng.uniform(0.8, 1.2, n_seg)
            ends = starts + lengths[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
            n_pts = int(np.ceil(length * 1.2 / step)) + 1
            t = np.linspace(0.0, 1.0, n_pts)[None, :]
            u = starts[:, :1] + t * (ends[:, :1] - starts[:, :1])
            y = starts[:, 1:] + t * (ends[:, 1:] - starts[:, 1:])
            rows, cols = _to_pixels(p, hw, sign * u.ravel(), y.ravel())
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
        acc = _splat(*(np.concatenate(v) for v in zip(*points[is_thick])), hw)
        sig = (max(0.6, sigma * h), max(0.6, sigma * w))
        # Points 0.7 px apart blurred across the line peak at 1 / (0.7 sqrt(2 pi) sigma): undo that so a
        # vessel's contrast does not depend on the resolution.
        norm = np.sqrt(2.0 * np.pi) * 0.5 * (sig[0] + sig[1]) * 0.7
        blurred = ndimage.gaussian_filter(acc, sig, mode="constant") * norm
        out += contrast * blurred
    return out


def _splat(rows, cols, weight, hw):
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


def _largest_component(mask):
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count <= 1:
        return mask
    return labels == 1 + np.argmax(np.bincount(labels.ravel())[1:])


def _rib_family(u, yprime, s0, s1, frac, edge, cortex):
    """Bands at yprime = s0*k + s1*k**2 (k = 0, 1, ...), `frac` of the local spacing thick."""
    yp = np.maximum(yprime, 0.0)
    k = np.floor((-s0 + np.sqrt(s0 * s0 + 4.0 * s1 * yp)) / (2.0 * s1))
    inside = yp - (s0 * k + s1 * k * k)
    thickness = frac * (s0 + s1 * (2.0 * k + 1.0))
    alpha = np.clip(inside / edge + 0.5, 0, 1) * np.clip((thickness - inside) / edge + 0.5, 0, 1)
    margin = 0.18 * thickness
    rim = np.exp(-((inside / margin) ** 2)) + np.exp(-(((thickness - inside) / margin) ** 2))
    return alpha * ((1.0 - cortex) + cortex * np.minimum(rim, 1.0)) * (yprime > -edge) * (k < 12)


def _render(p, regions, rng, hw, bit_depth):
    h, w = hw
    px = 1.0 / (min(h, w) * p["scale"])  # one pixel in anatomical units
    xa, ya = _coordinates(p, hw)
    u = np.abs(xa)
    left = xa > 0

    def per_side(name):
        right, left_value = p[name]
        return np.where(left, np.float32(left_value), np.float32(right))

    # --- body: elliptical cross-section below the shoulders, the neck above -------------------------------
    rise = np.sqrt(np.clip((ya + 0.02) / (p["shoulder_y"] + 0.06), 0.0, 1.0))  # sloping shoulders
    half_width = p["neck_hw"] + (p["body_hw"] - p["neck_hw"]) * rise
    thickness = np.sqrt(np.clip(1.0 - (xa / half_width) ** 2, 0.0, 1.0))
    atten = p["a_soft"] * np.sqrt(thickness) * (0.85 + 0.15 * _smoothstep(ya / 0.3))

    # --- lungs: signed distances (positive inside), ellipse via the Sampson first-order distance ------
    uc, ru, yc, ry = per_side("lung_uc"), per_side("lung_ru"), per_side("lung_yc"), per_side("lung_ry")
    du, dv = u - uc, ya - yc
    rho = np.sqrt((du / ru) ** 2 + (dv / ry) ** 2) + 1e-6
    grad = np.sqrt((du / ru**2) ** 2 + (dv / ry**2) ** 2) / rho + 1e-6
    ellipse_sd = (1.0 - rho) / grad
    wall_sd = np.where(dv < 0, ellipse_sd, uc + ru - u)  # distance to the chest wall (apex + lateral)
    dome = per_side("dome_y") + per_side("dome_a") * (u - per_side("dome_u")) ** 2
    diaphragm_sd = dome - ya
    knob = np.where(left, p["knob"] * np.exp(-(((ya - 0.33) / 0.035) ** 2)), 0.0)
    mediastinum_sd = u - p["medi_hw"] - knob
    hx, hy = (xa - p["heart_cx"]) / p["heart_rx"], (ya - p["heart_cy"]) / p["heart_ry"]
    heart_rho = np.sqrt(hx * hx + hy * hy)
    heart_sd = (heart_rho - 1.0) * min(p["heart_rx"], p["heart_ry"])
    lung_sd = np.minimum(np.minimum(wall_sd, diaphragm_sd), np.minimum(mediastinum_sd, heart_sd))
    lung = np.clip(lung_sd / px + 0.5, 0.0, 1.0)
    # The air column is thinner near the lung edges (curved chest wall, heart, diaphragm).
    depth = _smoothstep(lung_sd / 0.07)
    atten -= p["a_air"] * lung * (0.5 + 0.5 * depth)
    heart = np.clip(-heart_sd / px + 0.5, 0.0, 1.0)
    atten += 0.03 * heart * _smoothstep(-heart_sd / 0.05)
    abdomen = _smoothstep(-diaphragm_sd / 0.08) * (u < uc + ru + 0.05)
    atten += 0.06 * abdomen * thickness

    # --- pneumothorax: air band between the wall and the lung edge (wall_sd < depth) --------------------
    ptx_mask = np.zeros(hw, bool)
    ptx = np.zeros(hw, np.float32)
    line = np.zeros(hw, np.float32)
    line_sigma = _PLEURAL_SIGMA / p["scale"]
    for reg in regions:
        s_index = SIDES.index(reg["side"])
        this_side = left if s_index == 1 else ~left
        apex = p["lung_yc"][s_index] - p["lung_ry"][s_index]
        base = p["dome_y"][s_index] + 0.04
        t = (ya - apex) / (base - apex)
        # the medial side of the apex counts as chest wall only near the top
        medial = _smoothstep((uc - u) / 0.04) * _smoothstep((ya - apex - 0.08) / 0.08)
        d = reg["depth"] * _extent_profile(reg, t) * (1.0 - medial) * this_side
        gap = wall_sd - d  # < 0 inside the air band
        inside = (gap < 0) & (lung_sd > 0) & (d > 0.15 * px)
        ptx_mask |= _largest_component(inside)  # drop pixels cut off where the band thins out
        ptx = np.maximum(ptx, np.clip(-gap / px + 0.5, 0.0, 1.0) * lung * (d > 0))
        taper = _smoothstep(d / 0.01)
        line = np.maximum(line, np.exp(-0.5 * (gap / line_sigma) ** 2) * taper * lung)
    # In the band the whole air column is air: as dark as the thick central lung, no texture.
    atten -= p["a_air"] * ptx * (p["ptx_air"] * (1.0 - depth) + 0.02)

    # --- lung texture: vessels and parenchyma, absent from the pneumothorax -----------------------------
    texture = p["a_vessel"] * _vessel_tree(p, rng, hw)
    texture += p["a_texture"] * _smooth_noise(rng, hw, 0.003, 0.012)
    atten += texture * lung * (1.0 - ptx) * (0.6 + 0.4 * depth)
    atten += p["a_line"] * line

    # --- bones: spine, posterior and anterior ribs, clavicles --------------------------------------------
    spine = _band(xa, 0.035, px) * (0.75 + 0.25 * np.cos(2 * np.pi * ya / 0.045) ** 2)
    atten += 0.6 * p["a_bone"] * spine * _smoothstep((ya - 0.02) / 0.1)
    trachea = _band(xa - 0.004, 0.016, px) * (1.0 - _smoothstep((ya - 0.25) / 0.08))
    atten -= 0.1 * trachea
    wall = uc + ru + 0.035
    rib_extent = _smoothstep((u - 0.02) / 0.03) * (1.0 - 0.5 * _smoothstep((u - uc - ru + 0.02) / 0.05))
    curl = p["rib_curl"] * u * u
    posterior = _rib_family(
        u, ya - per_side("rib_y1") + p["rib_alpha"] * u - curl, p["rib_s0"], p["rib_s1"], p["rib_frac"], px, 0.45
    )
    anterior = _rib_family(
        u, ya - per_side("ant_y1") - p["ant_slope"] * (wall - u), p["ant_s0"], 0.0008, 0.55, 2 * px, 0.0
    )
    anterior *= _smoothstep((u - 0.1) / 0.06)
    rib_extent *= 1.0 - 0.7 * abdomen  # the dense abdomen hides the lower ribs
    atten += p["a_bone"] * rib_extent * (posterior + 0.4 * anterior)
    clav_centre = per_side("clav_y") - p["clav_slope"] * (u - 0.03) + 0.5 * (u - 0.03) ** 2
    clav_dist = (ya - clav_centre) / np.sqrt(1.0 + (p["clav_slope"] - (u - 0.03)) ** 2)
    clavicle = _band(clav_dist, 0.014, px) * _smoothstep((u - 0.03) / 0.02) * _smoothstep((0.34 - u) / 0.03)
    atten += 1.6 * p["a_bone"] * clavicle * (0.75 + 0.25 * (np.abs(clav_dist) > 0.008))

    # bones and the trachea were added over the whole frame; outside the body there is only air
    atten *= np.minimum(thickness * 6.0, 1.0)

    # --- exposure and detector --------------------------------------------------------------------------
    Y = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None] - 0.5
    X = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :] - 0.5
    intensity = np.clip(p["offset"] + p["gain"] * atten, 0.0, None) ** p["gamma"]
    intensity += p["gradient"][0] * X + p["gradient"][1] * Y
    intensity = np.clip(intensity, 0.0, 1.0)
    noise = rng.standard_normal(hw, dtype=np.float32)
    intensity += p["noise"] * np.sqrt(intensity + 0.02) * noise
    top = (1 << bit_depth) - 1
    image = np.rint(np.clip(intensity, 0.0, 1.0) * top).astype(np.uint8 if bit_depth == 8 else np.uint16)
    return image, ptx_mask, (lung_sd > 0) & ~ptx_mask


def make_phantom(size=IMAGE_SIZE, rng=None, *, positive=None, seed=None, bit_depth=8, conspicuity=1.0):
    """Renders one synthetic chest radiograph with its pneumothorax mask.

    Args:
        size: Image side in pixels, or `(height, width)`; at least 32. Geometry is normalised, so the
            same seed gives the same anatomy at every size.
        rng: A `numpy.random.Generator` to draw from (advanced by the call). Mutually exclusive with `seed`.
        positive: True for a pneumothorax, False for none, None to draw it with probability 0.5.
        seed: Integer seed (or anything `numpy.random.default_rng` accepts) for a reproducible image.
        bit_depth: 8 (uint8 image) or 16 (uint16 image, full 0..65535 range).
        conspicuity: How visible a pneumothorax is; 1 (default) is the calibrated hard setting described in
            docs/data.md. Larger values widen the air band (x `1 + 0.75 (c - 1)`), darken it (x c) and
            brighten the pleural line (x `1 + 0.5 (c - 1)`); the anatomy and the random draws are unchanged.
            The quick start uses 2 so that a small CPU model learns the task in minutes.

    Returns:
        `(image, mask, info)`: `image` a 2-D uint8/uint16 array `(height, width)`, `mask` a bool array of the
        same shape (empty for a negative), and `info` a dict with `positive` (bool), `kind` (`"none"`,
        `"apical"`, `"lateral"`, `"apicolateral"` or `"bilateral"`), `size_class` (`"none"`, `"small"`,
        `"moderate"`, `"large"`; the larger side's for bilateral), `sides` (tuple of the patient's sides,
        `"right"` = image left), `area_fraction` (mask pixels / image pixels) and `regions` (one dict per
        side: side, kind, size_class, depth in image widths).

    Raises:
        ValueError: If `size`, `bit_depth` or `positive` is invalid, or both `rng` and `seed` are given.
    """
    image, mask, info, _ = _make_phantom_layers(
        size, rng, positive=positive, seed=seed, bit_depth=bit_depth, conspicuity=conspicuity
    )
    return image, mask, info


def _check_conspicuity(conspicuity):
    if isinstance(conspicuity, bool) or not isinstance(conspicuity, (int, float)) or not conspicuity > 0:
        raise ValueError(f"conspicuity must be a positive number. Received: conspicuity={conspicuity!r}")
    return float(conspicuity)


def _make_phantom_layers(size, rng, *, positive, seed, bit_depth, conspicuity=1.0):
    """`make_phantom` plus the normal (texture-bearing) lung mask, for the benchmarks and tests."""
    hw = _as_hw(size)
    bit_depth = _check_bit_depth(bit_depth)
    if positive is not None and not isinstance(positive, (bool, np.bool_)):
        raise ValueError(f"positive must be True, False or None. Received: positive={positive!r}")
    if rng is not None and seed is not None:
        raise ValueError(f"Pass either rng or seed, not both. Received: rng={rng!r}, seed={seed!r}")
    if rng is None:
        rng = np.random.default_rng(seed)
    elif not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator. Received: rng={rng!r}")
    if positive is None:
        positive = bool(rng.random() < PHANTOM_POSITIVE_FRACTION)
    conspicuity = _check_conspicuity(conspicuity)
    params = _draw_anatomy(rng)
    regions = _draw_pneumothorax(rng, bool(positive))
    if conspicuity != 1.0:
        # Scaled after the draws so that the random streams, hence the anatomy, stay the same.
        params["ptx_air"] *= conspicuity
        params["a_line"] *= 1.0 + 0.5 * (conspicuity - 1.0)
        for region in regions:
            region["depth"] *= 1.0 + 0.75 * (conspicuity - 1.0)
    image, mask, normal_lung = _render(params, regions, rng, hw, bit_depth)
    if regions:
        kind = "bilateral" if len(regions) > 1 else regions[0]["kind"]
        size_class = max((r["size_class"] for r in regions), key=SIZE_CLASSES.index)
    else:
        kind, size_class = "none", "none"
    info = {
        "positive": bool(positive),
        "kind": kind,
        "size_class": size_class,
        "sides": tuple(r["side"] for r in regions),
        "area_fraction": float(mask.mean()),
        "regions": [
            {"side": r["side"], "kind": r["kind"], "size_class": r["size_class"], "depth": r["depth"]}
            for r in regions
        ],
    }
    return image, mask, info, normal_lung


# ----------------------------------------------------------------------------------------------------
# Data sets
# ----------------------------------------------------------------------------------------------------
def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer. Received: seed={seed!r}")
    return int(seed)


def _balanced_labels(n, seed):
    """Exactly n // 2 positives (one more with probability 1/2 when n is odd), in a seeded random order."""
    rng = np.random.default_rng([seed, n, 0x50544])  # a stream of its own, apart from the samples'
    positives = n // 2 + (n % 2 if rng.random() < PHANTOM_POSITIVE_FRACTION else 0)
    labels = np.zeros(n, bool)
    labels[:positives] = True
    rng.shuffle(labels)
    return labels


def sample_id(index):
    """The id of phantom number `index` in a generated set: `"phantom_00042"`."""
    return f"phantom_{index:05d}"


def generate_phantoms(n, size=IMAGE_SIZE, seed=0, **kwargs):
    """Yields a balanced, seeded set of phantoms.

    Sample `i` is drawn from its own stream (`seed`, `i`), so a sample's anatomy does not depend on `n`;
    which samples are positive is a seeded shuffle with exactly `n // 2` positives when `n` is even.

    Args:
        n: Number of images (>= 1).
        size: Image side or `(height, width)`, as in `make_phantom`.
        seed: Non-negative integer seed of the whole set.
        **kwargs: Passed to `make_phantom` (`bit_depth`, `conspicuity`).

    Yields:
        `(sample_id, image, mask, info)` tuples, ids `"phantom_00000"`, `"phantom_00001"`, ...

    Raises:
        ValueError: If `n`, `size`, `seed` or a keyword is invalid (checked before the first image).
    """
    n = _check_n(n)
    seed = _check_seed(seed)
    _as_hw(size)
    reserved = sorted(set(kwargs) & {"rng", "seed", "positive"})
    if reserved:
        raise ValueError(f"generate_phantoms sets {reserved} itself. Received: {reserved[0]}={kwargs[reserved[0]]!r}")
    unknown = sorted(set(kwargs) - {"bit_depth", "conspicuity"})
    if unknown:
        raise ValueError(f"Unknown argument for make_phantom. Received: {unknown[0]}={kwargs[unknown[0]]!r}")
    _check_bit_depth(kwargs.get("bit_depth", 8))
    _check_conspicuity(kwargs.get("conspicuity", 1.0))
    labels = _balanced_labels(n, seed)

    def samples():
        for index in range(n):
            rng = np.random.default_rng([seed, index])
            image, mask, info = make_phantom(size, rng, positive=bool(labels[index]), **kwargs)
            yield sample_id(index), image, mask, info

    return samples()


def _settings(n, hw, seed, format, bit_depth, conspicuity=1.0):
    extra = {} if conspicuity == 1.0 else {"conspicuity": conspicuity}  # older sets have no key
    return {
        **extra,
        "generator": "ptx_keras.data.phantoms",
        "version": PHANTOM_VERSION,
        "n": n,
        "size": list(hw),
        "seed": seed,
        "format": format,
        "bit_depth": bit_depth,
    }


def _save_png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path, optimize=False, compress_level=1)


def _uid(kind, seed, sample):
    from pydicom.uid import generate_uid

    return generate_uid(prefix=_SIIM_STUDY_ROOT, entropy_srcs=[kind, str(seed), sample])


def write_phantom_dataset(
    path, n, size=IMAGE_SIZE, format="png", seed=0, bit_depth=8, progress=True, conspicuity=1.0
):
    """Writes a phantom data set in one of the layouts the readers accept.

    Layouts (`path` is created):

    - `"png"`: `images/<id>.png` (8- or 16-bit grayscale) and `masks/<id>.png` (uint8, 0/255; an empty
      mask for each negative).
    - `"csv"`: the same images, masks for the positives only, and `manifest.csv` with columns `image`,
      `mask` (empty for negatives), `label`; paths relative to `path`.
    - `"siim"`: SIIM-ACR: `dicom-images-train/<study-uid>/<series-uid>/<ImageId>.dcm` (Secondary Capture,
      MONOCHROME2, `PixelSpacing` 0.14 mm x 1024 / size, `PatientID` = the phantom id; 8-bit JPEG Baseline,
      or uncompressed 16-bit when `bit_depth=16`) and `train-rle.csv` with header `ImageId, EncodedPixels`
      (note the space), `-1` for negatives, and one row per connected region for positives with several
      (bilateral) regions, to be unioned by the reader.

    Finally `phantoms.json` records the settings. Calling again with the same settings returns at once
    without rewriting anything (the set is deterministic).

    Args:
        path: Output folder.
        n: Number of images (balanced: `n // 2` positives when even).
        size: Image side or `(height, width)` (>= 32).
        format: `"png"`, `"csv"` or `"siim"`.
        seed: Non-negative integer seed.
        bit_depth: 8 or 16.
        progress: Show a tqdm progress bar.
        conspicuity: As in `make_phantom` (1 = the calibrated hard setting).

    Returns:
        A summary dict: `path`, the settings (`n`, `size`, `seed`, `format`, `bit_depth`, `version`),
        `positives`, `negatives`, counts per `kinds` and `size_classes`, `written` (False when an
        existing complete set was kept), and `manifest` (the CSV the readers take: `manifest.csv`,
        `train-rle.csv`, or None for `"png"`).

    Raises:
        ValueError: If an argument is invalid (naming it).
        DataError: If `path` already holds a phantom set written with other settings.
    """
    n = _check_n(n)
    hw = _as_hw(size)
    seed = _check_seed(seed)
    bit_depth = _check_bit_depth(bit_depth)
    if format not in PHANTOM_FORMATS:
        raise ValueError(f"format must be one of {PHANTOM_FORMATS}. Received: format={format!r}")
    path = os.path.abspath(os.fspath(path))
    conspicuity = _check_conspicuity(conspicuity)
    settings = _settings(n, hw, seed, format, bit_depth, conspicuity)
    info_path = os.path.join(path, "phantoms.json")
    if os.path.isfile(info_path):
        try:
            with open(info_path) as f:
                existing = json.load(f)
        except (OSError, ValueError) as exc:
            raise DataError(f"{info_path}: unreadable phantom description ({exc}); remove the folder") from None
        keys = set(settings) | ({"conspicuity"} & set(existing))
        differing = {k: existing.get(k) for k in sorted(keys) if existing.get(k) != settings.get(k)}
        if not differing:
            return dict(existing["summary"], written=False)
        raise DataError(
            f"{path} already holds a phantom data set with other settings "
            f"({', '.join(f'{k}={v!r} not {settings.get(k)!r}' for k, v in differing.items())}); "
            "remove it or choose another folder"
        )

    from tqdm.auto import tqdm

    os.makedirs(path, exist_ok=True)
    kinds, size_classes, positives = {}, {}, 0
    manifest_rows, rle_rows = [], []
    for sid, image, mask, info in tqdm(
        generate_phantoms(n, hw, seed, bit_depth=bit_depth, conspicuity=conspicuity),
        total=n,
        desc=f"phantoms ({format})",
        unit="img",
        disable=not progress,
    ):
        positives += info["positive"]
        kinds[info["kind"]] = kinds.get(info["kind"], 0) + 1
        size_classes[info["size_class"]] = size_classes.get(info["size_class"], 0) + 1
        if format in ("png", "csv"):
            os.makedirs(os.path.join(path, "images"), exist_ok=True)
            os.makedirs(os.path.join(path, "masks"), exist_ok=True)
            image_rel = f"images/{sid}.png"
            _save_png(os.path.join(path, image_rel), image)
            mask_rel = f"masks/{sid}.png" if (format == "png" or info["positive"]) else ""
            if mask_rel:
                _save_png(os.path.join(path, mask_rel), mask.astype(np.uint8) * 255)
            manifest_rows.append((image_rel, mask_rel, int(info["positive"])))
        else:
            rle_rows.extend(_write_siim_sample(path, sid, image, mask, seed, bit_depth))

    manifest = None
    if format == "csv":
        manifest = os.path.join(path, "manifest.csv")
        with open(manifest, "w", newline="") as f:
            f.write("image,mask,label\n")
            f.writelines(f"{image},{mask},{label}\n" for image, mask, label in manifest_rows)
    elif format == "siim":
        manifest = os.path.join(path, "train-rle.csv")
        with open(manifest, "w", newline="") as f:
            # SIIM-ACR's exact header and row style: a space after each comma.
            f.write("ImageId, EncodedPixels\n")
            f.writelines(f"{image_id}, {rle}\n" for image_id, rle in rle_rows)
    summary = dict(
        settings,
        path=path,
        positives=positives,
        negatives=n - positives,
        kinds=dict(sorted(kinds.items())),
        size_classes=dict(sorted(size_classes.items())),
        manifest=manifest,
    )
    # Written last: its presence marks a complete set.
    with open(info_path, "w") as f:
        json.dump(dict(settings, summary=summary), f, indent=2)
    return dict(summary, written=True)


def _write_siim_sample(root, sid, image, mask, seed, bit_depth):
    """Writes one DICOM of the SIIM-ACR layout; returns its `(ImageId, rle)` CSV rows."""
    from ptx_keras.data.dicom import write_dicom
    from ptx_keras.data.rle import rle_encode

    image_id = _uid("image", seed, sid)
    folder = os.path.join(root, "dicom-images-train", _uid("study", seed, sid), _uid("series", seed, sid))
    scale = SIIM_SIZE * PHANTOM_SPACING_MM
    write_dicom(
        os.path.join(folder, f"{image_id}.dcm"),
        image,
        photometric="MONOCHROME2",
        spacing=(scale / image.shape[0], scale / image.shape[1]),
        compress="jpeg" if bit_depth == 8 else None,
        patient_id=sid,
        sop_instance_uid=image_id,
    )
    if not mask.any():
        return [(image_id, "-1")]
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return [(image_id, rle_encode(labels == k)) for k in range(1, count + 1)]


if __name__ == "__main__":
    from ptx_keras.cli.phantoms import main

    raise SystemExit(main())
