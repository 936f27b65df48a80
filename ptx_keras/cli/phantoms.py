"""`python -m ptx_keras.data.phantoms OUT` / `ptx-phantoms OUT`: write a synthetic phantom data set."""

import argparse
import json

from ptx_keras.cli.common import run_cli
from ptx_keras.constants import IMAGE_SIZE, PHANTOM_FORMATS


def build_parser():
    p = argparse.ArgumentParser(
        prog="ptx-phantoms",
        description="Write synthetic chest radiographs with pneumothorax masks (half of them positive) in a "
        "layout the readers accept: image/mask PNG folder, CSV manifest, or SIIM-ACR (DICOM + train-rle.csv).",
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--n", type=int, default=200, help="number of images (default 200)")
    p.add_argument("--size", type=int, nargs="+", default=[IMAGE_SIZE], metavar="PX",
                   help=f"image side, or HEIGHT WIDTH (default {IMAGE_SIZE})")
    p.add_argument("--format", choices=PHANTOM_FORMATS, default="png", help="layout (default png)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--bit-depth", type=int, default=8, help="8 or 16 (default 8)")
    p.add_argument("--conspicuity", type=float, default=1.0,
                   help="pneumothorax visibility: 1 = calibrated hard setting (default), 2 = the quick start's")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _write(args):
    from ptx_keras.data.phantoms import write_phantom_dataset
    from ptx_keras.errors import ConfigError, PtxError

    if len(args.size) > 2:
        raise ConfigError(f"--size takes one or two values. Received: {args.size}")
    size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    try:
        summary = write_phantom_dataset(
            args.out, args.n, size=size, format=args.format, seed=args.seed, bit_depth=args.bit_depth,
            conspicuity=args.conspicuity,
            progress=not args.quiet,
        )
    except ValueError as e:
        if isinstance(e, PtxError):
            raise
        raise ConfigError(str(e)) from None  # a bad --n, --size, --seed or --bit-depth
    state = "written" if summary["written"] else "already complete, kept"
    print(f"{summary['n']} phantoms ({summary['positives']} with pneumothorax) in {summary['path']}: {state}")
    print(json.dumps({k: summary[k] for k in ("kinds", "size_classes", "manifest")}))
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(_write, args)


if __name__ == "__main__":
    raise SystemExit(main())
