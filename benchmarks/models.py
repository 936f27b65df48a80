"""Model speed against the machine's own limit: inference and training steps of the FC-DenseNets.

Prints one JSON line per measurement, each with a machine description:

* `matmul_reference`: float32 matrix-product GFLOP/s with TensorFlow (2048 x 2048, all cores), measured at
  the start and end of the run and again right before every inference configuration and every timed
  training loop (in its worker), so that every model figure is a ratio to the machine's speed at that
  moment (`reference_gflops` on each line: on this shared host it drifted by up to 25 % within a run);
* `inference`: images/s, GFLOP/s (2 x the package's multiply-accumulate count) and the ratio to the
  reference, per model, batch size and mode (`graph`: `tf.function`; `xla`: `jit_compile=True`), with the
  seconds the first call took (tracing, graph optimisation or XLA compilation);
* `train_step`: a training step compiled as `ptx_keras.training` does (AdamW, `sw_cel`, DSC1 + MPA, the
  optimizer built before the first step): images/s, GFLOP/s (forward + backward counted as 3 x forward),
  the ratio to the reference, the first step's seconds and two peak memories. Each configuration runs in
  its own subprocess with TensorFlow's BFC allocator on the CPU (`TF_CPU_ALLOCATOR_USE_BFC=true`, the
  allocator TensorFlow uses on GPUs), so that `peak_tensor_mib` is the most tensor memory live at once
  during the timed steps (`tf.config.experimental.get_memory_info`): the figure that decides the batch
  size on a GPU. `peak_rss_steps_mib` is the process's peak resident set (`VmHWM`, reset after the
  warm-up step through `/proc/self/clear_refs`), which also counts what the allocators keep after a free.

Wall-clock rates depend on what else the machine runs: every line also carries the 1-minute load average
and the CPU-seconds the process used; the ratios are given both for wall-clock rates (meaningful within one
run only) and for rates per CPU-second (`ratio_to_matmul_per_cpu_s`, much less dependent on the load).
`--quick` (5-6 minutes on 2 cores) leaves out XLA at batch 8 and the extra training configurations
(FC-DenseNet103, XLA, Grappler on) and times fewer calls; every kind of figure is still printed.

    python benchmarks/models.py [--quick] [--size 256] [--models ms_scse_fc_densenet103 fc_densenet103]
                                [--skip reference inference train]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

# Run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._machine import machine  # noqa: E402

MODELS = ("ms_scse_fc_densenet103", "fc_densenet103")
CHANNELS = 3  # the paper models take grayscale replicated to 3 channels
BFC_VARIABLE = "TF_CPU_ALLOCATOR_USE_BFC"


def _machine_info():
    import keras
    import tensorflow as tf

    return machine(tensorflow=tf.__version__, keras=keras.__version__)


def _emit(name, machine_info, **values):
    print(
        json.dumps(
            {"measurement": name, **values, "load_average": round(os.getloadavg()[0], 2), "machine": machine_info}
        ),
        flush=True,
    )


def _cpu_seconds():
    times = os.times()
    return times.user + times.system


def _timed(fn, repeats, min_seconds):
    """Runs `fn` at least `repeats` times and `min_seconds` long; returns `(calls, wall s, CPU s)`."""
    calls, start, cpu = 0, time.perf_counter(), _cpu_seconds()
    while calls < repeats or time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    return calls, time.perf_counter() - start, _cpu_seconds() - cpu


def matmul_reference(size=2048, min_seconds=3.0):
    """float32 matrix-product rate with TensorFlow on all cores.

    Args:
        size: Side of the square matrices.
        min_seconds: Minimum measuring time (after one warm-up product).

    Returns:
        dict with `gflops` (wall clock) and `gflops_per_cpu_s`.
    """
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    product = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    product(a, b).numpy()
    calls, wall, cpu = _timed(lambda: product(a, b).numpy(), 3, min_seconds)
    flops = 2.0 * size**3 * calls
    return {
        "size": size,
        "calls": calls,
        "gflops": round(flops / wall / 1e9, 1),
        "gflops_per_cpu_s": round(flops / cpu / 1e9, 1),
    }


def _model_and_macs(name, size, **overrides):
    from ptx_keras.models import build_model
    from ptx_keras.models.summary import count_macs

    model = build_model(name, input_shape=(size, size, CHANNELS), **overrides)
    return model, count_macs(model, (size, size, CHANNELS))


def inference(model, macs, size, batch, mode, reference, repeats=3, min_seconds=5.0):
    """Inference speed of one model (`training=False`) in `mode` "graph" or "xla".

    Args:
        model: A built model taking `(batch, size, size, 3)`.
        macs: Its multiply-accumulates per image (`count_macs`).
        size, batch: Image side and batch size.
        mode: "graph" (`tf.function`) or "xla" (`tf.function(jit_compile=True)`).
        reference: The `matmul_reference` result (or None).
        repeats, min_seconds: Timed calls: at least this many and this long.

    Returns:
        dict of the measured figures (see the module docstring).
    """
    import numpy as np
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).random((batch, size, size, CHANNELS), np.float32))
    forward = tf.function(lambda x: model(x, training=False), jit_compile=mode == "xla")
    start = time.perf_counter()
    forward(x).numpy()
    first = time.perf_counter() - start
    calls, wall, cpu = _timed(lambda: forward(x).numpy(), repeats, min_seconds)
    flops = 2.0 * macs * batch * calls
    gflops = flops / wall / 1e9
    return {
        "model": model.name,
        "size": size,
        "batch": batch,
        "mode": mode,
        "gmacs_per_image": round(macs / 1e9, 3),
        "first_call_s": round(first, 1),
        "calls": calls,
        "s_per_batch": round(wall / calls, 3),
        "images_per_s": round(batch * calls / wall, 2),
        "gflops": round(gflops, 1),
        "gflops_per_cpu_s": round(flops / cpu / 1e9, 1),
        **_ratios(gflops, flops / cpu / 1e9, reference),
    }


def _ratios(gflops, gflops_per_cpu_s, reference):
    """Ratios to the matmul reference: of wall-clock rates, and of rates per CPU-second (less load-dependent)."""
    if not reference:
        return {}
    return {
        "reference_gflops": reference["gflops"],
        "ratio_to_matmul": round(gflops / reference["gflops"], 3),
        "ratio_to_matmul_per_cpu_s": round(gflops_per_cpu_s / reference["gflops_per_cpu_s"], 3),
    }


def _proc_status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB -> MiB
    return None


def _reset_peak_rss():
    """Resets VmHWM (Linux >= 4.0); returns False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _tensor_memory():
    """`{"current", "peak"}` bytes of live tensors on the CPU, or None (only the BFC allocator counts them)."""
    import tensorflow as tf

    if os.environ.get(BFC_VARIABLE, "").lower() != "true":
        return None
    try:
        return tf.config.experimental.get_memory_info("CPU:0")
    except (ValueError, RuntimeError):
        return None


def train_step(name, size, batch, memory_efficient=False, jit_compile=False, steps=3, grappler=True, reference=True):
    """One configuration's training-step speed and memory (run it in a fresh process for the memory).

    The model is compiled as `ptx_keras.training.build_and_compile` does. The first step (tracing and graph
    optimisation) is timed separately; the peak resident memory is read after `steps` further steps,
    with the peak reset after the first one so that graph construction does not count. With
    `reference=True` the matmul reference is measured in the same process just before the timed steps
    (`adjacent_reference`), and the ratios are taken to it.

    `grappler=False` turns TensorFlow's graph optimiser off, as `ptx_keras.training` does without a GPU
    (`train.graph_optimizer: auto`): on this CPU the step was no slower without it and needed less memory
    (docs/benchmarks.md). The full run adds one configuration with Grappler on.

    Returns:
        dict of the measured figures (see the module docstring).
    """
    import keras
    import numpy as np
    import tensorflow as tf

    if not grappler:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    from ptx_keras.losses import get_loss
    from ptx_keras.metrics import DSC1, MPA

    keras.utils.set_random_seed(0)
    model, macs = _model_and_macs(name, size, memory_efficient=memory_efficient)
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=1e-4),
        loss=get_loss("sw_cel"),
        metrics=[DSC1(), MPA()],
        jit_compile=jit_compile,
    )
    # Built here, the optimizer's variables are not created inside the traced step (which would trace it twice).
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((batch, size, size, CHANNELS), np.float32))
    mask = (rng.random((batch, size, size, 1)) > 0.9).astype(np.float32)
    y = tf.constant(np.concatenate([mask, 1.0 + 4.0 * mask], axis=-1))
    rss_before = _proc_status("VmRSS")
    start, cpu = time.perf_counter(), _cpu_seconds()
    model.train_on_batch(x, y)
    first, first_cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    peak_first = _proc_status("VmHWM")
    # The machine's speed drifts (other tenants of the host): the reference is measured right before the steps.
    adjacent = matmul_reference(min_seconds=2.0) if reference else None
    reset = _reset_peak_rss()
    baseline = _proc_status("VmRSS")
    tensors = _tensor_memory()
    if tensors is not None:
        tf.config.experimental.reset_memory_stats("CPU:0")
    calls, wall, cpu = _timed(lambda: model.train_on_batch(x, y), steps, 0.0)
    peak_tensors = _tensor_memory()
    flops = 3 * 2.0 * macs * batch * calls
    gflops = flops / wall / 1e9
    result = {
        "model": name,
        "size": size,
        "batch": batch,
        "memory_efficient": memory_efficient,
        "jit_compile": jit_compile,
        "grappler": grappler,
        "params": model.count_params(),
        "first_step_s": round(first, 1),
        "first_step_cpu_s": round(first_cpu, 1),
        "steps": calls,
        "s_per_step": round(wall / calls, 3),
        "cpu_s_per_step": round(cpu / calls, 3),
        "images_per_s": round(batch * calls / wall, 2),
        "gflops": round(gflops, 1),
        "gflops_per_cpu_s": round(flops / cpu / 1e9, 1),
        "rss_before_first_step_mib": round(rss_before),
        "peak_rss_first_step_mib": round(peak_first),
        "rss_after_first_step_mib": round(baseline),
        # Peak over the timed steps only (None where VmHWM cannot be reset: then it includes the first step).
        "peak_rss_steps_mib": round(_proc_status("VmHWM")) if reset else None,
        "max_rss_process_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        # Live tensors (None without the BFC allocator): after the first step, and the peak over the timed steps.
        "tensor_baseline_mib": None if tensors is None else round(tensors["current"] / 2**20),
        "peak_tensor_mib": None if peak_tensors is None else round(peak_tensors["peak"] / 2**20),
    }
    if adjacent:
        result["adjacent_reference"] = adjacent
    result["step_peak_over_baseline_mib"] = (
        None if result["peak_rss_steps_mib"] is None else result["peak_rss_steps_mib"] - round(rss_before)
    )
    return result


def _train_in_subprocess(config, reference, timeout):
    command = [sys.executable, os.path.abspath(__file__), "--train-worker", json.dumps(config)]
    env = {**os.environ, BFC_VARIABLE: "true"}  # read when TensorFlow starts: live-tensor accounting
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**config, "error": f"timed out after {timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {**config, "error": f"worker exit {done.returncode}: {tail}"}
    result = json.loads(lines[-1])
    result.update(_ratios(result["gflops"], result["gflops_per_cpu_s"], result.pop("adjacent_reference", reference)))
    return result


def memory_efficient_comparison(results):
    """Ratios of the `memory_efficient=True` training step to the default one (same model, no XLA or Grappler).

    Args:
        results: `train_step` result dicts.

    Returns:
        dict with the peak-memory ratios (live tensors and resident set over the pre-step baseline) and
        the step-time ratios (wall and CPU), or None when either configuration is missing or failed.
    """

    def pick(efficient):
        return next(
            (
                r
                for r in results
                if r.get("memory_efficient") == efficient
                and not r.get("jit_compile")
                and not r.get("grappler")
                and "error" not in r
            ),
            None,
        )

    default, efficient = pick(False), pick(True)
    if default is None or efficient is None or default["model"] != efficient["model"]:
        return None

    def ratio(key):
        a, b = default.get(key), efficient.get(key)
        return None if not a or b is None else round(b / a, 3)

    return {
        "model": default["model"],
        "peak_tensor_ratio": ratio("peak_tensor_mib"),
        "peak_rss_over_baseline_ratio": ratio("step_peak_over_baseline_mib"),
        "step_time_ratio": ratio("s_per_step"),
        "cpu_time_ratio": ratio("cpu_s_per_step"),
        "targets": {"peak_tensor_ratio": "<= 0.5", "step_time_ratio": "<= 1.4"},
    }


def plan(quick, models):
    """The inference and training configurations of a full or `--quick` run.

    `--quick` leaves out XLA at batch 8 (each compilation takes about a minute on 2 cores and XLA loses
    at batch 1 already) and the extra training configurations; it keeps every kind of figure.
    """
    inference_runs = [
        (name, batch, mode)
        for name in models
        for batch in (1, 8)
        for mode in ("graph", "xla")
        if not (quick and mode == "xla" and batch > 1)
    ]
    train_runs = [dict(model=models[0], memory_efficient=False), dict(model=models[0], memory_efficient=True)]
    if not quick:
        train_runs += [dict(model=name, memory_efficient=False) for name in models[1:]]
        train_runs += [dict(model=models[0], memory_efficient=False, jit_compile=True)]
        train_runs += [dict(model=models[0], memory_efficient=False, grappler=True)]
    return inference_runs, train_runs


def main(argv=None):
    from ptx_keras.runtime import configure_process

    configure_process()  # as the package's commands: BFC allocator and oneDNN, before TensorFlow starts
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and configurations (< 10 min in all)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--skip", nargs="*", default=(), choices=("reference", "inference", "train"))
    p.add_argument("--train-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.train_worker:
        config = json.loads(args.train_worker)
        result = train_step(config.pop("model"), **config)
        print(json.dumps(result), flush=True)
        return 0

    info = _machine_info()
    reference = None
    if "reference" not in args.skip:
        reference = matmul_reference(min_seconds=2.0 if args.quick else 5.0)
        _emit("matmul_reference", info, **reference)
    inference_runs, train_runs = plan(args.quick, args.models)
    if "inference" not in args.skip:
        built = {}
        for name, batch, mode in inference_runs:
            if name not in built:
                built = {name: _model_and_macs(name, args.size)}  # one model in memory at a time
            repeats = (2 if batch == 1 else 1) if args.quick else 5
            # Measured right before each configuration: the machine's speed drifts during a run.
            adjacent = matmul_reference(min_seconds=1.0 if args.quick else 3.0) if reference else None
            result = inference(
                *built[name], args.size, batch, mode, adjacent, repeats=repeats, min_seconds=0.0 if args.quick else 10.0
            )
            _emit("inference", info, **result)
    if "train" not in args.skip:
        trained = []
        for config in train_runs:
            config = {
                "size": args.size,
                "batch": args.train_batch,
                "steps": 2 if args.quick else 5,
                "grappler": False,
                "reference": reference is not None,
                **config,
            }
            trained.append(_train_in_subprocess(config, reference, timeout=900))
            _emit("train_step", info, **trained[-1])
        comparison = memory_efficient_comparison(trained)
        if comparison:
            _emit("memory_efficient_vs_default", info, **comparison)
    if reference is not None and "reference" not in args.skip:
        # Once more at the end: the load may have changed during the run.
        _emit("matmul_reference_end", info, **matmul_reference(min_seconds=2.0 if args.quick else 5.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
