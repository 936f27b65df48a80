"""Time `spatial_weight_map` on 256, 512 and 1024 px masks (data preparation runs it once per image).

Prints one JSON line per measurement: mask size and shape, ms per mask (median and 90th percentile over
`--repeats` runs), and a machine description. `--reference` also times a plain `scipy.ndimage`
implementation of the same map on the whole image, for comparison.

    python benchmarks/weight_maps.py [--sizes 256 512 1024] [--repeats 50] [--reference]
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import scipy
from scipy import ndimage

# Run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ptx_keras.data.weight_maps import spatial_weight_map  # noqa: E402

from _machine import machine  # noqa: E402


def _cases(size):
    """Masks as data preparation sees them (uint8 0/255 PNG masks)."""
    rr, cc = np.mgrid[:size, :size] / size
    lateral = (np.abs(cc - 0.18) < 0.04) & (rr > 0.2) & (rr < 0.75)  # a band along the chest wall
    large = ((rr - 0.45) / 0.3) ** 2 + ((cc - 0.3) / 0.15) ** 2 < 1  # ~14 % of the image
    rng = np.random.default_rng(0)
    # Worst case: blobs all over the image, so the bounding box is the whole image and the band is long.
    blobs = ndimage.gaussian_filter(rng.random((size, size)), size / 64) > 0.5
    border = np.zeros((size, size), bool)
    border[: size // 3, : size // 4] = True  # apical, touching two image borders
    cases = {
        "empty": np.zeros((size, size), bool),
        "lateral": lateral,
        "large": large,
        "border": border,
        "blobs_worst_case": blobs,
    }
    return {name: mask.astype(np.uint8) * 255 for name, mask in cases.items()}


def _scipy_reference(mask, boundary_width=1):
    fg = mask > 0
    contour = fg & ~ndimage.binary_erosion(fg, np.ones((3, 3), bool), border_value=1)
    band = ndimage.binary_dilation(contour, ndimage.generate_binary_structure(2, 1), iterations=boundary_width)
    weights = np.zeros(fg.shape)
    for members in (fg, ~fg, band):
        if members.any():
            weights += members * (fg.size / members.sum())
    return weights.astype(np.float32)


def _time(fn, mask, repeats):
    fn(mask)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(mask)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 90))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--reference", action="store_true", help="also time the plain scipy.ndimage version")
    args = parser.parse_args(argv)
    info = machine(numpy=np.__version__, scipy=scipy.__version__)
    methods = {"ptx_keras": spatial_weight_map}
    if args.reference:
        methods["scipy_reference"] = _scipy_reference
    for size in args.sizes:
        for case, mask in _cases(size).items():
            for method, fn in methods.items():
                median, p90 = _time(fn, mask, args.repeats)
                print(
                    json.dumps(
                        {
                            "benchmark": "spatial_weight_map",
                            "method": method,
                            "size": size,
                            "mask": case,
                            "ptx_fraction": round(float(np.mean(mask > 0)), 4),
                            "ms_median": round(median, 3),
                            "ms_p90": round(p90, 3),
                            "repeats": args.repeats,
                            "machine": info,
                        }
                    ),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
