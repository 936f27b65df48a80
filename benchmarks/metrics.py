"""Time `segmentation_scores` on 1024x1024 mask pairs (SIIM-ACR size).

Prints one JSON line per measurement: the case, ms per pair (median over repeats), the extrapolated
seconds for 10,000 pairs and a machine description.

    python benchmarks/metrics.py [--size 1024] [--repeats 20]
"""

import argparse
import json
import os
import sys
import time

import numpy as np

# Run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._machine import machine  # noqa: E402
from ptx_keras.metrics.segmentation import segmentation_scores  # noqa: E402


def _disk(size, center, radius):
    rr, cc = np.ogrid[:size, :size]
    return (rr - center[0]) ** 2 + ((cc - center[1]) / 0.6) ** 2 <= radius**2


def _cases(size):
    s = size / 1024
    typical_t = _disk(size, (300 * s, 250 * s), 70 * s)  # ~0.9 % of the image, a moderate pneumothorax
    typical_p = _disk(size, (310 * s, 245 * s), 65 * s)
    large_t = _disk(size, (450 * s, 300 * s), 250 * s)  # ~11 %
    large_p = _disk(size, (470 * s, 310 * s), 240 * s)
    empty = np.zeros((size, size), dtype=bool)
    rng = np.random.default_rng(0)
    noisy_p = typical_p ^ (rng.random((size, size)) < 0.001)  # scattered false-positive pixels
    return {
        "typical": (typical_t, typical_p),
        "large": (large_t, large_p),
        "noisy_prediction": (typical_t, noisy_p),
        "one_empty": (typical_t, empty),
        "both_empty": (empty, empty),
        "typical_uint8_0_255": (typical_t.astype(np.uint8) * 255, typical_p.astype(np.uint8) * 255),
        "typical_anisotropic_mm": (typical_t, typical_p),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    machine_info = machine(numpy=np.__version__)
    for name, (t, p) in _cases(args.size).items():
        spacing = (0.14, 0.17) if name.endswith("_mm") else None
        segmentation_scores(t, p, spacing=spacing)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            segmentation_scores(t, p, spacing=spacing)
            times.append(time.perf_counter() - start)
        ms = 1000 * float(np.median(times))
        print(
            json.dumps(
                {
                    "benchmark": "segmentation_scores",
                    "case": name,
                    "size": args.size,
                    "true_fraction": round(float(np.count_nonzero(t)) / t.size, 4),
                    "ms_per_pair": round(ms, 3),
                    "seconds_per_10000": round(ms * 10, 1),
                    "repeats": args.repeats,
                    "machine": machine_info,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
