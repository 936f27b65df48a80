"""The classic phantom style: the original generator, kept bit for bit (`style="classic"`).

Each image models, in an attenuation-like scale:

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

Every image has the same style (one exposure model, one noise model, no devices or mimics): a model trained
on it learns that style. `ptx_keras.data.phantoms.styled` draws the randomised styles.
"""

import numpy as np

from ptx_keras.data.phantoms._common import band as _band
from ptx_keras.data.phantoms._common import largest_component as _largest_component
from ptx_keras.data.phantoms._common import rib_family as _rib_family
from ptx_keras.data.phantoms._common import smooth_noise as _smooth_noise
from ptx_keras.data.phantoms._common import smoothstep as _smoothstep
from ptx_keras.data.phantoms._common import vessel_tree

__all__ = ["SIDES", "SIZE_CLASSES", "draw_anatomy", "draw_pneumothorax", "extent_profile", "render"]


SIDES = ("right", "left")  # the patient's sides; "right" is the image's left half
SIZE_CLASSES = ("small", "moderate", "large")

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


# ----------------------------------------------------------------------------------------------------
# Random parameters
# ----------------------------------------------------------------------------------------------------
def draw_anatomy(rng):
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


def draw_pneumothorax(rng, positive):
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


def extent_profile(reg, t):
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


def render(p, regions, rng, hw, bit_depth):
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
        d = reg["depth"] * extent_profile(reg, t) * (1.0 - medial) * this_side
        gap = wall_sd - d  # < 0 inside the air band
        inside = (gap < 0) & (lung_sd > 0) & (d > 0.15 * px)
        ptx_mask |= _largest_component(inside)  # drop pixels cut off where the band thins out
        ptx = np.maximum(ptx, np.clip(-gap / px + 0.5, 0.0, 1.0) * lung * (d > 0))
        taper = _smoothstep(d / 0.01)
        line = np.maximum(line, np.exp(-0.5 * (gap / line_sigma) ** 2) * taper * lung)
    # In the band the whole air column is air: as dark as the thick central lung, no texture.
    atten -= p["a_air"] * ptx * (p["ptx_air"] * (1.0 - depth) + 0.02)

    # --- lung texture: vessels and parenchyma, absent from the pneumothorax -----------------------------
    texture = p["a_vessel"] * vessel_tree(p, rng, hw, lambda xa, ya: _to_pixels(p, hw, xa, ya))
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
