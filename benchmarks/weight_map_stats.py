"""Weight statistics of eq. 6 on the synthetic phantoms: the numbers and the figure in `docs/loss.md`.

For each positive phantom: the three terms (background |N|/|T_bg|, pneumothorax |N|/|T_ptx|, boundary
|N|/|B|), the min / max / mean of the map, and the maximum after `normalize="mean"`. Prints one JSON line
per group (all positives, then each size class; negatives have weight 1 everywhere) and, with
`--markdown`, the table for the documentation. `--figure PATH` writes a Fig.-4-style PNG of the first
moderate-size positive phantom, and PATH_zoom.png cropped around its pneumothorax.

    python benchmarks/weight_map_stats.py [--n 200] [--size 256] [--boundary-width 1] \
        [--figure docs/img/weight_map_phantom.png] [--markdown]
"""

import argparse
import json
import os
import sys

import numpy as np

# Run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ptx_keras.data.phantoms import make_phantom  # noqa: E402
from ptx_keras.data.weight_maps import spatial_weight_map, weight_map_terms  # noqa: E402

COLUMNS = {  # key -> (table header, format)
    "ptx_percent": ("PTX area %", "{:.2f}"),
    "boundary_pixels": ("|B| px", "{:.0f}"),
    "background": ("w background", "{:.3f}"),
    "ptx": ("w PTX", "{:.1f}"),
    "boundary": ("w boundary", "{:.1f}"),
    "map_max": ("map max", "{:.1f}"),
    "map_mean": ("map mean", "{:.3f}"),
    "normalized_max": ("max, normalize=mean", "{:.1f}"),
}


def phantom_rows(n, size, boundary_width):
    """Yields `(seed, image, mask, info, row)` for the phantoms with seeds 0..n-1."""
    for seed in range(n):
        image, mask, info = make_phantom(size, seed=seed)
        weights = spatial_weight_map(mask, boundary_width=boundary_width)
        terms = weight_map_terms(mask, boundary_width=boundary_width)
        row = {
            "seed": seed,
            "positive": bool(mask.any()),
            "size_class": info["size_class"],
            "ptx_percent": 100.0 * terms["ptx_pixels"] / terms["pixels"],
            "boundary_pixels": terms["boundary_pixels"],
            "background": terms["background"],
            "ptx": terms["ptx"],
            "boundary": terms["boundary"],
            "map_min": float(weights.min()),
            "map_max": float(weights.max()),
            "map_mean": float(weights.mean(dtype=np.float64)),
            "normalized_max": float(spatial_weight_map(mask, boundary_width, normalize="mean").max()),
        }
        yield seed, image, mask, info, row


def summarize(rows):
    """`{key: {"median", "min", "max"}}` over the rows."""
    return {
        key: {
            stat: float(fn([r[key] for r in rows]))
            for stat, fn in (("median", np.median), ("min", np.min), ("max", np.max))
        }
        for key in (
            "ptx_percent",
            "boundary_pixels",
            "background",
            "ptx",
            "boundary",
            "map_min",
            "map_max",
            "map_mean",
            "normalized_max",
        )
    }


def markdown(groups):
    header = ["group", "n"] + [title for title, _ in COLUMNS.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, rows in groups.items():
        stats = summarize(rows)
        cells = [name, str(len(rows))]
        for key, (_, fmt) in COLUMNS.items():
            s = stats[key]
            cells.append(f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="number of phantoms (seeds 0..n-1)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--boundary-width", type=int, default=1)
    parser.add_argument("--figure", help="write a Fig.-4-style PNG of a moderate positive phantom here")
    parser.add_argument("--markdown", action="store_true", help="also print the Markdown table")
    args = parser.parse_args(argv)

    positives, negatives, figure_done = [], 0, False
    for seed, image, mask, info, row in phantom_rows(args.n, args.size, args.boundary_width):
        if not row["positive"]:
            negatives += 1
            assert row["map_min"] == row["map_max"] == 1.0  # eq. 6 without any pneumothorax
            continue
        positives.append(row)
        if args.figure and not figure_done and info["size_class"] == "moderate":
            from ptx_keras.figures.weight_map import plot_weight_map

            weights = spatial_weight_map(mask, boundary_width=args.boundary_width)
            title = (
                f"Phantom seed {seed} ({info['kind']}, {info['size_class']}), {args.size}x{args.size}: "
                f"w_bg {row['background']:.3f}, w_PTX {row['ptx']:.1f}, w_boundary {row['boundary']:.1f}"
            )
            plot_weight_map(image, mask, weights, path=args.figure, title=title)
            # The band is a few pixels wide: a second figure zooms on the pneumothorax (the map is still the
            # whole image's, only the view is cropped).
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            half = max(rows[-1] - rows[0], cols[-1] - cols[0]) // 2 + 8  # a square view, 8 px margin
            starts = [
                min(max((lo + hi) // 2 - half, 0), max(n - 2 * half, 0))
                for lo, hi, n in ((rows[0], rows[-1], mask.shape[0]), (cols[0], cols[-1], mask.shape[1]))
            ]
            box = (slice(starts[0], starts[0] + 2 * half), slice(starts[1], starts[1] + 2 * half))
            root, ext = os.path.splitext(args.figure)
            plot_weight_map(
                image[box],
                mask[box],
                weights[box],
                path=f"{root}_zoom{ext}",
                title=f"Phantom seed {seed}, zoomed on the pneumothorax",
                log_scale=False,
            )
            figure_done = True

    groups = {"all positives": positives}
    for size_class in ("small", "moderate", "large"):
        rows = [r for r in positives if r["size_class"] == size_class]
        if rows:
            groups[size_class] = rows
    settings = {"n": args.n, "size": args.size, "boundary_width": args.boundary_width, "negatives": negatives}
    for name, rows in groups.items():
        print(
            json.dumps(
                {
                    "benchmark": "weight_map_stats",
                    "group": name,
                    "count": len(rows),
                    **settings,
                    "stats": summarize(rows),
                }
            )
        )
    if args.markdown:
        print(markdown(groups))
    if args.figure:
        print(json.dumps({"figure": args.figure if figure_done else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
