"""What lies over the chest in the randomised styles: mimics of a pneumothorax, devices and labels.

Mimics (skin folds, bullae, scapular borders, lines along the heart and mediastinum) share one feature or
two of a pneumothorax, a curved edge with an intensity step, a region without lung markings, a hairline,
but they are not one: they are drawn outside the pneumothorax and a margin around it (`keepout`), so they
never enter the mask, on negatives and positives alike. Devices (ECG leads, lines, tubes, wires, a
pacemaker, markers) are drawn with Pillow on a float canvas in pixel coordinates obtained from anatomical
positions through the projection, so they follow the patient's rotation, magnification and crop.
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from ptx_keras.data.phantoms._common import smoothstep

__all__ = ["KEEPOUT_FRACTION", "draw_devices", "draw_mimics", "keepout"]


KEEPOUT_FRACTION = 0.012  # margin kept free of mimics around a pneumothorax, in image sides (>= 2 px)
_LABEL_WORDS = ("PA", "AP", "ERECT", "SITTING", "PORTABLE", "CHEST", "INSP", "1", "2", "WARD")


def keepout(mask, hw):
    """Float32 0/1 layer: the pneumothorax dilated by `KEEPOUT_FRACTION` of the image side."""
    if not mask.any():
        return np.zeros(hw, np.float32)
    radius = max(2, int(round(KEEPOUT_FRACTION * min(hw))))
    return ndimage.binary_dilation(mask, iterations=radius).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# Mimics
# ----------------------------------------------------------------------------------------------------
def _skin_fold(s, an, rng, xa, ya, px):
    """A skin fold: a long gently curved edge; attenuation ramps up over `fold_width` towards it and drops
    at once beyond it (a fold of skin seen edge-on), lung markings continue across it."""
    k = int(rng.integers(2))
    sign = 1.0 if k == 1 else -1.0
    u0 = an["lung_uc"][k] + rng.uniform(-0.02, an["lung_ru"][k] + 0.04)
    y0 = rng.uniform(0.35, 0.75)
    theta = np.deg2rad(rng.uniform(-35.0, 35.0))
    kappa = rng.uniform(-4.0, 4.0)
    length = rng.uniform(0.25, 0.6)
    polarity = 1.0 if rng.random() < 0.5 else -1.0
    amp = s["fold_density"] * rng.uniform(0.7, 1.3)
    tx, ty = np.sin(theta), np.cos(theta)
    dx, dy = xa - sign * u0, ya - y0
    along = dx * tx + dy * ty
    normal = polarity * (dx * ty - dy * tx - 0.5 * kappa * along * along)
    ramp = np.clip(1.0 - normal / s["fold_width"], 0.0, 1.0) * np.clip(normal / px + 0.5, 0.0, 1.0)
    envelope = smoothstep((0.5 * length - np.abs(along)) / (0.25 * length))
    return (amp * ramp * envelope).astype(np.float32)


def _bulla(s, an, rng, xa, ya, lung, px):
    """An apical bulla: a round lucency without markings and a hairline wall; returns (alpha, density)."""
    k = int(rng.integers(2))
    sign = 1.0 if k == 1 else -1.0
    ru, ry = an["lung_ru"][k], an["lung_ry"][k]
    cx = sign * (an["lung_uc"][k] + rng.uniform(-0.4, 0.4) * ru)
    cy = an["lung_yc"][k] - ry + ry * rng.uniform(0.25, 0.6)
    radius = s["bulla_radius"]
    dist = np.sqrt((xa - cx) ** 2 + (ya - cy) ** 2)
    alpha = np.clip((radius - dist) / px + 0.5, 0.0, 1.0) * lung
    wall = np.exp(-0.5 * ((dist - radius) / max(0.0025, 0.6 * px)) ** 2) * lung
    density = -s["a_air"] * rng.uniform(0.05, 0.25) * alpha + rng.uniform(0.03, 0.08) * wall
    return alpha.astype(np.float32), density.astype(np.float32)


def _scapulae(s, an, rng, u, ya, px):
    """The medial borders of both scapulae over the upper lateral lungs: a step, denser laterally."""
    out = np.zeros(u.shape, np.float32)
    offsets = rng.uniform(0.55, 0.95, 2)
    slant = rng.uniform(0.08, 0.18)
    bottom = rng.uniform(0.45, 0.58)
    for k in range(2):
        border = an["lung_uc"][k] + offsets[k] * an["lung_ru"][k] - slant * (ya - 0.15)
        step = np.clip((u - border) / (1.5 * px) + 0.5, 0.0, 1.0)
        vertical = smoothstep((ya - 0.08) / 0.05) * smoothstep((bottom - ya) / 0.06)
        out = np.maximum(out, s["scapula_density"] * step * vertical * smoothstep((u - border) / 0.01 + 1.0))
    return out


def _medial_line(rng, heart_sd, mediastinum_sd, xa, lung, px):
    """A thin bright or dark line along the left heart border or the right mediastinal border."""
    amp = rng.uniform(0.015, 0.04) * (1.0 if rng.random() < 0.5 else -1.0)
    offset = rng.uniform(0.003, 0.01)
    sigma = max(0.002, 0.6 * px)
    if rng.random() < 0.5:
        dist, side = heart_sd, xa > 0
    else:
        dist, side = mediastinum_sd, xa < 0
    return (amp * np.exp(-0.5 * ((dist - offset) / sigma) ** 2) * lung * side).astype(np.float32)


def draw_mimics(s, an, rng, xa, ya, u, lung, heart_sd, mediastinum_sd, px, keep):
    """Draws the mimics the style's factors ask for, outside `keep` (the pneumothorax and its margin).

    Returns:
        A dict: `density` (float32 attenuation to add), `fold` (the skin-fold layer), `bulla_alpha` (where
        lung markings are removed by a bulla), `all` (every mimic's footprint, for tests) and `names`.
    """
    hw = xa.shape
    free = 1.0 - keep
    density = np.zeros(hw, np.float32)
    fold = np.zeros(hw, np.float32)
    names = []
    for _ in range({"none": 0, "one": 1, "two": 2}[s["skin_folds"]]):
        fold = np.maximum(fold, _skin_fold(s, an, rng, xa, ya, px))
    fold *= free
    if fold.any():
        names.append("skin_fold")
    density += fold
    bulla_alpha = np.zeros(hw, np.float32)
    footprint = fold > 0
    if s["bulla"]:
        bulla_alpha, bulla_density = _bulla(s, an, rng, xa, ya, lung, px)
        bulla_alpha *= free
        density += bulla_density * free
        footprint |= (bulla_alpha > 0) | (np.abs(bulla_density * free) > 1e-3)
        names.append("bulla")
    if s["scapula"]:
        scapula = _scapulae(s, an, rng, u, ya, px)
        density += scapula * free
        footprint |= scapula * free > 1e-3
        names.append("scapula")
    if s["medial_line"]:
        medial = _medial_line(rng, heart_sd, mediastinum_sd, xa, lung, px) * free
        density += medial
        footprint |= np.abs(medial) > 1e-3
        names.append("medial_line")
    if s["breasts"]:
        density += _breasts(s, an, rng, xa, ya, px)
        names.append("breasts")
    return {"density": density, "fold": fold, "bulla_alpha": bulla_alpha, "all": footprint, "names": names}


def _breasts(s, an, rng, xa, ya, px):
    """Two soft-tissue domes over the lower zones with a sharp lower edge (not mimics of the finding, but
    a density step across the lung bases)."""
    out = np.zeros(xa.shape, np.float32)
    for k, sign in ((0, -1.0), (1, 1.0)):
        cx = sign * (an["lung_uc"][k] + rng.uniform(0.0, 0.06))
        cy = an["dome_y"][k] - rng.uniform(0.0, 0.06)
        r = s["breast_size"] * rng.uniform(0.9, 1.1)
        rho = np.sqrt(((xa - cx) / (1.2 * r)) ** 2 + ((ya - cy) / r) ** 2)
        inside = np.clip((1.0 - rho) * r / px + 0.5, 0.0, 1.0)
        out += s["breast_density"] * np.sqrt(np.clip(1.0 - rho * rho, 0.0, 1.0) + 0.15) * inside
    return out


# ----------------------------------------------------------------------------------------------------
# Devices and labels
# ----------------------------------------------------------------------------------------------------
def _catmull_rom(points, per_segment=24):
    """A smooth curve through `points` (N, 2) (Catmull-Rom, ends repeated)."""
    p = np.asarray(points, np.float64)
    p = np.vstack([p[:1], p, p[-1:]])
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(
            0.5
            * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3)
        )
    out.append(p[-2:-1])
    return np.vstack(out)


class _Canvas:
    """A float canvas the devices are drawn on, in anatomical coordinates."""

    def __init__(self, proj):
        self.proj = proj
        h, w = proj.hw
        self.image = Image.new("F", (w, h), 0.0)
        self.draw = ImageDraw.Draw(self.image)

    def xy(self, points):
        rows, cols = self.proj.to_pixels(np.asarray(points)[:, 0], np.asarray(points)[:, 1])
        return list(zip(cols.tolist(), rows.tolist()))

    def width(self, anatomical):
        return max(1, int(round(anatomical / self.proj.px)))

    def curve(self, control, width, value):
        self.draw.line(self.xy(_catmull_rom(control)), fill=float(value), width=self.width(width), joint="curve")

    def tube(self, control, width, value, stripe=None):
        """Two walls and a lumen; `stripe` adds a radio-opaque line along one wall."""
        path = self.xy(_catmull_rom(control))
        self.draw.line(path, fill=float(value), width=self.width(width), joint="curve")
        self.draw.line(path, fill=float(0.35 * value), width=max(1, self.width(width) - 2), joint="curve")
        if stripe is not None:
            offset = np.asarray(control, np.float64) + [0.35 * width, 0.0]
            self.curve(offset, 0.3 * width, stripe)

    def disc(self, centre, radius, value, outline=None, ring=0.0):
        (x, y), r = self.xy([centre])[0], radius / self.proj.px
        box = [x - r, y - r, x + r, y + r]
        if outline is None:
            self.draw.ellipse(box, fill=float(value))
        else:
            self.draw.ellipse(box, fill=float(value), outline=float(outline), width=self.width(ring))

    def box(self, centre, half_w, half_h, value, radius=0.0, outline=None, ring=0.0):
        (x, y) = self.xy([centre])[0]
        hw_, hh = half_w / self.proj.px, half_h / self.proj.px
        self.draw.rounded_rectangle(
            [x - hw_, y - hh, x + hw_, y + hh],
            radius=radius / self.proj.px,
            fill=float(value),
            outline=None if outline is None else float(outline),
            width=self.width(ring) if outline is not None else 0,
        )

    def array(self):
        return np.asarray(self.image, np.float32)


def _lead_out(rng, start):
    """Control points of a lead from `start` wandering off the top or the side of the frame."""
    x, y = start
    exit_x = np.sign(x or 1.0) * rng.uniform(0.5, 0.7) if rng.random() < 0.5 else x + rng.uniform(-0.2, 0.2)
    exit_y = -0.1 if abs(exit_x) < 0.5 else rng.uniform(-0.1, 0.6)
    mid = [(x + exit_x) / 2 + rng.uniform(-0.08, 0.08), (y + exit_y) / 2 + rng.uniform(-0.08, 0.08)]
    return [start, mid, [exit_x, exit_y]]


def _ecg(canvas, rng, square):
    for _ in range(int(rng.integers(2, 6))):
        centre = [rng.choice([-1.0, 1.0]) * rng.uniform(0.08, 0.42), rng.uniform(0.08, 0.78)]
        radius = rng.uniform(0.012, 0.02)
        if square:
            canvas.box(centre, radius * 1.3, radius * 1.3, 0.15, radius=0.15 * radius, outline=0.35, ring=0.003)
        else:
            canvas.disc(centre, radius, 0.1, outline=0.6, ring=0.25 * radius)
        canvas.disc(centre, 0.3 * radius, 1.0)
        canvas.curve(_lead_out(rng, centre), rng.uniform(0.002, 0.004), 0.7)


def _svc_path(an, rng, start):
    """Control points from `start` through the veins to the superior vena cava (right of the mediastinum)."""
    svc = [-0.6 * an["medi_hw"], rng.uniform(0.3, 0.42)]
    return [start, [np.sign(start[0]) * 0.08, rng.uniform(0.17, 0.23)], [-0.7 * an["medi_hw"], 0.24], svc]


def _central_line(canvas, an, rng):
    side = rng.choice([-1.0, 1.0])
    start = [side * rng.uniform(0.14, 0.25), rng.uniform(0.1, 0.17)]
    canvas.tube(_svc_path(an, rng, start), 0.005, 0.5)
    canvas.curve(_lead_out(rng, start), 0.004, 0.45)


def _et_tube(canvas, rng):
    tip = rng.uniform(0.22, 0.3)
    canvas.tube([[0.004, -0.1], [0.003, tip / 2], [0.004, tip]], 0.014, 0.25, stripe=0.8)


def _ng_tube(canvas, an, rng):
    path = [[0.01, -0.1], [0.025, 0.3], [0.035, 0.55], [0.08, an["dome_y"][1] + 0.05], [0.14, rng.uniform(0.8, 0.9)]]
    canvas.tube(path, 0.006, 0.45, stripe=0.8)


def _wires(canvas, rng):
    for _ in range(int(rng.integers(1, 3))):
        points = [[rng.uniform(-0.6, 0.6), rng.uniform(-0.1, 1.1)] for _ in range(4)]
        canvas.curve(points, rng.uniform(0.0015, 0.003), 0.8)


def _pacemaker(canvas, an, rng):
    side = 1.0 if rng.random() < 0.75 else -1.0
    centre = [side * rng.uniform(0.22, 0.3), rng.uniform(0.12, 0.2)]
    canvas.box(centre, 0.032, 0.024, 1.0, radius=0.012)
    canvas.box(centre, 0.018, 0.01, 0.6, radius=0.004)
    for lead in range(int(rng.integers(1, 3))):
        tip = [an["medi_hw"] * 0.3 + 0.05 * lead, an["heart_cy"] + rng.uniform(0.0, 0.06)]
        path = _svc_path(an, rng, centre)[:-1] + [[-0.5 * an["medi_hw"], an["heart_cy"] - 0.08], tip]
        canvas.curve(path, 0.003, 0.9)


def _sternal_wires(canvas, rng):
    for y in np.linspace(0.24, 0.56, int(rng.integers(4, 7))) + rng.uniform(-0.01, 0.01):
        x = rng.uniform(-0.006, 0.006)
        canvas.disc([x, y], 0.012, 0.0, outline=1.0, ring=0.003)
        canvas.disc([x + 0.012, y], 0.004, 1.0)


def _port(canvas, an, rng):
    side = rng.choice([-1.0, 1.0])
    centre = [side * rng.uniform(0.16, 0.26), rng.uniform(0.16, 0.24)]
    canvas.disc(centre, 0.016, 0.5, outline=1.0, ring=0.004)
    canvas.tube(_svc_path(an, rng, centre), 0.005, 0.5)


def _necklace(canvas, rng):
    depth = rng.uniform(0.1, 0.2)
    t = np.linspace(-1.0, 1.0, int(rng.integers(20, 40)))
    for x, y in zip(0.09 * t, depth * (1.0 - t * t) - 0.02):
        canvas.disc([x, y], 0.003, 1.0)


def _font(pixels):
    return ImageFont.load_default(size=max(4, int(pixels)))


def _marker(canvas, rng, kind, hw):
    h, w = hw
    size = 0.05 * min(h, w)
    letter = "R" if rng.random() < 0.5 else "L"
    x = rng.uniform(0.04, 0.12) * w if rng.random() < 0.5 else w - rng.uniform(0.08, 0.16) * w
    y = rng.uniform(0.03, 0.1) * h if kind == "letter" else h - rng.uniform(0.1, 0.16) * h
    if kind == "boxed":
        pad = 0.25 * size
        frame = [x - pad, y - pad, x + 0.8 * size + pad, y + size + pad]
        canvas.draw.rectangle(frame, outline=1.0, width=max(1, int(0.1 * size)))
    canvas.draw.text((x, y), letter, fill=1.0, font=_font(size))


def _label(rng, hw):
    """Burned-in white text (after processing): a float layer of its brightness."""
    h, w = hw
    image = Image.new("F", (w, h), 0.0)
    draw = ImageDraw.Draw(image)
    words = [_LABEL_WORDS[i] for i in rng.choice(len(_LABEL_WORDS), int(rng.integers(1, 4)), replace=False)]
    text = " ".join(words)
    if rng.random() < 0.5:
        text += f" {int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 60)):02d}"
    size = rng.uniform(0.025, 0.04) * min(h, w)
    x = rng.uniform(0.02, 0.5) * w
    y = rng.uniform(0.01, 0.05) * h if rng.random() < 0.6 else h - rng.uniform(0.05, 0.09) * h
    draw.text((x, y), text, fill=float(rng.uniform(0.85, 1.0)), font=_font(size))
    return np.asarray(image, np.float32)


_DRAWERS = {
    "ecg": lambda c, an, rng: _ecg(c, rng, square=False),
    "pads": lambda c, an, rng: _ecg(c, rng, square=True),
    "central_line": _central_line,
    "et_tube": lambda c, an, rng: _et_tube(c, rng),
    "ng_tube": _ng_tube,
    "wires": lambda c, an, rng: _wires(c, rng),
    "pacemaker": _pacemaker,
    "sternal_wires": lambda c, an, rng: _sternal_wires(c, rng),
    "port": _port,
    "necklace": lambda c, an, rng: _necklace(c, rng),
}


def draw_devices(s, an, rng, proj):
    """Draws the style's devices, side marker and label.

    Returns:
        A dict: `density` (float32 0..1 layer, multiplied by the device attenuation), `burned_in` (float32
        brightness of burned-in text, 0 elsewhere) and `names` (what was drawn).
    """
    hw = proj.hw
    canvas = _Canvas(proj)
    names = list(s["devices"])
    for name in names:
        _DRAWERS[name](canvas, an, rng)
    if s["marker"] != "none":
        _marker(canvas, rng, s["marker"], hw)
        names.append("marker")
    density = canvas.array()
    if density.any():
        density = ndimage.gaussian_filter(density, 0.5)  # the focal spot's blur; also anti-aliases the edges
    burned_in = _label(rng, hw) if s["label"] else np.zeros(hw, np.float32)
    if s["label"]:
        names.append("label")
    return {"density": density, "burned_in": burned_in, "names": names}
