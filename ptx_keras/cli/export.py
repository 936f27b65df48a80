"""`ptx-export RUN_DIR [--format savedmodel|onnx|litert]`: export a trained run for deployment (docs/deployment.md)."""

import argparse

from ptx_keras.cli.common import run_cli
from ptx_keras.constants import EXPORT_FORMAT_NAMES, EXPORT_FORMATS, SAVEDMODEL_FORMAT, TTA_MODES

__all__ = ["build_parser", "main"]


def build_parser():
    p = argparse.ArgumentParser(
        prog="ptx-export",
        description="Export a trained run with the preprocessing and the diagnosis rule inside the graph: a "
        "TensorFlow SavedModel in the versioned layout TF Serving expects (DIR/VERSION/), an ONNX model (ONNX "
        "Runtime) or a LiteRT model (.tflite), each with its export.json.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (config.yaml and best.keras)")
    p.add_argument(
        "--format",
        default=SAVEDMODEL_FORMAT,
        choices=EXPORT_FORMATS,
        help="savedmodel (default; TF Serving), onnx (ONNX Runtime) or litert (.tflite)",
    )
    p.add_argument(
        "--output",
        metavar="DIR",
        help="output directory (default: RUN_DIR/saved_model, RUN_DIR/onnx or RUN_DIR/litert)",
    )
    p.add_argument(
        "--version",
        type=int,
        metavar="N",
        help="SavedModel version number, a positive integer (default 1; savedmodel only)",
    )
    p.add_argument(
        "--tta",
        choices=TTA_MODES,
        help="test-time augmentation inside the graph: hflip averages the model on the image and its "
        "mirror (default: the run's evaluation.tta, what its thresholds were chosen with)",
    )
    return p


def _export(args):
    from ptx_keras.export import export_model

    result = export_model(args.run_dir, args.format, args.output, version=args.version, tta=args.tta)
    what = EXPORT_FORMAT_NAMES[result.format]
    print(
        f"{what}: {result.path} (signatures: {', '.join(result.signatures)}; diagnosis: "
        f"{result.thresholds.describe()}) | metadata: {result.metadata}"
    )
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(_export, args)


if __name__ == "__main__":
    raise SystemExit(main())
