"""The package against a plain PyTorch FC-DenseNet103 (`peer_torch.py`), measured side by side.

Every measurement runs in a fresh process, and the package's and the peer's processes alternate (package,
peer, peer, package, ...), so that both see the same machine: on a shared host the speed drifts within
minutes. Both get the same input (NumPy, seed 0; NCHW for the peer), the same thread counts (the frameworks'
defaults, or `--threads`) and do the same work:

* inference at 256 x 256, batch 1 and 8: the package as `ptx-predict` and evaluation run it
  (`model.predict_on_batch`: a `tf.function`, XLA as `jit_compile="auto"` resolves), each batch size in its
  own process started as `ptx-predict --batch-size N` starts (`configure_process(purpose="serve",
  batch_size=N)` before TensorFlow), the peer in `torch.inference_mode()`;
* a training step at batch 4: Adam (lr 1e-4) and the pixel-wise cross-entropy, the package compiled as
  `ptx_keras.training` runs it (`configure_execution` with the default `train` settings: its mixed
  precision, XLA and Grappler choices, and `ptx_keras.runtime.configure_process` before TensorFlow
  starts), the peer in eager PyTorch. The package's `ms_scse_fc_densenet103` (the paper's model) is
  measured too; its ratio is to the peer's FC-DenseNet103.

These are the command-line path (variant `package`). The library path (variant `library`, `--paths`) is a
user's script: `import ptx_keras` first (nothing else: the import applies the process settings), then
`keras`, `ptx_keras.build_model`, `model.predict(x, batch_size=N)` for inference and `model.compile(Adam,
CategoricalCrossentropy)` with Keras' defaults and `model.fit(x, y, batch_size=4)` for the training step, all
in one process.

Printed JSON lines (each with the machine and the 1-minute load average):

* `side_by_side_process`: one per worker process: images/s of every task (over all its timed calls, and from
  its median call), each call's wall time, the process's wall, user and system CPU-seconds and minor page
  faults for each task (where the allocator churn shows), and the host's steal time during the timed calls
  (`host_steal_s`: CPU time the hypervisor gave to other machines, which stalls a call without costing CPU);
* `side_by_side`: per task, the package's and the peer's images/s (median over rounds) and
  `ratio` = package / peer (> 1: the package is faster), with every round's ratio, and `ratio_median_call`, the
  same from each process's median call (robust to one stalled call).

    python benchmarks/side_by_side.py [--quick] [--rounds 2] [--threads N] [--tasks infer train]
        [--paths cli library] [--infer-batches 1 8] [--package-models fc_densenet103 ms_scse_fc_densenet103]
        [--train-models ms_scse_fc_densenet103]
        [--variant NAME:VAR=VALUE,VAR=VALUE ...]   # package variants (environment), e.g. fused:PTX_KERAS_FUSED_OPS=1

`--variant` replaces the single package configuration by named ones (each a set of environment variables
for its processes, e.g. `PTX_KERAS_FUSED_OPS=0`, `PTX_KERAS_CPU_ALLOCATOR=default`, `TF_ENABLE_ONEDNN_OPTS=0`,
or this script's `BENCH_INTRA_OP_THREADS` / `BENCH_INTER_OP_THREADS`), all alternated with the peer: how the
levers in docs/benchmarks.md were measured.
Needs the `bench` extra (`pip install -e ".[bench]"`: PyTorch, CPU build).
"""

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Run from a checkout without installing the package.
sys.path.insert(0, ROOT)

from benchmarks._machine import machine  # noqa: E402

SIZE = 256
CHANNELS = 3
INFER_BATCHES = (1, 8)
TRAIN_BATCH = 4
LEARNING_RATE = 1e-4
PEER_MODEL = "fc_densenet103"


def _usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": time.perf_counter(), "user": r.ru_utime, "system": r.ru_stime, "minflt": r.ru_minflt}


def _delta(start):
    end = _usage()
    return {
        "wall_s": round(end["wall"] - start["wall"], 2),
        "user_s": round(end["user"] - start["user"], 2),
        "system_s": round(end["system"] - start["system"], 2),
        "minor_faults": end["minflt"] - start["minflt"],
    }


def _data(batch, seed=0):
    """The shared input: `(images NHWC float32, labels NHW int)` from NumPy seed `seed`."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.random((batch, SIZE, SIZE, CHANNELS), dtype=np.float32)
    labels = (rng.random((batch, SIZE, SIZE)) > 0.9).astype(np.int64)
    return images, labels


def _host_steal_s():
    """Seconds of CPU time the hypervisor took from this machine's CPUs so far (all CPUs; `/proc/stat`'s
    steal column), or None where the system does not report it."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK") if fields[0] == "cpu" and len(fields) > 8 else None
    except (OSError, ValueError, IndexError):
        return None


def _time_calls(fn, calls):
    """`calls` timed calls of `fn` after a first call timed apart.

    Returns:
        `(first call's usage, timed usage)`; the timed usage also holds each call's wall time (`call_s`) and the
        host's steal time during the timed calls (`host_steal_s`, None where unknown).
    """
    usage = _usage()
    fn()
    first = _delta(usage)
    usage, steal, each = _usage(), _host_steal_s(), []
    for _ in range(calls):
        began = time.perf_counter()
        fn()
        each.append(time.perf_counter() - began)
    timed = _delta(usage)
    after = _host_steal_s()
    timed["call_s"] = [round(t, 3) for t in each]
    timed["host_steal_s"] = None if steal is None or after is None else round(after - steal, 2)
    return first, timed


def _result(task, batch, first, usage, calls):
    median_call = statistics.median(usage["call_s"])
    return {
        "task": task,
        "batch": batch,
        "first_call_s": first["wall_s"],
        "first_call_cpu_s": round(first["user_s"] + first["system_s"], 1),
        "calls": calls,
        "s_per_call": round(usage["wall_s"] / calls, 3),
        "images_per_s": round(batch * calls / usage["wall_s"], 3),
        # One stalled call (a wait in the process, or the host taking a CPU away: host_steal_s) moves the
        # mean, not this.
        "images_per_s_median_call": round(batch / median_call, 3),
        "cpu_s_per_call": round((usage["user_s"] + usage["system_s"]) / calls, 3),
        **usage,
        "load_average": round(os.getloadavg()[0], 2),
    }


# ----------------------------------------------------------------------------------------------------------
# Workers (one framework, one fresh process)
# ----------------------------------------------------------------------------------------------------------
def package_worker(config):
    from ptx_keras.runtime import configure_process

    # Before TensorFlow starts, as the CLIs do: ptx-predict with its batch size, training with the defaults.
    serve = config.get("serve_batch")
    process = configure_process(purpose="serve", batch_size=serve) if serve else configure_process()
    import keras
    import numpy as np
    import tensorflow as tf

    from ptx_keras.config import TrainConfig
    from ptx_keras.models import build_model
    from ptx_keras.ops import fused_ops_enabled
    from ptx_keras.training import configure_execution

    # `--threads` for both frameworks; a variant may set TensorFlow's two pools apart (the thread lever).
    intra = int(os.environ.get("BENCH_INTRA_OP_THREADS", 0)) or config.get("threads")
    inter = int(os.environ.get("BENCH_INTER_OP_THREADS", 0)) or config.get("threads")
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    mixed, jit, grappler = configure_execution(TrainConfig())
    info = {
        "framework": "package",
        "model": config["model"],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "mixed_precision": mixed,
        "jit_compile": jit,
        "grappler": grappler,
        "fused_ops": fused_ops_enabled(),
        "process_settings": process,
        "serve_batch": serve,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    results = []
    model = build_model(config["model"], input_shape=(SIZE, SIZE, CHANNELS))
    info["params"] = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    if "infer" in config["tasks"]:
        for batch in config["infer_batches"]:
            images = _data(batch)[0]
            calls = config["infer_calls"][str(batch)]
            first, usage = _time_calls(lambda: model.predict_on_batch(images), calls)
            results.append(_result("infer", batch, first, usage, calls))
    if "train" in config["tasks"]:
        images, labels = _data(TRAIN_BATCH, seed=1)
        onehot = np.eye(2, dtype=np.float32)[labels]
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE),
            loss=keras.losses.CategoricalCrossentropy(),
            jit_compile=jit,
        )
        model.optimizer.build(model.trainable_variables)  # as training.build_and_compile does
        calls = config["train_steps"]
        first, usage = _time_calls(lambda: model.train_on_batch(images, onehot), calls)
        results.append(_result("train", TRAIN_BATCH, first, usage, calls))
    return info, results


def library_worker(config):
    """A user's script: `import ptx_keras` before Keras, then Keras' own `predict` and `fit` with its defaults."""
    # ptx_keras first: its import puts the process settings in place before TensorFlow starts.
    import ptx_keras  # isort: skip
    import keras
    import numpy as np
    import tensorflow as tf

    if config.get("threads"):
        tf.config.threading.set_intra_op_parallelism_threads(config["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(config["threads"])
    info = {
        "framework": "library",
        "model": config["model"],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "process_settings": {k: os.environ.get(k) for k in ptx_keras.runtime.PROCESS_SETTINGS},
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
    }
    results = []
    model = ptx_keras.build_model(config["model"], input_shape=(SIZE, SIZE, CHANNELS))
    info["params"] = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    if "infer" in config["tasks"]:
        for batch in config["infer_batches"]:
            images = _data(batch)[0]
            calls = config["infer_calls"][str(batch)]
            predict = functools.partial(model.predict, images, batch_size=batch, verbose=0)
            first, usage = _time_calls(predict, calls)
            results.append(_result("infer", batch, first, usage, calls))
    if "train" in config["tasks"]:
        images, labels = _data(TRAIN_BATCH, seed=1)
        onehot = np.eye(2, dtype=np.float32)[labels]
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE), loss=keras.losses.CategoricalCrossentropy()
        )
        info["jit_compile"] = model.jit_compile
        calls = config["train_steps"]
        first, usage = _time_calls(
            lambda: model.fit(images, onehot, batch_size=TRAIN_BATCH, epochs=1, verbose=0), calls
        )
        results.append(_result("train", TRAIN_BATCH, first, usage, calls))
    return info, results


def peer_worker(config):
    import torch

    from benchmarks.peer_torch import build_peer

    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    model = build_peer(CHANNELS)
    info = {
        "framework": "peer",
        "model": PEER_MODEL,
        "torch": torch.__version__,
        "params": sum(p.numel() for p in model.parameters()),
        "intra_op_threads": torch.get_num_threads(),
        "inter_op_threads": torch.get_num_interop_threads(),
    }
    results = []
    if "infer" in config["tasks"]:
        model.eval()
        for batch in config["infer_batches"]:
            images = torch.from_numpy(_data(batch)[0]).permute(0, 3, 1, 2).contiguous()
            calls = config["infer_calls"][str(batch)]

            def infer():
                with torch.inference_mode():
                    return model(images)

            first, usage = _time_calls(infer, calls)
            results.append(_result("infer", batch, first, usage, calls))
    if "train" in config["tasks"]:
        model.train()
        images, labels = _data(TRAIN_BATCH, seed=1)
        images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        labels = torch.from_numpy(labels)
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

        def step():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()

        calls = config["train_steps"]
        first, usage = _time_calls(step, calls)
        results.append(_result("train", TRAIN_BATCH, first, usage, calls))
    return info, results


# ----------------------------------------------------------------------------------------------------------
# The parent: alternating fresh processes
# ----------------------------------------------------------------------------------------------------------
def _run_worker(config, env, timeout):
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(config)]
    began = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})
    except subprocess.TimeoutExpired:
        return {"config": config, "error": f"timed out after {timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"config": config, "error": f"worker exit {done.returncode}: {tail}"}
    out = json.loads(lines[-1])
    out["process_s"] = round(time.perf_counter() - began, 1)
    return out


def _parse_variants(specs):
    """`["fused:A=1,B=2", "plain:A=0"]` -> `[("fused", {"A": "1", "B": "2"}), ("plain", {"A": "0"})]`."""
    variants = []
    for spec in specs:
        name, _, assignments = spec.partition(":")
        env = {}
        for item in filter(None, assignments.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"--variant {spec!r}: expected NAME:VAR=VALUE,...")
            env[key] = value
        variants.append((name, env))
    return variants


def package_processes(variants, paths, models, tasks, infer_batches, base, train_models=None):
    """`[(variant name, environment, worker config)]`: the package's processes of one round.

    The command-line path runs each inference batch size in its own process (`ptx-predict --batch-size N` sets
    the process up for N) and the training step in another, for every model of `train_models` (default: all);
    models after the first are timed for the training step only. The library path runs the first model's tasks
    in one process, as a script would.
    """
    processes = []
    train_models = models if train_models is None else train_models
    for name, env in variants or [("package", {})]:
        for path in paths:
            label = name if path == "cli" else ("library" if name == "package" else f"{name}-library")
            for i, model in enumerate(models):
                model_tasks = [
                    t for t in tasks if (t == "infer" and i == 0) or (t == "train" and model in train_models)
                ]
                config = {**base, "model": model}
                if path == "library":
                    if i == 0:
                        processes.append((label, env, {**config, "framework": "library", "tasks": tasks}))
                    continue
                if "infer" in model_tasks:
                    for batch in infer_batches:
                        processes.append(
                            (
                                label,
                                env,
                                {
                                    **config,
                                    "framework": "package",
                                    "tasks": ["infer"],
                                    "infer_batches": [batch],
                                    "serve_batch": batch,
                                },
                            )
                        )
                if "train" in model_tasks:
                    processes.append((label, env, {**config, "framework": "package", "tasks": ["train"]}))
    return processes


def schedule(rounds, package_configs, peer):
    """The order of the worker processes: each round runs every package configuration and the peer once,
    alternating which side goes first (package first in even rounds, the peer first in odd ones)."""
    order = []
    for r in range(rounds):
        round_ = list(package_configs)
        if peer:
            round_ = round_ + ["peer"] if r % 2 == 0 else ["peer"] + round_
        order.extend((r, item) for item in round_)
    return order


def summarize(processes):
    """`side_by_side` lines: per (variant, model, task, batch) the median images/s against the peer's.

    `ratio` uses each process's images/s over all its timed calls (the mean call); `ratio_median_call` uses each
    process's median call instead, which a single stalled call does not move.
    """
    results = {}  # (variant, model, task, batch) -> {round: result}
    for p in processes:
        if "error" in p:
            continue
        for r in p["results"]:
            results.setdefault((p["variant"], p["info"]["model"], r["task"], r["batch"]), {})[p["round"]] = r

    def median(by_round, field):
        return statistics.median(r[field] for r in by_round.values())

    lines = []
    for (variant, model, task, batch), ours in sorted(results.items()):
        if variant == "peer":
            continue
        peer = results.get(("peer", PEER_MODEL, task, batch), {})
        line = {
            "variant": variant,
            "model": model,
            "task": task,
            "batch": batch,
            "package_images_per_s": round(median(ours, "images_per_s"), 3),
            "peer_model": PEER_MODEL,
            "peer_images_per_s": round(median(peer, "images_per_s"), 3) if peer else None,
        }
        rounds = sorted(set(ours) & set(peer))
        if rounds:
            line["ratio"] = round(line["package_images_per_s"] / line["peer_images_per_s"], 3)
            line["ratio_per_round"] = [round(ours[r]["images_per_s"] / peer[r]["images_per_s"], 3) for r in rounds]
            field = "images_per_s_median_call"
            line["ratio_median_call"] = round(median(ours, field) / median(peer, field), 3)
            line["target"] = ">= 1.5"
        lines.append(line)
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one round, fewer timed calls")
    p.add_argument("--rounds", type=int, help="rounds of alternating processes (default 3, --quick 1)")
    p.add_argument("--threads", type=int, help="intra- and inter-op threads of both (default: the frameworks')")
    p.add_argument("--tasks", nargs="+", default=["infer", "train"], choices=("infer", "train"))
    p.add_argument(
        "--paths",
        nargs="+",
        default=["cli", "library"],
        choices=("cli", "library"),
        help="the package as its commands run it (cli) and as a user's script does (library)",
    )
    p.add_argument("--infer-batches", nargs="+", type=int, default=list(INFER_BATCHES), choices=INFER_BATCHES)
    p.add_argument(
        "--package-models",
        nargs="+",
        default=[PEER_MODEL, "ms_scse_fc_densenet103"],
        help="the first is timed for every task, the others for the training step only",
    )
    p.add_argument(
        "--train-models",
        nargs="+",
        help="the models whose training step the command-line path times (default: all of --package-models)",
    )
    p.add_argument("--variant", action="append", default=[], help="NAME:VAR=VALUE,... (repeatable)")
    p.add_argument("--no-peer", action="store_true", help="package variants only")
    p.add_argument("--train-steps", type=int)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        config = json.loads(args.worker)
        started = _usage()
        worker = {"package": package_worker, "library": library_worker, "peer": peer_worker}[config["framework"]]
        info, results = worker(config)
        info["process_usage"] = _delta(started)
        info["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps({"info": info, "results": results}), flush=True)
        return 0

    info = machine()
    if not args.no_peer:
        try:
            import torch  # noqa: F401
        except ImportError:
            print(
                json.dumps(
                    {
                        "measurement": "side_by_side",
                        "error": 'PyTorch is not installed: the peer needs the bench extra (pip install -e ".[bench]")',
                        "machine": info,
                    }
                ),
                flush=True,
            )
            return 2
    rounds = args.rounds or (1 if args.quick else 3)
    calls = {"1": 3, "8": 1} if args.quick else {"1": 6, "8": 2}
    steps = args.train_steps or (2 if args.quick else 3)
    base = {"threads": args.threads, "infer_calls": calls, "train_steps": steps, "infer_batches": args.infer_batches}
    package_configs = package_processes(
        _parse_variants(args.variant),
        args.paths,
        args.package_models,
        args.tasks,
        args.infer_batches,
        base,
        args.train_models,
    )
    peer = None if args.no_peer else ("peer", {}, {**base, "framework": "peer", "tasks": args.tasks})
    processes, began = [], time.perf_counter()
    for r, item in schedule(rounds, package_configs, peer is not None):
        name, env, config = peer if item == "peer" else item
        load_before = round(os.getloadavg()[0], 2)
        out = _run_worker(config, env, timeout=1800)
        out.update(variant=name, round=r, env=env, load_before=load_before)
        processes.append(out)
        print(json.dumps({"measurement": "side_by_side_process", **out, "machine": info}), flush=True)
    for line in summarize(processes):
        print(
            json.dumps(
                {
                    "measurement": "side_by_side",
                    **line,
                    "rounds": rounds,
                    "seconds": round(time.perf_counter() - began),
                    "machine": info,
                }
            ),
            flush=True,
        )
    return 1 if any("error" in p for p in processes) else 0


if __name__ == "__main__":
    sys.exit(main())
