"""`python train.py` / `ptx-train`: train a model (without `--config`: the paper's model on a GPU, the quick start on
a CPU)."""

import argparse
import os
import subprocess

from ptx_keras.cli.common import run_cli

__all__ = [
    "CONFIGS_DIR",
    "CPU_RECIPE",
    "DEFAULT_CONFIG",
    "GPU_CONFIG",
    "build_parser",
    "choose_config",
    "main",
    "visible_gpus",
]

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
DEFAULT_CONFIG = os.path.join(CONFIGS_DIR, "quickstart.yaml")  # no --config on a machine without a GPU
GPU_CONFIG = os.path.join(CONFIGS_DIR, "ms_scse_fc_densenet103.yaml")  # no --config with a visible GPU: the paper's
# What the first line suggests for --data on a CPU: the small-CPU recipe fine-tuned from the shipped phantom
# checkpoint (docs/training.md, "Learning a new kind of image").
CPU_RECIPE = os.path.join(CONFIGS_DIR, "finetune_cpu.yaml")


PROC_GPUS = "/proc/driver/nvidia/gpus"  # one folder per GPU the NVIDIA driver knows, with an `information` file


def _nvidia_smi_list():
    """`nvidia-smi -L`'s lines, stripped (`GPU 0: NAME (UUID: GPU-...)`, and `MIG ... (UUID: MIG-...)` below a GPU
    split into MIG devices), or None where it is missing or fails."""
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else None


def _proc_gpu_list():
    """The driver's GPUs from `PROC_GPUS` as `GPU i: MODEL` lines (in bus order, as CUDA numbers them)."""
    try:
        buses = sorted(os.listdir(PROC_GPUS))
    except OSError:
        return []
    lines = []
    for i, bus in enumerate(buses):
        model = "NVIDIA GPU"
        try:
            with open(os.path.join(PROC_GPUS, bus, "information"), encoding="utf-8", errors="replace") as f:
                model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("Model:")), model)
        except OSError:
            pass
        lines.append(f"GPU {i}: {model}")
    return lines


def visible_gpus():
    """The NVIDIA GPUs this process may use, found without importing TensorFlow (whose start-up log lines would
    otherwise come before `choose_config`'s line): `nvidia-smi -L`, else the driver's `/proc` folder, filtered by
    `CUDA_VISIBLE_DEVICES` as CUDA reads it (indices or `GPU-`/`MIG-` UUIDs up to the first invalid entry; empty
    or `-1`: none).

    Returns:
        A list of names such as `"GPU 0: NVIDIA H100 80GB HBM3"`, empty on a machine without a visible GPU.
    """
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is not None and mask.strip() in ("", "-1"):
        return []
    lines = _nvidia_smi_list()
    if lines is None:
        lines = _proc_gpu_list()
    gpus = [line for line in lines if line.startswith("GPU ")]
    if mask is None:
        return [_device_name(line) for line in gpus]
    chosen = []
    for token in (t.strip() for t in mask.split(",")):
        if token.isdigit():
            match = [gpus[int(token)]] if int(token) < len(gpus) else []
        else:  # a GPU or MIG device by (a prefix of) its UUID
            match = [line for line in lines if token.startswith(("GPU-", "MIG-")) and f"UUID: {token}" in line]
        if len(match) != 1:  # CUDA ignores the entries from the first invalid one on
            break
        chosen.append(_device_name(match[0]))
    return chosen


def _device_name(line):
    """`GPU 0: NVIDIA H100 80GB HBM3` from an `nvidia-smi -L` line (without its UUID and padding)."""
    return " ".join(line.split(" (UUID:")[0].split()).rstrip(":")


def _rel(path):
    """`configs/x.yaml` when run from the repository, else the absolute path."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def choose_config(config, data):
    """The configuration file to train and the first line to print: why that one.

    `--config` always wins. Without it a visible GPU selects the paper's model (`GPU_CONFIG`) and a CPU the
    quick start (`DEFAULT_CONFIG`); with `--data` on a CPU the line points to the CPU recipe (`CPU_RECIPE`).
    The GPUs are found without importing TensorFlow (`visible_gpus`), so that the line is the command's first.

    Returns:
        `(path, line)`.
    """
    if config:
        return config, f"Configuration: {config} (--config)"
    gpus = visible_gpus()
    if gpus:
        return GPU_CONFIG, (
            f"Configuration: {_rel(GPU_CONFIG)}, the paper's model (no --config and {len(gpus)} "
            f"GPU(s) visible: {'; '.join(gpus)}); --config FILE chooses another"
        )
    line = f"Configuration: {_rel(DEFAULT_CONFIG)}, the CPU quick start (no --config and no GPU visible)"
    if data:
        line += (
            f"; for a data set of your own on a CPU use the CPU recipe, which fine-tunes the shipped phantom "
            f"checkpoint: --config {_rel(CPU_RECIPE)} (docs/training.md)"
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
        metavar="RUN_DIR|FILE.keras|CHECKPOINT",
        help="start from the weights of a run (its best.keras), a .keras file or a shipped checkpoint "
        "(phantom_small_cpu), matched by layer name (train.init_from; docs/training.md, Fine-tuning)",
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
