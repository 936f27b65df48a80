"""How hard and how learnable are the synthetic phantoms? Cheap checks, no deep models.

Prints one JSON line per measurement:

- `render_time`: seconds per image at several sizes.
- `threshold_dice`: the best brightness threshold *per image* (an oracle: chosen with the true mask) and the
  Dice of "pixel <= threshold" against the pneumothorax mask, on positive images; over the whole image, inside
  the true pleural cavity (lung + pneumothorax, also an oracle), and inside the cavity after Gaussian smoothing
  (which removes noise and vessels and keeps only mean darkness). Low numbers mean brightness alone does not
  find the pneumothorax.
- `region_means`: per image mean intensity of the pneumothorax and of the normal lung; `auc` is the
  probability that a random image's normal-lung mean is brighter than another random image's pneumothorax
  mean (0.5 = the ranges overlap completely, 1 = separable by one global threshold).
- `texture_ratio`: high-pass standard deviation inside the pneumothorax / inside the normal lung (per image).
- `pleural_line`: contrast of the visceral pleural line over the air band beside it, in noise standard
  deviations, at each size.

Usage: `python benchmarks/phantom_baselines.py [--n 80] [--sizes 128 256] [--figure docs/img/phantoms_classic.png]`
(`--figure` also draws the documentation's page of 16 phantoms at 256 px; set seed 2 is the first whose
16 images show every kind and size class).
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ptx_keras.data.phantoms import _make_phantom_layers, make_phantom  # noqa: E402


def machine():
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def emit(name, **values):
    print(json.dumps({"measurement": name, **values, **machine()}, default=float), flush=True)


def best_threshold_dice(values, mask, within=None):
    """Best Dice of `values <= t` against `mask` over every threshold t (values integer 0..255)."""
    if within is not None:
        values, mask = values[within], mask[within]
    values = np.clip(np.asarray(values).ravel(), 0, 255).astype(np.int64)
    mask = np.asarray(mask).ravel()
    below = np.cumsum(np.bincount(values, minlength=256))
    true_below = np.cumsum(np.bincount(values[mask], minlength=256))
    dice = 2.0 * true_below / (below + mask.sum())
    return float(dice.max())


def quantise(field, within):
    lo, hi = np.percentile(field[within], [0.5, 99.5])
    return np.rint(np.clip((field - lo) / (hi - lo + 1e-9), 0, 1) * 255).astype(np.int64)


def auc(low, high):
    low, high = np.asarray(low), np.asarray(high)
    return float((high[:, None] > low[None, :]).mean() + 0.5 * (high[:, None] == low[None, :]).mean())


def summary(values):
    values = np.asarray(values, float)
    return {"mean": float(values.mean()), "std": float(values.std()), "median": float(np.median(values))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=80, help="positive images per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--seed", type=int, default=0, help="seed of the measured images")
    parser.add_argument("--figure", help="also write the page of 16 example phantoms (256 px) to this PNG")
    args = parser.parse_args(argv)

    if args.figure:
        from PIL import Image

        from ptx_keras.data.phantoms import generate_phantoms
        from ptx_keras.figures.phantoms import plot_phantom_page

        plot_phantom_page(generate_phantoms(16, size=256, seed=2), args.figure, ncols=4)
        # a 96-colour palette keeps the page small in the repository
        Image.open(args.figure).convert("RGB").quantize(96).save(args.figure, optimize=True)
        emit("figure", path=args.figure)

    for size in (128, 256, 512, 1024):
        count = 20 if size <= 256 else 4
        make_phantom(size, seed=0)
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(count):
            make_phantom(size, seed=i)
        # CPU time is what the generator costs; wall time also shows how busy the (shared) machine was.
        emit(
            "render_time",
            size=size,
            seconds_per_image=(time.perf_counter() - start) / count,
            cpu_seconds_per_image=(time.process_time() - cpu) / count,
            load_average=os.getloadavg()[0],
        )

    for size in args.sizes:
        rows = []
        for i in range(args.n):
            image, mask, info, lung = _make_phantom_layers(size, None, positive=True, seed=[args.seed, i], bit_depth=8)
            cavity = lung | mask
            smooth = ndimage.gaussian_filter(image.astype(np.float32), max(1.0, 2.0 * size / 256))
            # Compare texture away from the edges (the pleural line and lung borders are edges).
            core = ndimage.binary_erosion(mask, iterations=2)
            lung_core = ndimage.binary_erosion(lung, iterations=3)
            # high-pass at a fixed anatomical scale (1 px at 128 px), so sizes compare
            detail = image.astype(np.float32) - ndimage.gaussian_filter(image.astype(np.float32), size / 128)
            line = ndimage.binary_dilation(mask) & ~mask & lung
            band = mask & ~ndimage.binary_erosion(mask, iterations=2)
            rows.append(
                {
                    "size_class": info["size_class"],
                    "whole_image": best_threshold_dice(image, mask),
                    "cavity": best_threshold_dice(image, mask, cavity),
                    "cavity_smoothed": best_threshold_dice(quantise(smooth, cavity), mask, cavity),
                    "ptx_mean": float(image[mask].mean()) / 255.0,
                    "lung_mean": float(image[lung].mean()) / 255.0,
                    "texture_ratio": float(detail[core].std() / detail[lung_core].std()) if core.any() else None,
                    "line_contrast": float(
                        (image[line].mean() - image[band].mean()) / (detail[lung_core].std() + 1e-6)
                    ),
                }
            )
        for subset in ("all", "small", "moderate", "large"):
            chosen = [r for r in rows if subset == "all" or r["size_class"] == subset]
            if not chosen:
                continue
            emit(
                "threshold_dice",
                size=size,
                subset=subset,
                images=len(chosen),
                **{key: summary([r[key] for r in chosen]) for key in ("whole_image", "cavity", "cavity_smoothed")},
            )
        ptx_means = [r["ptx_mean"] for r in rows]
        lung_means = [r["lung_mean"] for r in rows]
        emit(
            "region_means",
            size=size,
            images=len(rows),
            ptx_range=[min(ptx_means), max(ptx_means)],
            lung_range=[min(lung_means), max(lung_means)],
            auc=auc(ptx_means, lung_means),
            within_image_darker=float(np.mean(np.array(lung_means) - np.array(ptx_means))),
        )
        ratios = [r["texture_ratio"] for r in rows if r["texture_ratio"] is not None]
        emit("texture_ratio", size=size, images=len(ratios), **summary(ratios))
        contrasts = [r["line_contrast"] for r in rows]
        emit("pleural_line", size=size, images=len(contrasts), **summary(contrasts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
