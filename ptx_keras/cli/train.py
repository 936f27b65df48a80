"""`python train.py` / `ptx-train`: train a model (without `--config`: the paper's model on a GPU, the quick start on
a CPU)."""

import argparse
import os

from ptx_keras.cli.common import run_cli

__all__ = ["CONFIGS_DIR", "CPU_RECIPE", "DEFAULT_CONFIG", "GPU_CONFIG", "build_parser", "choose_config", "main"]

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
DEFAULT_CONFIG = os.path.join(CONFIGS_DIR, "quickstart.yaml")  # no --config on a machine without a GPU
GPU_CONFIG = os.path.join(CONFIGS_DIR, "ms_scse_fc_densenet103.yaml")  # no --config with a visible GPU: the paper's
CPU_RECIPE = os.path.join(CONFIGS_DIR, "small_cpu.yaml")  # what the first line suggests for --data on a CPU


def _visible_gpus():
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def _rel(path):
    """`configs/x.yaml` when run from the repository, else the absolute path."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def choose_config(config, data):
    """The configuration file to train and the first line to print: why that one.

    `--config` always wins. Without it a visible GPU selects the paper's model (`GPU_CONFIG`) and a CPU the
    quick start (`DEFAULT_CONFIG`); with `--data` on a CPU the line points to the CPU recipe (`CPU_RECIPE`).

    Returns:
        `(path, line)`.
    """
    if config:
        return config, f"Configuration: {config} (--config)"
    gpus = _visible_gpus()
    if gpus:
        names = ", ".join(g.name.replace("/physical_device:", "") for g in gpus)
        return GPU_CONFIG, (
            f"Configuration: {_rel(GPU_CONFIG)}, the paper's model (no --config and {len(gpus)} "
            f"GPU(s) visible: {names}); --config FILE chooses another"
        )
    line = f"Configuration: {_rel(DEFAULT_CONFIG)}, the CPU quick start (no --config and no GPU visible)"
    if data:
        line += (
            f"; for a data set of your own on a CPU use the CPU recipe: --config {_rel(CPU_RECIPE)} (docs/training.md)"
        )
    return DEFAULT_CONFIG, line


def build_parser():
    p = argparse.ArgumentParser(
        prog="ptx-train",
        description="Train a pneumothorax segmentation model. Without --config: the paper's model when a GPU is "
        "visible, else the quick-start model (on the built-in synthetic phantoms without --data: a few minutes).",
    )
    p.add_argument(
        "--config",
        help="YAML configuration (default: configs/ms_scse_fc_densenet103.yaml when a GPU "
        "is visible, else configs/quickstart.yaml)",
    )
    p.add_argument("--data", help="raw source (image/mask folder, CSV manifest, SIIM-ACR folder) or prepared directory")
    p.add_argument(
        "--init-from",
        metavar="RUN_DIR|FILE.keras",
        help="start from the weights of a run (its best.keras) or a .keras file, matched by layer name "
        "(train.init_from; docs/training.md, Fine-tuning)",
    )
    p.add_argument("--output-dir", help="parent of the run directory (default: runs)")
    p.add_argument("--name", help="run name (the run directory is OUTPUT_DIR/NAME)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a configuration value, e.g. --set train.epochs=5 (repeatable)",
    )
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
    if args.init_from:
        extra["train"] = {"init_from": args.init_from}
    config_path, line = choose_config(args.config, args.data)
    print(line, flush=True)
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
