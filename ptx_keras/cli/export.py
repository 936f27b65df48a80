"""`ptx-export RUN_DIR`: export a trained run as a TF Serving SavedModel (docs/deployment.md)."""

import argparse

from ptx_keras.cli.common import run_cli


def build_parser():
    p = argparse.ArgumentParser(
        prog="ptx-export",
        description="Export a trained run as a TensorFlow SavedModel with the preprocessing and the diagnosis rule "
        "inside the graph, in the versioned layout TF Serving expects (DIR/VERSION/).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (config.yaml and best.keras)")
    p.add_argument("--output", metavar="DIR", help="model base directory (default: RUN_DIR/saved_model)")
    p.add_argument("--version", type=int, default=1, metavar="N", help="version number, a positive integer (default 1)")
    return p


def _export(args):
    from ptx_keras.export import export_saved_model

    result = export_saved_model(args.run_dir, args.output, version=args.version)
    th = result.thresholds
    print(
        f"SavedModel: {result.path} (signatures: {', '.join(result.signatures)}; diagnosis: more than "
        f"{th.min_area:g} pixels at {th.reference_size}x{th.reference_size} above {th.mask_threshold:g}) "
        f"| metadata: {result.metadata}"
    )
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(_export, args)


if __name__ == "__main__":
    raise SystemExit(main())
