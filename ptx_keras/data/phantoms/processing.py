"""Exposure and detector processing of the randomised styles: attenuation -> displayed intensity in [0, 1].

The chain, each step drawn per image from the style's factors: collimator shutters (unexposed bands),
exposure recognition (the body's 1st-99.5th percentile range mapped to the scale, as CR/DR readers do)
with a mis-exposure (gain, offset), a tone curve (gamma, sigmoid, logarithmic or two-slope), an exposure
gradient, unsharp masking at one or two scales, display normalisation and a window (clipping below and
above), noise (white, correlated, quantum-like Poisson, coarse, or quantum with row/column banding) and
anti-scatter grid lines.
"""

import numpy as np
from scipy import ndimage

__all__ = ["blur", "expose", "summary"]


_HEADROOM = 0.08  # the recognised range maps to [0.08, 0.92] before mis-exposure and the tone curve
_DIRECT_BLUR_MAX_SIGMA = 6.0  # pixels; wider Gaussians are computed on a reduced image


def blur(image, sigma_px):
    """Gaussian blur of a float32 image; wide kernels are applied at reduced resolution (same result up to
    the interpolation, at a fraction of the cost)."""
    if sigma_px <= _DIRECT_BLUR_MAX_SIGMA:
        return ndimage.gaussian_filter(image, sigma_px, mode="nearest")
    factor = int(np.ceil(sigma_px / 3.0))
    h, w = image.shape
    small = ndimage.zoom(image, 1.0 / factor, order=1, mode="nearest", grid_mode=True)
    small = ndimage.gaussian_filter(small, sigma_px / factor, mode="nearest")
    return ndimage.zoom(small, (h / small.shape[0], w / small.shape[1]), order=1, mode="nearest", grid_mode=True)


def _recognise(image, body, step, headroom):
    """Maps the 1st-99.5th percentile range of `image` over `body` to [headroom, 1 - headroom]."""
    sample = image[step][body[step]]
    lo, hi = np.percentile(sample if sample.size > 16 else image[step], (1.0, 99.5))
    return headroom + (1.0 - 2.0 * headroom) * (image - lo) / max(hi - lo, 1e-3)


def _tone(x, s):
    lut = s["lut"]
    x = np.clip(x, 0.0, None)
    if lut == "gamma":
        return x ** s["gamma"]
    if lut == "sigmoid":
        k, c = s["sigmoid_slope"], s["sigmoid_centre"]

        def f(v):
            return 1.0 / (1.0 + np.exp(-k * (v - c)))

        return (f(x) - f(0.0)) / (f(1.0) - f(0.0))
    if lut == "log":
        return np.log1p(s["log_k"] * x) / np.log1p(s["log_k"])
    if lut == "knee":  # two slopes through (knee, 1 - knee): a low knee brightens, a high one darkens
        knee = s["knee"]
        return np.where(x < knee, (1.0 - knee) * x / knee, (1.0 - knee) + knee * (x - knee) / (1.0 - knee))
    raise ValueError(f"unknown tone curve {lut!r}")


def _collimate(atten, rng):
    """Unexposed bands along one to four edges: as dense as the densest bone and more."""
    h, w = atten.shape
    edges = rng.random(4) < 0.5
    edges[rng.integers(4)] = True
    widths = rng.uniform(0.02, 0.08, 4)
    rows = np.arange(h, dtype=np.float32)[:, None] + 0.5
    cols = np.arange(w, dtype=np.float32)[None, :] + 0.5
    shut = np.zeros(atten.shape, np.float32)
    for on, width, dist, side in zip(edges, widths, (rows, h - rows, cols, w - cols), (h, h, w, w)):
        if on:
            shut = np.maximum(shut, np.clip(width * side - dist + 0.5, 0.0, 1.0))
    return np.maximum(atten, 1.3 * shut)


def _noise(y, s, rng):
    kind, level = s["noise"], s["noise_level"]
    hw = y.shape
    if kind == "white":
        return y + level * rng.standard_normal(hw, dtype=np.float32)
    if kind in ("correlated", "coarse"):
        field = ndimage.gaussian_filter(rng.standard_normal(hw, dtype=np.float32), s["noise_grain_px"])
        field /= field.std() + 1e-8
        if kind == "coarse":
            field = 0.9 * field + 0.3 * rng.standard_normal(hw, dtype=np.float32)
        return y + level * field
    # quantum-like: Poisson counts with `photons` quanta at full scale; sd = level at mid grey
    photons = 0.5 / level**2
    counts = rng.poisson(np.clip(y + 0.02, 0.0, None) * photons).astype(np.float32)
    out = counts / np.float32(photons) - 0.02
    if kind == "banded":
        out += 0.4 * level * rng.standard_normal((hw[0], 1), dtype=np.float32)
        out += 0.25 * level * rng.standard_normal((1, hw[1]), dtype=np.float32)
    return out


def expose(atten, s, rng, hw, body):
    """Turns an attenuation image into displayed intensity with the style's processing.

    Args:
        atten: float32 `(height, width)` attenuation-like image (higher = denser = brighter).
        body: bool `(height, width)`, the patient (exposure recognition looks at these pixels).
        s: The style's factors.
        rng: The phantom's random stream.
        hw: `(height, width)`.

    Returns:
        float32 `(height, width)` intensity in [0, 1].
    """
    h, w = hw
    if s["collimation"]:
        atten = _collimate(atten, rng)
    step = (slice(None, None, max(1, h // 128)), slice(None, None, max(1, w // 128)))
    # Exposure recognition, as CR/DR readers do: the range of the anatomy (the body, not the direct exposure
    # around it) found from its histogram maps to [0, 1] with some headroom; gain and offset then move the
    # tone curve's operating point (over- or under-exposure).
    x = _recognise(atten, body, step, _HEADROOM)
    y = _tone(s["offset"] + s["gain"] * x, s).astype(np.float32)
    Y = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None] - 0.5
    X = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :] - 0.5
    y += s["gradient_x"] * X + s["gradient_y"] * Y
    if s["unsharp"]:
        y = y + s["unsharp_amount"] * (y - blur(y, s["unsharp_radius"] * w))
    if s["fine_amount"] > 0:
        y = y + s["fine_amount"] * (y - blur(y, rng.uniform(0.5, 1.0)))
    # Display normalisation, then the window: a narrow or shifted one clips the darkest or brightest parts.
    y = _recognise(y, body, step, _HEADROOM / 2)
    y = np.clip((y - s["window_lo"]) / (s["window_hi"] - s["window_lo"]), 0.0, 1.0)
    y = _noise(y, s, rng)
    if s["grid"]:
        phase = rng.uniform(0.0, 2.0 * np.pi)
        if s["grid_axis"] == "vertical":
            stripes = np.cos(2.0 * np.pi * np.arange(w, dtype=np.float32) / s["grid_period_px"] + phase)[None, :]
        else:
            stripes = np.cos(2.0 * np.pi * np.arange(h, dtype=np.float32) / s["grid_period_px"] + phase)[:, None]
        y = y + s["grid_amp"] * stripes
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def summary(s):
    """The processing factors of one image, as recorded in its `info["processing"]`."""
    return {
        "lut": s["lut"],
        "unsharp_radius": float(s["unsharp_radius"]) if s["unsharp"] else 0.0,
        "unsharp_amount": float(s["unsharp_amount"]) if s["unsharp"] else 0.0,
        "noise": s["noise"],
        "noise_level": float(s["noise_level"]),
        "grid": s["grid_axis"] if s["grid"] else "none",
    }
