"""`ptx-prepare SOURCE OUTPUT` (also `python -m ptx_keras.data.prepare`): prepare a source as TFRecord shards."""

import argparse

from ptx_keras import constants
from ptx_keras.cli.common import run_cli


def _int_at_least(minimum):
    """An argparse type: an integer not below `minimum`."""
    kind = "positive" if minimum == 1 else "non-negative"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _fractions(text):
    from ptx_keras.data.split import validate_fractions

    try:
        return validate_fractions(float(part) for part in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def build_parser():
    p = argparse.ArgumentParser(
        prog="ptx-prepare",
        description="Split a data source (image/mask folder, CSV manifest, SIIM-ACR folder) stratified "
        "64/16/20 %, resize it, compute the spatial weight maps (eq. 6) and write TFRecord shards, "
        "manifest.csv and dataset.json. Rerunning with the same settings does nothing; an interrupted run resumes.",
    )
    p.add_argument("source", help="data source: folder, CSV manifest or SIIM-ACR folder")
    p.add_argument("output", help="output directory (new or empty, or an earlier run with the same settings)")
    p.add_argument("--size", type=_positive_int, default=constants.IMAGE_SIZE,
                   help=f"square image size in pixels (default {constants.IMAGE_SIZE})")
    p.add_argument("--bit-depth", type=int, choices=(8, 16), default=constants.IMAGE_BIT_DEPTH,
                   help=f"stored image bit depth (default {constants.IMAGE_BIT_DEPTH})")
    p.add_argument("--boundary-width", type=_non_negative_int, default=constants.BOUNDARY_WIDTH,
                   help=f"cross dilations of the weight-map boundary band (default {constants.BOUNDARY_WIDTH})")
    p.add_argument("--normalize", choices=("none", "mean"), default="none",
                   help="weight-map normalisation (default none, as the paper)")
    p.add_argument("--clip", type=_positive_float, default=None, help="upper bound of the weights (default none)")
    p.add_argument("--weight-dtype", choices=("float16", "float32"), default=constants.WEIGHT_DTYPE,
                   help=f"stored weight-map precision (default {constants.WEIGHT_DTYPE})")
    p.add_argument("--split", type=_fractions, default=constants.SPLIT_FRACTIONS, metavar="TRAIN,VAL,TEST",
                   help="split fractions (default 0.64,0.16,0.2)")
    p.add_argument("--seed", type=_non_negative_int, default=constants.SPLIT_SEED,
                   help=f"split and shard-order seed (default {constants.SPLIT_SEED})")
    p.add_argument("--shard-size", type=_positive_int, default=constants.SHARD_SIZE,
                   help=f"examples per shard (default {constants.SHARD_SIZE})")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip bad samples (unreadable or non-finite images, missing files, malformed manifest rows) "
                        "and list them with their reasons in dataset.json")
    p.add_argument("--workers", type=_positive_int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a data set prepared with other settings or from another source in OUTPUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _prepare(args):
    from ptx_keras.data.prepare import prepare_dataset

    summary = prepare_dataset(
        args.source,
        args.output,
        image_size=args.size,
        bit_depth=args.bit_depth,
        boundary_width=args.boundary_width,
        normalize=None if args.normalize == "none" else args.normalize,
        clip=args.clip,
        weight_dtype=args.weight_dtype,
        split_fractions=args.split,
        seed=args.seed,
        shard_size=args.shard_size,
        skip_bad=args.skip_bad,
        workers=args.workers,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    counts = ", ".join(f"{s} {summary['counts'][s]['total']}" for s in constants.SPLITS)
    skipped = len(summary["bad_samples"]) + len(summary["source"].get("reader_skipped", []))
    print(
        f"{summary['status']}: {summary['output_dir']} ({counts}; {skipped} bad samples skipped; "
        f"{summary['shards_written']} shards written in {summary['seconds']:.1f} s)"
    )
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(_prepare, args)
