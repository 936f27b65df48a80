"""`ptx-prepare SOURCE OUTPUT` (`python -m ptx_keras.cli.prepare`): prepare a source as TFRecord shards.

The preparation flags are made from `ptx_keras.data.settings.PrepareSettings` (one flag per setting, its help,
its default), so a new setting appears here without an edit.
"""

import argparse
import dataclasses
import typing

from ptx_keras import constants
from ptx_keras.cli.common import run_cli

__all__ = ["build_parser", "main"]


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _setting_type(field):
    """An argparse type for one `PrepareSettings` field: parses the text by the field's annotation ("none" is
    None for optional settings, comma-separated numbers for tuples) and validates it as `PrepareSettings` does."""
    from ptx_keras.data.settings import PrepareSettings

    annotation = typing.get_type_hints(PrepareSettings)[field.name]
    args = typing.get_args(annotation)
    optional = type(None) in args
    inner = next((a for a in args if a is not type(None)), annotation) if optional else annotation

    def parse(text):
        try:
            if optional and text.lower() == "none":
                value = None
            elif typing.get_origin(inner) is tuple:
                value = tuple(float(part) for part in text.split(","))
            elif inner is int:
                value = int(text)
            elif inner is float:
                value = float(text)
            else:
                value = text
            PrepareSettings.from_kwargs(**{field.name: value})
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
        return value

    return parse


def _default_text(value):
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value)
    return str(value)


def build_parser():
    p = argparse.ArgumentParser(
        prog="ptx-prepare",
        description="Split a data source (image/mask folder, CSV manifest, SIIM-ACR folder) stratified "
        "64/16/20 %, resize it, compute the spatial weight maps (eq. 6) and write TFRecord shards, "
        "manifest.csv and dataset.json. Rerunning with the same settings does nothing; an interrupted run resumes.",
    )
    p.add_argument("source", help="data source: folder, CSV manifest or SIIM-ACR folder")
    p.add_argument("output", help="output directory (new or empty, or an earlier run with the same settings)")
    from ptx_keras.data.settings import PrepareSettings

    for field in dataclasses.fields(PrepareSettings):
        p.add_argument(
            field.metadata["flag"],
            dest=field.name,
            type=_setting_type(field),
            default=field.default,
            metavar=field.name.upper(),
            help=f"{field.metadata['help']} (default {_default_text(field.default)})",
        )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip bad samples (unreadable or non-finite images, missing files, malformed manifest rows) "
        "and list them with their reasons in dataset.json",
    )
    p.add_argument("--workers", type=_positive_int, default=None, help="worker processes (default: all cores)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a data set prepared with other settings or from another source in OUTPUT",
    )
    p.add_argument(
        "--max-image-pixels",
        type=_positive_int,
        default=constants.MAX_IMAGE_PIXELS,
        metavar="N",
        help="refuse images with more pixels (rows x columns x samples x frames, read from the header "
        f"before decoding; default {constants.MAX_IMAGE_PIXELS:,})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _prepare(args):
    from ptx_keras.data.prepare import prepare_dataset
    from ptx_keras.data.settings import PrepareSettings

    settings = PrepareSettings(**{name: getattr(args, name) for name in PrepareSettings.names()})
    summary = prepare_dataset(
        args.source,
        args.output,
        settings,
        skip_bad=args.skip_bad,
        workers=args.workers,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        max_image_pixels=args.max_image_pixels,
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


if __name__ == "__main__":
    raise SystemExit(main())
