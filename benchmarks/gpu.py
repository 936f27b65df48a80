"""The paper's model on a GPU: training and inference throughput with and without mixed precision, one short run.

For each Keras backend that is installed (TensorFlow where it is, else Keras on JAX; `--backend` picks) the
script starts one worker process (`KERAS_BACKEND` must be set before Keras starts) that, for each precision
policy (`float32`, `mixed_float16`, `mixed_bfloat16`), builds `ms_scse_fc_densenet103` at `--size` pixels and
times:

* a training step (`train_on_batch`: Adam, pixel-wise cross-entropy, Keras' `jit_compile="auto"`, i.e. XLA on
  a GPU; under `mixed_float16` Keras adds loss scaling by itself) at `--train-batch` images;
* inference (`predict_on_batch`) at `--infer-batch` images.

Both return NumPy values, so every timed call waits for the device. The first `--warmup` calls (tracing, XLA
compilation, autotuning) are timed apart. One JSON line per (backend, policy, task), with the machine
(`benchmarks/_machine.py`) and the accelerator the backend saw:

    python benchmarks/gpu.py [--backend auto|tensorflow|jax|all] [--size 256] [--train-batch 8]
        [--infer-batch 16] [--steps 20] [--warmup 3] [--policies float32 mixed_float16 mixed_bfloat16]
    python benchmarks/gpu.py --dry-run     # tiny model, 32 px, one step each, on the CPU: checks the script

Without a GPU the full run refuses to start (exit status 2); `--dry-run` runs anywhere (tests/test_benchmarks_gpu.py).
A whole run of three policies on one backend at the defaults takes a few minutes on one H100-class GPU.
"""

import argparse
import functools
import importlib.util
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # run from a checkout without installing the package

from benchmarks._machine import machine  # noqa: E402

MODEL = "ms_scse_fc_densenet103"
POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
BACKENDS = ("tensorflow", "jax")
LEARNING_RATE = 1e-4
CHANNELS = 3
# --dry-run: the paper model's layout shrunk to a few layers, so that the script's every path runs in seconds.
DRY_RUN = {
    "size": 32,
    "train_batch": 2,
    "infer_batch": 2,
    "steps": 1,
    "warmup": 1,
    "model": {"growth_rate": 2, "layers_per_block": 2, "num_pools": 2, "multiscale_filters": 2},
}


def installed_backends():
    """The Keras backends of `BACKENDS` whose package is importable, in that order."""
    return [name for name in BACKENDS if importlib.util.find_spec(name) is not None]


def _accelerators(backend):
    """The GPUs (or other accelerators) the backend sees, as strings."""
    if backend == "tensorflow":
        import tensorflow as tf

        found = []
        for device in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(device)
            found.append(f"{device.name} {details.get('device_name', '')} cc{details.get('compute_capability', '')}")
        return found
    import jax

    return [f"{d.platform}:{d.id} {getattr(d, 'device_kind', '')}" for d in jax.devices() if d.platform != "cpu"]


def _timed(fn, warmup, calls):
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return first, time.perf_counter() - start


def worker(options):
    """One backend (set by the parent through KERAS_BACKEND): every policy's training step and inference."""
    import keras
    import numpy as np

    from ptx_keras.models import build_model

    backend = keras.backend.backend()
    devices = _accelerators(backend)
    if not devices and not options["dry_run"]:
        return [
            {
                "measurement": "gpu",
                "backend": backend,
                "error": "no GPU visible to this backend: use --dry-run to check the script on a CPU",
            }
        ]
    size = options["size"]
    rng = np.random.default_rng(0)
    lines = []
    for policy in options["policies"]:
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(0)
        model = build_model(MODEL, input_shape=(size, size, CHANNELS), **options.get("model", {}))
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE),
            loss=keras.losses.CategoricalCrossentropy(),
            jit_compile="auto",
        )
        b = options["train_batch"]
        images = rng.random((b, size, size, CHANNELS), dtype=np.float32)
        labels = np.eye(2, dtype=np.float32)[(rng.random((b, size, size)) > 0.9).astype(int)]
        step = functools.partial(model.train_on_batch, images, labels)
        first, total = _timed(step, options["warmup"], options["steps"])
        common = {
            "measurement": "gpu",
            "backend": backend,
            "keras": keras.__version__,
            "policy": policy,
            "model": MODEL,
            "size": size,
            "jit_compile": bool(model.jit_compile),
            "devices": devices,
        }
        lines.append(
            {
                **common,
                "task": "train",
                "batch": b,
                "steps": options["steps"],
                "warmup_s": round(first, 2),
                "s_per_step": round(total / options["steps"], 4),
                "images_per_s": round(b * options["steps"] / total, 2),
            }
        )
        b = options["infer_batch"]
        images = rng.random((b, size, size, CHANNELS), dtype=np.float32)
        call = functools.partial(model.predict_on_batch, images)
        first, total = _timed(call, options["warmup"], options["steps"])
        lines.append(
            {
                **common,
                "task": "infer",
                "batch": b,
                "calls": options["steps"],
                "warmup_s": round(first, 2),
                "s_per_call": round(total / options["steps"], 4),
                "images_per_s": round(b * options["steps"] / total, 2),
            }
        )
        keras.backend.clear_session()
    return lines


def _run_worker(backend, options, timeout):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(options)]
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [{"measurement": "gpu", "backend": backend, "error": f"timed out after {timeout} s"}]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"measurement": "gpu", "backend": backend, "error": f"worker exit {done.returncode}: {tail}"}]
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "all", *BACKENDS),
        help="auto: TensorFlow where installed, else JAX; all: every installed one",
    )
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--infer-batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20, help="timed calls per task")
    p.add_argument("--warmup", type=int, default=3, help="untimed-for-throughput first calls (compilation)")
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    p.add_argument("--timeout", type=int, default=900, help="seconds per backend")
    p.add_argument("--dry-run", action="store_true", help="tiny model on any device: checks that the script runs")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        for line in worker(json.loads(args.worker)):
            print(json.dumps(line), flush=True)
        return 0

    info = machine()
    available = installed_backends()
    wanted = {"auto": available[:1], "all": available}.get(args.backend, [args.backend])
    if not wanted or not set(wanted) <= set(available):
        print(
            json.dumps(
                {
                    "measurement": "gpu",
                    "error": f"backend {args.backend} not installed (installed: {', '.join(available) or 'none'})",
                    "machine": info,
                }
            ),
            flush=True,
        )
        return 2
    options = {
        "size": args.size,
        "train_batch": args.train_batch,
        "infer_batch": args.infer_batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "policies": args.policies,
        "dry_run": args.dry_run,
    }
    if args.dry_run:
        options.update(DRY_RUN)
    status = 0
    for backend in wanted:
        for line in _run_worker(backend, options, args.timeout):
            status = status or (2 if "error" in line else 0)
            print(json.dumps({**line, "dry_run": args.dry_run, "machine": info}), flush=True)
            if "error" in line:
                break
    return status


if __name__ == "__main__":
    sys.exit(main())
