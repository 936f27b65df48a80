"""The randomised phantom styles: every factor the `varied` and `heldout` styles draw, and its distribution.

A style is a table `{factor: distribution}`. `varied` is the training distribution; `heldout` is the same
table with the entries of `HELDOUT_CHANGES` replaced: other anatomy ranges, other detector processing, other
device types and another DICOM export mix, so that a model trained on `varied` can be scored on a style it
never saw (the same finding, drawn differently). docs/data.md prints both tables (`style_table()`), and a
test keeps the two in step.

Distributions are tuples: `("uniform", lo, hi)`, `("loguniform", lo, hi)`, `("normal", mean, sd)` (clipped
to 3 sd), `("integers", lo, hi)` (inclusive), `("bernoulli", p)`, `("fixed", value)`, `("choice", options,
probabilities)` and `("set", options, probabilities)` (each option present independently). Lengths are in
image widths of the patient at scale 1 ("anatomical units"), attenuations in the generator's arbitrary scale
(soft tissue about 0.6), pixel sizes (`_px`) in output pixels.
"""

import hashlib
import json

import numpy as np

from ptx_keras.constants import PHANTOM_STYLE_VERSIONS

__all__ = [
    "EXPORT",
    "HELDOUT_CHANGES",
    "SPECS",
    "VARIED",
    "draw_export",
    "draw_factor",
    "draw_style",
    "spec_fingerprint",
    "style_table",
]


def _u(lo, hi):
    return ("uniform", lo, hi)


def _logu(lo, hi):
    return ("loguniform", lo, hi)


def _n(mean, sd):
    return ("normal", mean, sd)


def _b(p):
    return ("bernoulli", p)


def _i(lo, hi):
    return ("integers", lo, hi)


def _c(**probabilities):
    return ("choice", tuple(probabilities), tuple(probabilities.values()))


# Each entry: factor -> (distribution, what it does). Order matters: it is the order of the random draws.
VARIED = {
    # --- positioning -----------------------------------------------------------------------------------
    "rotation_deg": (_n(0.0, 2.5), "in-plane rotation of the patient (degrees)"),
    "shift_x": (_u(-0.04, 0.04), "horizontal shift of the patient (image widths)"),
    "shift_y": (_u(-0.05, 0.05), "vertical shift (image heights)"),
    "scale": (_u(0.86, 1.08), "magnification (> 1: the chest fills more of the frame)"),
    "aspect": (_u(0.92, 1.08), "horizontal / vertical magnification ratio"),
    "tilt": (_u(-0.25, 0.25), "keystone (lordotic / kyphotic tilt): vertical stretch growing downwards"),
    "crop": (_b(0.15), "cropped: zoomed in towards one edge, part of the chest outside the frame"),
    "crop_zoom": (_u(1.08, 1.25), "extra magnification of a cropped image"),
    "crop_edge": (_c(top=0.3, bottom=0.3, right=0.2, left=0.2), "the edge a cropped image loses"),
    "collimation": (_b(0.2), "collimator shutters: bright unexposed bands along some edges"),
    # --- habitus ---------------------------------------------------------------------------------------
    "body_hw": (_u(0.38, 0.5), "half width of the body"),
    "neck_hw": (_u(0.07, 0.12), "half width of the neck"),
    "shoulder_y": (_u(0.08, 0.18), "height of the shoulders"),
    "a_soft": (_u(0.5, 0.68), "soft-tissue attenuation (body thickness)"),
    "breasts": (_b(0.35), "breast shadows over the lower zones"),
    "breast_size": (_u(0.1, 0.17), "breast radius"),
    "breast_density": (_u(0.03, 0.09), "breast attenuation"),
    # --- lungs, heart, mediastinum -------------------------------------------------------------------------
    "lung_uc": (_u(0.17, 0.22), "distance of a lung's axis from the midline"),
    "lung_ru": (_u(0.135, 0.185), "lung half width"),
    "lung_yc": (_u(0.41, 0.48), "height of the lung's centre"),
    "lung_ry": (_u(0.27, 0.35), "lung half height"),
    "asymmetry": (_u(0.0, 0.015), "largest right/left difference of each lung dimension"),
    "dome_frac": (_u(0.6, 0.85), "diaphragm dome height, as a fraction of the lung's lower half"),
    "dome_a": (_u(1.0, 2.4), "dome curvature (0 = flat)"),
    "a_air": (_u(0.28, 0.4), "lung air (darkness of the lung fields)"),
    "medi_hw": (_u(0.045, 0.075), "mediastinum half width"),
    "knob": (_u(0.01, 0.035), "aortic knob"),
    "heart_cx": (_u(0.04, 0.1), "heart centre, towards the patient's left"),
    "heart_dy": (_u(0.05, 0.1), "heart centre above the right dome"),
    "heart_rx": (_u(0.12, 0.18), "heart half width (cardiothoracic ratio about 0.3-0.55)"),
    "heart_ry": (_u(0.1, 0.15), "heart half height"),
    "vessel_trunks": (_i(4, 7), "vessel trunks per hilum"),
    "vessel_generations": (_i(5, 6), "vessel branching generations"),
    "a_vessel": (_u(0.07, 0.16), "vessel attenuation"),
    "a_texture": (_u(0.008, 0.025), "parenchymal texture amplitude"),
    "texture_scale": (_u(0.002, 0.005), "parenchymal texture grain"),
    # --- bones -------------------------------------------------------------------------------------------
    "a_bone": (_u(0.06, 0.16), "bone attenuation"),
    "rib_y1": (_u(0.07, 0.12), "height of the first posterior rib"),
    "rib_s0": (_u(0.038, 0.054), "posterior rib spacing at the top"),
    "rib_s1": (_u(0.0008, 0.0024), "growth of the rib spacing downwards"),
    "rib_alpha": (_u(0.4, 0.85), "rib slope (angle)"),
    "rib_curl": (_u(1.3, 2.5), "rib curvature"),
    "rib_frac": (_u(0.26, 0.42), "rib thickness, as a fraction of the spacing"),
    "rib_cortex": (_u(0.2, 0.6), "cortical margin contrast"),
    "clav_y": (_u(0.11, 0.21), "clavicle height"),
    "clav_slope": (_u(0.1, 0.4), "clavicle slope"),
    "clav_half": (_u(0.009, 0.017), "clavicle half thickness"),
    # --- pneumothorax -------------------------------------------------------------------------------------
    "ptx_bilateral": (_b(0.12), "bilateral (one region per side) among the positives"),
    "ptx_size": (_c(small=0.45, moderate=0.33, large=0.22), "size class"),
    "ptx_depth_small": (_logu(0.006, 0.028), "depth of a small one (thin slivers: 1.5-7 px at 256 px)"),
    "ptx_depth_moderate": (_u(0.028, 0.055), "depth of a moderate one"),
    "ptx_depth_large": (_u(0.055, 0.14), "depth of a large one (up to a collapsed lung)"),
    "ptx_kind": (_c(apical=0.35, lateral=0.2, apicolateral=0.3, basal=0.15), "where along the chest wall"),
    "ptx_air": (_u(0.05, 0.45), "extra darkness of the air band (low: little more than the missing markings)"),
    "a_line": (_u(0.02, 0.15), "visceral pleural line brightness (faint to obvious)"),
    "line_sigma": (_u(0.0025, 0.005), "pleural line Gaussian sigma"),
    "collapse": (_u(0.0, 0.6), "densification of the collapsed lung (fraction of its air lost, large PTX)"),
    # --- mimics (on negatives and positives; never part of the mask) --------------------------------------
    "skin_folds": (_c(none=0.65, one=0.25, two=0.1), "skin folds: curved edge with an intensity step"),
    "fold_density": (_u(0.04, 0.12), "skin fold attenuation step"),
    "fold_width": (_u(0.015, 0.05), "skin fold ramp width"),
    "bulla": (_b(0.12), "apical bulla: round lucency without markings, hairline wall"),
    "bulla_radius": (_u(0.018, 0.045), "bulla radius"),
    "scapula": (_b(0.6), "scapular medial borders projected over the upper lungs"),
    "scapula_density": (_u(0.04, 0.1), "scapula attenuation step"),
    "medial_line": (_b(0.3), "thin line along the heart / mediastinal border (Mach band)"),
    # --- devices and labels ---------------------------------------------------------------------------------
    "devices": (
        ("set", ("ecg", "central_line", "et_tube", "ng_tube", "wires"), (0.3, 0.2, 0.12, 0.12, 0.2)),
        "each present independently: ECG electrodes and leads, central venous line, endotracheal tube, "
        "nasogastric tube, external wires",
    ),
    "a_device": (_u(0.2, 0.6), "device (metal, contrast stripe) attenuation"),
    "marker": (_c(none=0.3, letter=0.7), "side marker (lead letter L or R) in an upper corner"),
    "label": (_b(0.4), "burned-in text label (white, after processing)"),
    # --- exposure and detector processing -----------------------------------------------------------------
    "gain": (_u(0.8, 1.25), "exposure gain, after exposure recognition (1: the histogram's range fills the scale)"),
    "offset": (_u(-0.1, 0.1), "exposure offset (with gain: under / over exposure)"),
    "lut": (_c(gamma=0.5, sigmoid=0.5), "tone curve"),
    "gamma": (_u(0.6, 1.6), "gamma of the gamma curve"),
    "sigmoid_slope": (_u(3.0, 7.0), "slope of the sigmoid curve"),
    "sigmoid_centre": (_u(0.35, 0.6), "centre of the sigmoid curve"),
    "log_k": (_u(2.0, 5.0), "strength of the log curve (heldout's curves)"),
    "knee": (_u(0.4, 0.65), "knee of the two-slope curve (heldout's curves)"),
    "window_lo": (_u(-0.1, 0.06), "window lower end (values below are black)"),
    "window_hi": (_u(0.9, 1.15), "window upper end (values above are white)"),
    "gradient_x": (_n(0.0, 0.07), "exposure gradient across the image (heel effect), horizontal"),
    "gradient_y": (_n(0.0, 0.07), "exposure gradient, vertical"),
    "unsharp": (_b(0.75), "unsharp masking (edge enhancement)"),
    "unsharp_radius": (_u(0.003, 0.02), "unsharp-mask Gaussian sigma (image widths)"),
    "unsharp_amount": (_u(0.2, 1.4), "unsharp-mask amount"),
    "fine_amount": (("fixed", 0.0), "second, fine-scale enhancement band (heldout)"),
    "noise": (_c(white=0.3, correlated=0.3, quantum=0.4), "noise texture"),
    "noise_level": (_u(0.006, 0.03), "noise standard deviation (of full scale, at mid grey)"),
    "noise_grain_px": (_u(0.6, 1.4), "grain of correlated noise (Gaussian sigma, output pixels)"),
    "grid": (_b(0.15), "anti-scatter grid lines"),
    "grid_axis": (_c(vertical=1.0), "grid line direction"),
    "grid_period_px": (_u(2.5, 6.0), "grid line period (output pixels)"),
    "grid_amp": (_u(0.004, 0.015), "grid line amplitude"),
}

# What `heldout` changes. Everything else is drawn as in `varied`.
HELDOUT_CHANGES = {
    "rotation_deg": (_n(0.0, 4.5), "in-plane rotation: wider (portable films)"),
    "scale": (_u(0.8, 0.92), "magnification: smaller patient in the frame"),
    "body_hw": (_u(0.46, 0.56), "half width of the body: broad habitus"),
    "a_soft": (_u(0.66, 0.8), "soft-tissue attenuation: thick soft tissue"),
    "breasts": (_b(0.5), "breast shadows: more often"),
    "breast_size": (_u(0.15, 0.2), "breast radius: larger"),
    "breast_density": (_u(0.06, 0.12), "breast attenuation: denser"),
    "lung_ry": (_u(0.34, 0.4), "lung half height: tall, hyperinflated lungs"),
    "dome_frac": (_u(0.82, 0.95), "diaphragm: low"),
    "dome_a": (_u(0.4, 1.0), "dome curvature: flattened"),
    "medi_hw": (_u(0.07, 0.09), "mediastinum half width: wide"),
    "heart_rx": (_u(0.18, 0.23), "heart half width: cardiomegaly"),
    "vessel_trunks": (_i(7, 9), "vessel trunks: more"),
    "a_bone": (_u(0.13, 0.19), "bone attenuation: dense bones"),
    "rib_s0": (_u(0.054, 0.064), "posterior rib spacing: wide"),
    "rib_alpha": (_u(0.85, 1.05), "rib slope: steep"),
    "rib_frac": (_u(0.4, 0.48), "rib thickness: thick"),
    "ptx_bilateral": (_b(0.2), "bilateral: more often"),
    "skin_folds": (_c(none=0.5, one=0.3, two=0.2), "skin folds: more often"),
    "devices": (
        ("set", ("pacemaker", "sternal_wires", "port", "pads", "necklace"), (0.3, 0.25, 0.2, 0.25, 0.15)),
        "other device types: pacemaker with leads, sternal wires, chest port, square ECG pads, necklace",
    ),
    "marker": (_c(none=0.3, boxed=0.7), "side marker: a boxed letter, lower corners"),
    "lut": (_c(log=0.5, knee=0.5), "tone curve: logarithmic or two-slope (knee) instead of gamma/sigmoid"),
    "unsharp": (_b(0.95), "unsharp masking: nearly always"),
    "unsharp_radius": (_u(0.03, 0.07), "unsharp-mask sigma: large-kernel equalisation"),
    "unsharp_amount": (_u(0.5, 1.4), "unsharp-mask amount: another range"),
    "fine_amount": (_u(0.2, 0.8), "second, fine-scale band (sigma 0.5-1 px): multi-frequency processing"),
    "noise": (_c(coarse=0.5, banded=0.5), "noise texture: coarse-grained, or quantum plus row/column banding"),
    "noise_level": (_u(0.012, 0.04), "noise level: higher"),
    "noise_grain_px": (_u(1.6, 2.5), "grain of correlated noise: coarser"),
    "grid": (_b(0.35), "grid lines: more often"),
    "grid_axis": (_c(horizontal=1.0), "grid line direction: horizontal"),
    "grid_period_px": (_u(1.7, 2.4), "grid period: fine (aliased, moire)"),
}

# The DICOM export mix of `format="siim"` (drawn per image from a stream of its own).
EXPORT = {
    "varied": {
        "monochrome1": 0.3,
        "bits_stored": ((8, 12, 16), (0.5, 0.35, 0.15)),
        "transfer": (("explicit", "jpeg", "rle"), (0.35, 0.35, 0.3)),
    },
    "heldout": {
        "monochrome1": 0.6,
        "bits_stored": ((8, 12, 16), (0.3, 0.5, 0.2)),
        "transfer": (("explicit", "jpeg", "rle", "deflate"), (0.2, 0.25, 0.35, 0.2)),
    },
}

SPECS = {"varied": VARIED, "heldout": {**VARIED, **HELDOUT_CHANGES}}


def _draw_one(dist, rng):
    kind = dist[0]
    if kind == "uniform":
        return float(rng.uniform(dist[1], dist[2]))
    if kind == "loguniform":
        return float(np.exp(rng.uniform(np.log(dist[1]), np.log(dist[2]))))
    if kind == "normal":
        return float(np.clip(rng.normal(dist[1], dist[2]), dist[1] - 3 * dist[2], dist[1] + 3 * dist[2]))
    if kind == "integers":
        return int(rng.integers(dist[1], dist[2] + 1))
    if kind == "bernoulli":
        return bool(rng.random() < dist[1])
    if kind == "fixed":
        return dist[1]
    if kind == "choice":
        return dist[1][int(rng.choice(len(dist[1]), p=np.asarray(dist[2]) / np.sum(dist[2])))]
    if kind == "set":
        draws = rng.random(len(dist[1]))
        return tuple(name for name, p, r in zip(dist[1], dist[2], draws) if r < p)
    raise ValueError(f"unknown distribution {dist!r}")


def draw_style(style, rng):
    """Draws one phantom's factors of `style` ("varied" or "heldout") from `rng`, in table order.

    Returns:
        `{factor: value}`: floats, ints, bools, a choice's option name, or a tuple of present devices.
    """
    return {name: _draw_one(dist, rng) for name, (dist, _) in SPECS[style].items()}


def draw_factor(style, name, rng):
    """One more draw of factor `name` of `style` (e.g. the second side's depth of a bilateral pneumothorax)."""
    return _draw_one(SPECS[style][name][0], rng)


def draw_export(style, rng):
    """Draws the DICOM export of one image: `(photometric, bits_stored, transfer)`.

    JPEG Baseline holds 8 bits only: a deeper image that draws it is written uncompressed instead.
    """
    mix = EXPORT[style]
    photometric = "MONOCHROME1" if rng.random() < mix["monochrome1"] else "MONOCHROME2"
    bits = mix["bits_stored"]
    bits_stored = int(bits[0][rng.choice(len(bits[0]), p=bits[1])])
    names, p = mix["transfer"]
    transfer = names[rng.choice(len(names), p=p)]
    if transfer == "jpeg" and bits_stored != 8:
        transfer = "explicit"
    return photometric, bits_stored, transfer


def spec_fingerprint(style):
    """A short hash of the style's table and export mix: phantoms.json records it, so a set drawn with
    other ranges is never taken for this one."""
    if style == "classic":
        return None
    blob = json.dumps({"spec": SPECS[style], "export": EXPORT[style], "version": PHANTOM_STYLE_VERSIONS[style]})
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def _describe(dist):
    kind = dist[0]
    if kind in ("uniform", "loguniform"):
        text = f"{dist[1]:g} to {dist[2]:g}"
        return text + (" (log-uniform)" if kind == "loguniform" else "")
    if kind == "normal":
        return f"normal, mean {dist[1]:g}, sd {dist[2]:g}"
    if kind == "integers":
        return f"{dist[1]} to {dist[2]}"
    if kind == "bernoulli":
        return f"p = {dist[1]:g}"
    if kind == "fixed":
        return f"{dist[1]:g} (off)"
    if kind == "choice":
        return ", ".join(f"{name} {p:g}" for name, p in zip(dist[1], dist[2]))
    return ", ".join(f"{name} {p:g}" for name, p in zip(dist[1], dist[2]))  # set: independent probabilities


def style_table():
    """The Markdown table docs/data.md prints: each factor, its `varied` and `heldout` distributions."""
    rows = ["| factor | what it does | varied | heldout |", "|---|---|---|---|"]
    for name, (dist, text) in VARIED.items():
        changed = name in HELDOUT_CHANGES
        held = _describe(HELDOUT_CHANGES[name][0]) if changed else "same"
        rows.append(f"| `{name}` | {text} | {_describe(dist)} | {'**' + held + '**' if changed else held} |")
    return "\n".join(rows)
