"""`python train.py` / `ptx-train`: train a model (the quick-start model when run without arguments)."""

import argparse
import os

from ptx_keras.cli.common import run_cli

__all__ = ["DEFAULT_CONFIG", "build_parser", "main"]


DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                              "configs", "quickstart.yaml")


def build_parser():
    p = argparse.ArgumentParser(
        prog="ptx-train",
        description="Train a pneumothorax segmentation model. Without arguments: the quick-start model on the "
        "built-in synthetic phantoms (CPU, a few minutes).",
    )
    p.add_argument("--config", help="YAML configuration (default: configs/quickstart.yaml)")
    p.add_argument("--data", help="raw source (image/mask folder, CSV manifest, SIIM-ACR folder) or prepared directory")
    p.add_argument("--output-dir", help="parent of the run directory (default: runs)")
    p.add_argument("--name", help="run name (the run directory is OUTPUT_DIR/NAME)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a configuration value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress output")
    return p


def _train(args):
    from ptx_keras.config import load_config

    extra = {}
    if args.data:
        extra.setdefault("data", {})["path"] = args.data
    if args.output_dir:
        extra["output_dir"] = args.output_dir
    if args.name:
        extra["name"] = args.name
    config_path = args.config or DEFAULT_CONFIG
    if not os.path.isfile(config_path):
        from ptx_keras.errors import ConfigError

        raise ConfigError(f"Configuration file not found: {config_path} (pass --config FILE)")
    cfg = load_config(config_path, args.overrides, extra=extra)

    from ptx_keras.workflows import train_evaluate_export

    result = train_evaluate_export(cfg, verbose=args.verbose)
    parts = [f"model: {result.training.best_model}"]
    if result.evaluation is not None:
        parts.append(f"metrics: {result.evaluation.summary_md}")
        parts.append(f"figures: {result.evaluation.out_dir}")
    if result.export is not None:
        parts.append(f"SavedModel: {result.export.path}")
    print(f"Done in {result.seconds / 60:.1f} min ({result.training.epochs} epochs). " + " | ".join(parts))
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(_train, args)


if __name__ == "__main__":
    raise SystemExit(main())
