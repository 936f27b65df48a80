"""`ptx-phantoms OUT` / `python -m ptx_keras.cli.phantoms OUT`: write a synthetic phantom data set."""

import argparse
import json

from ptx_keras.cli.common import run_cli
from ptx_keras.constants import IMAGE_SIZE, PHANTOM_FORMATS, PHANTOM_STYLES, SIIM_SIZE

__all__ = ["build_parser", "main"]


def build_parser():
    p = argparse.ArgumentParser(
        prog="ptx-phantoms",
        description="Write synthetic chest radiographs with pneumothorax masks (half of them positive) in a "
        "layout the readers accept: image/mask PNG folder, CSV manifest, or SIIM-ACR (DICOM + train-rle.csv).",
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--n", type=int, default=200, help="number of images (default 200)")
    p.add_argument(
        "--size",
        type=int,
        nargs="+",
        default=None,
        metavar="PX",
        help=f"image side, or HEIGHT WIDTH (default {SIIM_SIZE} for --format siim, else {IMAGE_SIZE})",
    )
    p.add_argument("--format", choices=PHANTOM_FORMATS, default="png", help="layout (default png)")
    p.add_argument(
        "--style",
        default="classic",
        metavar="{" + ",".join(PHANTOM_STYLES) + "}",
        help="classic (one look, the original generator; default), varied (randomised: for "
        "training) or heldout (other ranges, devices and processing: for testing on an unseen style)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--bit-depth",
        type=int,
        default=None,
        help="8 or 16 (default 8; a varied/heldout siim set mixes 8, 12 and 16 stored bits)",
    )
    p.add_argument(
        "--conspicuity",
        type=float,
        default=1.0,
        help="pneumothorax visibility: 1 = calibrated hard setting (default), 2 = the quick start's",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes rendering in parallel (default: all cores for large sets, else 1)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _write(args):
    from ptx_keras.data.phantoms import write_phantom_dataset
    from ptx_keras.errors import ConfigError, PtxError

    if args.size is not None and len(args.size) > 2:
        raise ConfigError(f"--size takes one or two values. Received: {args.size}")
    size = None if args.size is None else (args.size[0] if len(args.size) == 1 else tuple(args.size))
    try:
        summary = write_phantom_dataset(
            args.out,
            args.n,
            size=size,
            format=args.format,
            seed=args.seed,
            bit_depth=args.bit_depth,
            conspicuity=args.conspicuity,
            style=args.style,
            workers=args.workers,
            progress=not args.quiet,
        )
    except ValueError as e:
        if isinstance(e, PtxError):
            raise
        raise ConfigError(str(e)) from None  # a bad --n, --size, --seed, --style, --bit-depth or --workers
    state = "written" if summary["written"] else "already complete, kept"
    print(
        f"{summary['n']} {summary['style']} phantoms ({summary['positives']} with pneumothorax) in "
        f"{summary['path']}: {state}"
    )
    keys = ("kinds", "size_classes", "mimics", "devices", "exports", "manifest")
    print(json.dumps({k: summary[k] for k in keys if k in summary}))
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(_write, args)


if __name__ == "__main__":
    raise SystemExit(main())
