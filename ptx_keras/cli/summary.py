"""`ptx-summary [NAME ...]`: parameter and MAC counts of the model presets beside the paper's Table 2."""

import argparse

from ptx_keras import constants
from ptx_keras.cli.common import run_cli

__all__ = ["build_parser", "main"]


def build_parser():
    p = argparse.ArgumentParser(
        prog="ptx-summary",
        description="Parameter and multiply-accumulate counts of the model presets, beside the paper's Table 2 "
        "(printed as a Markdown table).",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="presets (default: all; see ptx_keras.list_models())")
    p.add_argument(
        "--input-size",
        type=int,
        default=constants.IMAGE_SIZE,
        help=f"square input side for the MACs (default {constants.IMAGE_SIZE})",
    )
    p.add_argument("--channels", type=int, default=3, help="input channels (default 3)")
    return p


def _summary(args):
    from ptx_keras.models.summary import summary_table
    from ptx_keras.reports import markdown_table

    print(markdown_table(summary_table(args.names or None, args.input_size, args.channels)))
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(_summary, args)


if __name__ == "__main__":
    raise SystemExit(main())
