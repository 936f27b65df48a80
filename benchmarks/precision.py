"""Training-step time of the quick-start model under each Keras dtype policy, on this machine.

Why: `train.mixed_precision: on` selects `mixed_float16`, which pays on GPUs; on a CPU it may not, and CPUs
with AVX512_BF16 or AMX advertise bfloat16 units. Each policy (`float32`, `mixed_bfloat16`, `mixed_float16`)
is timed in its own process, the processes alternating over `--rounds` (the host's speed drifts), on the
quick-start network (configs/quickstart.yaml: 128 px, growth rate 8, 3 layers per block), compiled as
training compiles it (`ptx_keras.training.build_and_compile`, no XLA, Grappler off as `auto` resolves on a
CPU) with `sw_cel+dice`, on one fixed random batch (the step's cost does not depend on the values). After
`--warmup` untimed steps, `--steps` timed ones. One JSON line per process: wall and CPU milliseconds per
step, with the machine; then one summary line per policy: the median per-step wall time and its ratio to
float32's (> 1: slower than float32).

    python benchmarks/precision.py [--rounds 2] [--steps 10] [--size 128] [--batch 8]
        [--policies float32 mixed_bfloat16 mixed_float16]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks._machine import machine  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
QUICKSTART = os.path.join(os.path.dirname(HERE), "configs", "quickstart.yaml")


def worker(policy, size, batch, warmup, steps):
    """Times `steps` training steps under `policy` in this process; returns the JSON record."""
    from ptx_keras.runtime import configure_process

    configure_process()
    import keras
    import numpy as np
    import tensorflow as tf

    from ptx_keras.config import load_config
    from ptx_keras.targets import pack_targets
    from ptx_keras.training import build_and_compile

    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})  # as `auto` on a CPU
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    cfg = load_config(QUICKSTART, [f"data.image_size={size}", "loss.name=sw_cel+dice"])
    model = build_and_compile(cfg, jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, size, size, 1)).astype("float32")
    mask = (rng.random((batch, size, size)) > 0.9).astype("float32")
    y = pack_targets(mask, np.ones_like(mask))
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(data, steps_per_epoch=warmup, epochs=1, verbose=0)
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "bench": "precision_process",
        "policy": policy,
        "size": size,
        "batch": batch,
        "steps": steps,
        "wall_ms_per_step": round(1000 * wall / steps, 1),
        "cpu_ms_per_step": round(1000 * cpu / steps, 1),
        "load1": round(os.getloadavg()[0], 2),
        "machine": machine(tensorflow=tf.__version__, keras=keras.__version__),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.size, args.batch, args.warmup, args.steps)))
        return 0
    times = {policy: [] for policy in args.policies}
    for r in range(args.rounds):
        order = args.policies if r % 2 == 0 else list(reversed(args.policies))  # alternate who goes first
        for policy in order:
            out = subprocess.run(
                [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--worker",
                    policy,
                    "--size",
                    str(args.size),
                    "--batch",
                    str(args.batch),
                    "--warmup",
                    str(args.warmup),
                    "--steps",
                    str(args.steps),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            record = json.loads(out.strip().splitlines()[-1])
            print(json.dumps(record), flush=True)
            times[policy].append(record["wall_ms_per_step"])
    base = statistics.median(times["float32"]) if "float32" in times else None
    for policy, values in times.items():
        median = statistics.median(values)
        print(
            json.dumps(
                {
                    "bench": "precision",
                    "policy": policy,
                    "median_wall_ms_per_step": median,
                    "ratio_to_float32": round(median / base, 2) if base else None,
                    "rounds": values,
                    "machine": machine(),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
