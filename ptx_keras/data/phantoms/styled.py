"""The randomised phantom styles (`style="varied"` and `style="heldout"`): anatomy, pneumothorax, rendering.

One phantom is drawn in three steps from its random stream: the style's factors (`styles.draw_style`), the
pneumothorax regions, then the rendering (`render`), which builds an attenuation image in anatomical
coordinates (so the mask is exact at any size), adds mimics and devices (`overlays`), and exposes and
processes it like a detector would (`processing`).

The pneumothorax is air between the chest wall (or, for a basal one, the diaphragm) and the lung: a band of
depth `d` along the wall, without lung markings, darker by a random amount (possibly not at all), bounded
by the visceral pleural line of random brightness (possibly faint). Its mask is, by construction, the
drawn band: `mask == (ptx_alpha >= 0.5)` where `ptx_alpha` is the layer the image is rendered with.
"""

import numpy as np
from scipy import ndimage

from ptx_keras.data.phantoms import overlays, processing
from ptx_keras.data.phantoms._common import (
    band,
    largest_component,
    rib_family,
    smooth_noise,
    smoothstep,
    vessel_tree,
)
from ptx_keras.data.phantoms.classic import SIDES, SIZE_CLASSES, extent_profile
from ptx_keras.data.phantoms.styles import draw_factor, draw_style

__all__ = ["MIN_DEPTH_PX", "Projection", "draw_anatomy", "draw_and_render", "draw_pneumothorax", "render"]


MIN_DEPTH_PX = 1.5  # a pneumothorax is at least this deep at the rendered size, so a positive has a mask


class Projection:
    """Maps image pixels to anatomical coordinates and back.

    Anatomical coordinates: `xa` lateral (0 at the midline, + towards the patient's left, which is the image's
    right), `ya` downwards (0 at the top of the frame of an unmoved patient), both in image widths of the
    patient at scale 1. The projection rotates, shifts, magnifies (per axis) and tilts (a keystone: vertical
    stretch growing downwards); cropping is extra magnification towards an edge.
    """

    def __init__(self, s, hw):
        self.hw = hw
        zoom = s["crop_zoom"] if s["crop"] else 1.0
        scale = s["scale"] * zoom
        root = np.sqrt(s["aspect"])
        self.sx, self.sy = scale * root, scale / root
        self.shift_x, self.shift_y = s["shift_x"], s["shift_y"]
        if s["crop"]:
            push = 0.35 * (zoom - 1.0)
            dx, dy = {"top": (0, -1), "bottom": (0, 1), "right": (-1, 0), "left": (1, 0)}[s["crop_edge"]]
            self.shift_x += dx * push
            self.shift_y += dy * push
        angle = np.deg2rad(s["rotation_deg"])
        self.c, self.s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        self.tilt = s["tilt"]
        h, w = hw
        self.px = max(1.0 / (w * self.sx), 1.0 / (h * self.sy))  # one pixel in anatomical units (the coarser)

    def grid(self):
        """`(xa, ya)` float32 arrays `(height, width)` at the pixel centres."""
        h, w = self.hw
        Y = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None] - 0.5 - self.shift_y
        X = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :] - 0.5 - self.shift_x
        xa = (self.c * X + self.s * Y) / self.sx
        y0 = (-self.s * X + self.c * Y) / self.sy
        ya = 0.5 + y0 + self.tilt * y0 * y0
        return xa.astype(np.float32), ya.astype(np.float32)

    def to_pixels(self, xa, ya):
        """Anatomical coordinates -> `(rows, cols)` (fractional pixel positions; the inverse of `grid`)."""
        xa, ya = np.asarray(xa, np.float64), np.asarray(ya, np.float64)
        if abs(self.tilt) > 1e-9:
            y0 = (-1.0 + np.sqrt(np.maximum(1.0 + 4.0 * self.tilt * (ya - 0.5), 0.0))) / (2.0 * self.tilt)
        else:
            y0 = ya - 0.5
        xr, yr = xa * self.sx, y0 * self.sy
        X = float(self.c) * xr - float(self.s) * yr + self.shift_x
        Y = float(self.s) * xr + float(self.c) * yr + self.shift_y
        h, w = self.hw
        return (Y + 0.5) * h - 0.5, (X + 0.5) * w - 0.5


# ----------------------------------------------------------------------------------------------------
# Random draws
# ----------------------------------------------------------------------------------------------------
def draw_anatomy(s, rng):
    """Per-side anatomy (`(right, left)` pairs) derived from the style's factors `s`, with its asymmetry."""
    a = s["asymmetry"]

    def pair(value):
        return (value + rng.uniform(-a, a), value + rng.uniform(-a, a))

    lung_yc, lung_ry = pair(s["lung_yc"]), pair(s["lung_ry"])
    right_dome = lung_yc[0] + s["dome_frac"] * lung_ry[0]
    dome_y = (right_dome, right_dome + rng.uniform(0.0, 0.03))  # the right dome is usually higher
    return {
        "lung_uc": pair(s["lung_uc"]),
        "lung_ru": pair(s["lung_ru"]),
        "lung_yc": lung_yc,
        "lung_ry": lung_ry,
        "dome_y": dome_y,
        "dome_u": pair(s["lung_uc"] - rng.uniform(0.01, 0.04)),
        "dome_a": pair(s["dome_a"]),
        "rib_y1": pair(s["rib_y1"]),
        "ant_y1": pair(s["rib_y1"] + rng.uniform(0.02, 0.04)),
        "clav_y": pair(s["clav_y"]),
        "heart_cy": dome_y[0] - s["heart_dy"],
        "medi_hw": s["medi_hw"],
    }


def draw_pneumothorax(style, s, rng, positive):
    """The pneumothorax regions of a phantom of `style` with factors `s` (one per affected side; empty for a
    negative)."""
    if not positive:
        return []

    def region(side, size_class):
        kind = s["ptx_kind"] if size_class != "large" or s["ptx_kind"] != "apical" else "apicolateral"
        return {
            "side": side,
            "kind": kind,
            "size_class": size_class,
            "depth": s[f"ptx_depth_{size_class}"],
            "apical_end": float(rng.uniform(0.18, 0.42)),
            "lateral_centre": float(rng.uniform(0.35, 0.6)),
            "lateral_half": float(rng.uniform(0.2, 0.35)),
            "apicolateral_end": float(rng.uniform(0.5, 0.8)),
            "apicolateral_floor": float(rng.uniform(0.0, 0.3)),
            "basal_start": float(rng.uniform(0.45, 0.7)),
        }

    if s["ptx_bilateral"]:
        first = int(rng.integers(2))
        main = region(SIDES[first], s["ptx_size"])
        # the other side: its own size class (at most the first's) and depth
        other = SIZE_CLASSES[rng.integers(SIZE_CLASSES.index(s["ptx_size"]) + 1)]
        second = region(SIDES[1 - first], other)
        second["depth"] = draw_factor(style, f"ptx_depth_{other}", rng)
        return sorted([main, second], key=lambda r: SIDES.index(r["side"]))
    return [region(SIDES[rng.integers(2)], s["ptx_size"])]


def _basal_profile(reg, t):
    return smoothstep((t - reg["basal_start"]) / 0.2)


# ----------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------
def render(s, anatomy, regions, rng, hw):
    """Renders one phantom.

    Args:
        s: The style's factors (`styles.draw_style`).
        anatomy: Per-side anatomy (`draw_anatomy`).
        regions: Pneumothorax regions (`draw_pneumothorax`).
        rng: The phantom's random stream (texture, noise, mimics and devices are drawn from it).
        hw: `(height, width)`.

    Returns:
        `(intensity, layers, extras)`: `intensity` float32 `(height, width)` in [0, 1]; `layers` a dict of
        float32/bool arrays: `ptx_alpha` (the drawn pneumothorax, soft 0..1), `mask` (`ptx_alpha >= 0.5`),
        `normal_lung` (lung pixels outside the pneumothorax), `fold` (skin-fold layer), `mimic` (all mimic
        layers), `device` (device layer); `extras` lists the mimics and devices drawn.
    """
    an = anatomy
    proj = Projection(s, hw)
    px = proj.px
    xa, ya = proj.grid()
    u = np.abs(xa)
    left = xa > 0

    def per_side(pair):
        return np.where(left, np.float32(pair[1]), np.float32(pair[0]))

    # --- body: habitus, neck and shoulders, breasts ------------------------------------------------------
    rise = np.sqrt(np.clip((ya + 0.02) / (s["shoulder_y"] + 0.06), 0.0, 1.0))
    half_width = s["neck_hw"] + (s["body_hw"] - s["neck_hw"]) * rise
    thickness = np.sqrt(np.clip(1.0 - (xa / half_width) ** 2, 0.0, 1.0))
    atten = s["a_soft"] * np.sqrt(thickness) * (0.85 + 0.15 * smoothstep(ya / 0.3))

    # --- lungs ----------------------------------------------------------------------------------------------
    uc, ru = per_side(an["lung_uc"]), per_side(an["lung_ru"])
    yc, ry = per_side(an["lung_yc"]), per_side(an["lung_ry"])
    du, dv = u - uc, ya - yc
    rho = np.sqrt((du / ru) ** 2 + (dv / ry) ** 2) + 1e-6
    grad = np.sqrt((du / ru**2) ** 2 + (dv / ry**2) ** 2) / rho + 1e-6
    ellipse_sd = (1.0 - rho) / grad
    wall_sd = np.where(dv < 0, ellipse_sd, uc + ru - u)
    dome = per_side(an["dome_y"]) + per_side(an["dome_a"]) * (u - per_side(an["dome_u"])) ** 2
    diaphragm_sd = dome - ya
    knob = np.where(left, s["knob"] * np.exp(-(((ya - 0.33) / 0.035) ** 2)), 0.0)
    mediastinum_sd = u - s["medi_hw"] - knob
    hx, hy = (xa - s["heart_cx"]) / s["heart_rx"], (ya - an["heart_cy"]) / s["heart_ry"]
    heart_sd = (np.sqrt(hx * hx + hy * hy) - 1.0) * min(s["heart_rx"], s["heart_ry"])
    lung_sd = np.minimum(np.minimum(wall_sd, diaphragm_sd), np.minimum(mediastinum_sd, heart_sd))
    lung = np.clip(lung_sd / px + 0.5, 0.0, 1.0)
    depth = smoothstep(lung_sd / 0.07)
    atten -= s["a_air"] * lung * (0.5 + 0.5 * depth)
    heart = np.clip(-heart_sd / px + 0.5, 0.0, 1.0)
    atten += 0.03 * heart * smoothstep(-heart_sd / 0.05)
    abdomen = smoothstep(-diaphragm_sd / 0.08) * (u < uc + ru + 0.05)
    atten += 0.06 * abdomen * thickness

    # --- pneumothorax: the band between the wall (or the diaphragm) and the lung ------------------------
    ptx_alpha = np.zeros(hw, np.float32)
    line = np.zeros(hw, np.float32)
    collapse = np.zeros(hw, np.float32)
    line_sigma = max(s["line_sigma"] / s["scale"], 0.45 * px)
    for reg in regions:
        k = SIDES.index(reg["side"])
        this_side = left if k == 1 else ~left
        apex = an["lung_yc"][k] - an["lung_ry"][k]
        t = (ya - apex) / (an["dome_y"][k] + 0.04 - apex)
        depth_k = max(reg["depth"], MIN_DEPTH_PX * px)
        if reg["kind"] == "basal":
            boundary = np.minimum(wall_sd, diaphragm_sd)  # air under the lung base and in the sulcus
            lateral_only = smoothstep((u - (uc - 0.3 * ru)) / 0.05)
            d = depth_k * _basal_profile(reg, t) * lateral_only * this_side
        else:
            boundary = wall_sd
            medial = smoothstep((uc - u) / 0.04) * smoothstep((ya - apex - 0.08) / 0.08)
            d = depth_k * extent_profile(reg, t) * (1.0 - medial) * this_side
        gap = boundary - d  # < 0 inside the band
        inside = (lung_sd > 0) & (d > 0.15 * px)
        alpha = np.clip(-gap / px + 0.5, 0.0, 1.0) * inside
        # one connected band: fragments cut off where it thins out are not drawn (nor, hence, masked)
        kept = largest_component(alpha >= 0.5)
        alpha *= ndimage.binary_dilation(kept, structure=np.ones((3, 3), bool))
        ptx_alpha = np.maximum(ptx_alpha, alpha)
        taper = smoothstep(d / 0.01)
        line = np.maximum(line, np.exp(-0.5 * (gap / line_sigma) ** 2) * taper * lung)
        # the collapsed lung loses air (more so for a large one): it is denser than the other side
        loss = s["collapse"] * min(1.0, reg["depth"] / 0.1)
        collapse = np.maximum(collapse, loss * this_side * (gap > 0))
    mask = ptx_alpha >= 0.5
    atten -= s["a_air"] * ptx_alpha * (s["ptx_air"] * (1.0 - depth) + 0.02)
    atten += s["a_air"] * 0.5 * collapse * lung * (1.0 - ptx_alpha)

    # --- mimics that remove lung markings (bullae) are known before the texture --------------------------
    keepout = overlays.keepout(mask, hw)
    mim = overlays.draw_mimics(s, an, rng, xa, ya, u, lung, heart_sd, mediastinum_sd, px, keepout)

    # --- lung texture: vessels and parenchyma, absent from the pneumothorax and from bullae -------------
    texture = s["a_vessel"] * vessel_tree(
        an, rng, hw, proj.to_pixels, trunks=s["vessel_trunks"], generations=s["vessel_generations"]
    )
    texture += s["a_texture"] * smooth_noise(rng, hw, s["texture_scale"], 4.0 * s["texture_scale"])
    atten += texture * lung * (1.0 - ptx_alpha) * (1.0 - mim["bulla_alpha"]) * (0.6 + 0.4 * depth)
    atten += s["a_line"] * line * (1.0 - mim["bulla_alpha"])

    # --- bones ------------------------------------------------------------------------------------------------
    spine = band(xa, 0.035, px) * (0.75 + 0.25 * np.cos(2 * np.pi * ya / 0.045) ** 2)
    atten += 0.6 * s["a_bone"] * spine * smoothstep((ya - 0.02) / 0.1)
    trachea = band(xa - 0.004, 0.016, px) * (1.0 - smoothstep((ya - 0.25) / 0.08))
    atten -= 0.1 * trachea
    wall = uc + ru + 0.035
    rib_extent = smoothstep((u - 0.02) / 0.03) * (1.0 - 0.5 * smoothstep((u - uc - ru + 0.02) / 0.05))
    curl = s["rib_curl"] * u * u
    posterior = rib_family(
        u,
        ya - per_side(an["rib_y1"]) + s["rib_alpha"] * u - curl,
        s["rib_s0"],
        s["rib_s1"],
        s["rib_frac"],
        px,
        s["rib_cortex"],
    )
    anterior = rib_family(
        u, ya - per_side(an["ant_y1"]) - 0.38 * (wall - u), s["rib_s0"] * 1.25, 0.0008, 0.55, 2 * px, 0.0
    )
    anterior *= smoothstep((u - 0.1) / 0.06)
    rib_extent *= 1.0 - 0.7 * abdomen
    atten += s["a_bone"] * rib_extent * (posterior + 0.4 * anterior)
    clav_centre = per_side(an["clav_y"]) - s["clav_slope"] * (u - 0.03) + 0.5 * (u - 0.03) ** 2
    clav_dist = (ya - clav_centre) / np.sqrt(1.0 + (s["clav_slope"] - (u - 0.03)) ** 2)
    clavicle = band(clav_dist, s["clav_half"], px) * smoothstep((u - 0.03) / 0.02) * smoothstep((0.34 - u) / 0.03)
    atten += 1.6 * s["a_bone"] * clavicle * (0.75 + 0.25 * (np.abs(clav_dist) > 0.55 * s["clav_half"]))

    # --- soft-tissue mimics and breasts, then only air outside the body ----------------------------------
    atten += mim["density"]
    atten *= np.minimum(thickness * 6.0, 1.0)

    # --- devices (metal and contrast stripes) lie on or outside the body ---------------------------------
    dev = overlays.draw_devices(s, an, rng, proj)
    atten += s["a_device"] * dev["density"]

    intensity = processing.expose(atten, s, rng, hw, thickness > 0.3)
    intensity = np.maximum(intensity, dev["burned_in"])  # labels are burned in after processing
    layers = {
        "ptx_alpha": ptx_alpha,
        "mask": mask,
        "normal_lung": (lung_sd > 0) & ~mask,
        "fold": mim["fold"],
        "mimic": mim["all"],
        "device": dev["density"],
        "line": line,
    }
    return intensity, layers, {"mimics": mim["names"], "devices": dev["names"]}


def draw_and_render(style, rng, positive, hw, conspicuity):
    """Draws one phantom of `style` from `rng` and renders it; returns `(intensity, layers, regions, s, extras)`."""
    s = draw_style(style, rng)
    anatomy = draw_anatomy(s, rng)
    regions = draw_pneumothorax(style, s, rng, positive)
    if conspicuity != 1.0:
        # Scaled after the draws (as the classic style does) so that the random streams stay the same.
        s["ptx_air"] *= conspicuity
        s["a_line"] *= 1.0 + 0.5 * (conspicuity - 1.0)
        for region in regions:
            region["depth"] *= 1.0 + 0.75 * (conspicuity - 1.0)
    intensity, layers, extras = render(s, anatomy, regions, rng, hw)
    return intensity, layers, regions, s, extras
