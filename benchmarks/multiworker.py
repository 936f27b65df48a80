"""Two local multi-worker processes against one process: seconds per epoch of the same training.

Prepares a small phantom data set once, then trains the quick-start architecture (MS_scSE_FC-DenseNet shrunk as in
configs/quickstart.yaml) with `ptx-train`, alternating fresh runs of

* `single`: one process, the default strategy, global batch `--batch`;
* `two_workers`: two processes on this machine (`train.strategy=multi_worker`, TF_CONFIG on localhost ports), the
  same global batch split over them.

Each run records when each epoch starts and ends (a callback injected into training); the figure is the median
epoch time from the second epoch on (the first includes tracing). Prints one JSON line per run and a summary line
with the ratio `single / two_workers` (above 1: the two workers are faster). Both workers run on the same cores,
so on one machine this measures what the collective exchange costs, not what a second machine would add.

    python benchmarks/multiworker.py --repeats 2
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _machine import machine  # noqa: E402

CONFIG = textwrap.dedent(
    """
    name: bench
    data: {{image_size: {size}, channels: 1}}
    model:
      name: ms_scse_fc_densenet103
      options: {{layers_per_block: 3, num_pools: 4, growth_rate: 8, first_conv_filters: 24, multiscale_filters: 8,
                dropout_rate: 0.0}}
    loss: {{name: sw_cel}}
    train:
      epochs: {epochs}
      batch_size: {batch}
      learning_rate: 1.0e-3
      early_stopping_patience: null
      tensorboard: false
      evaluate: false
      export: false
    """
)

# ptx-train with a callback that appends "epoch start end" (time.time()) to $PTX_BENCH_TIMES.
SCRIPT = textwrap.dedent(
    """
    import os, sys, time, keras
    import ptx_keras.training as training

    class Times(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.time()

        def on_epoch_end(self, epoch, logs=None):
            with open(os.environ["PTX_BENCH_TIMES"], "a") as f:
                f.write(f"{epoch} {self.start} {time.time()}\\n")

    make_callbacks = training.make_callbacks
    training.make_callbacks = lambda cfg, run: [Times()] + make_callbacks(cfg, run)
    from ptx_keras.cli.train import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _prepare(work, images, size):
    from ptx_keras.data.phantoms import write_phantom_dataset
    from ptx_keras.data.prepare import prepare_dataset

    prepared = os.path.join(work, "prepared")
    write_phantom_dataset(
        os.path.join(work, "raw"), images, size=size, seed=0, progress=False, workers=1, conspicuity=2.0
    )
    prepare_dataset(
        os.path.join(work, "raw"),
        prepared,
        image_size=size,
        split_fractions=(0.5, 0.25, 0.25),
        shard_size=8,
        workers=1,
        progress=False,
    )
    return prepared


def _run(mode, work, prepared, config, index):
    out = os.path.join(work, f"{mode}-{index}")
    times = os.path.join(work, f"{mode}-{index}.times")
    args = ["--config", config, "--data", prepared, "--output-dir", out, "--verbose", "0"]
    workers = 1 if mode == "single" else 2
    cluster = [f"localhost:{port}" for port in _ports(workers)]
    procs = []
    start = time.time()
    for task in range(workers):
        env = dict(os.environ, PTX_BENCH_TIMES=f"{times}.{task}")
        extra = []
        if mode != "single":
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": cluster}, "task": {"type": "worker", "index": task}})
            extra = ["--set", "train.strategy=multi_worker"]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", SCRIPT, *args, *extra],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{mode} run failed:\n{err[-3000:]}")
    wall = time.time() - start
    with open(f"{times}.0") as f:  # the chief's (or the single process's) epochs
        epochs = [tuple(map(float, line.split()))[1:] for line in f]
    steady = [end - begin for begin, end in epochs[1:]]
    return {
        "mode": mode,
        "run": index,
        "workers": workers,
        "epoch_seconds": [round(s, 2) for s in steady],
        "median_epoch_seconds": round(statistics.median(steady), 3),
        "first_epoch_seconds": round(epochs[0][1] - epochs[0][0], 2),
        "wall_seconds": round(wall, 1),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=64, help="phantoms; half of them train")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8, help="global batch")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--work-dir", help="default: a temporary directory")
    args = p.parse_args()

    import tensorflow as tf

    info = machine(tensorflow=tf.__version__)
    work = args.work_dir or tempfile.mkdtemp(prefix="ptx-bench-mw-")
    prepared = _prepare(work, args.images, args.size)
    config = os.path.join(work, "bench.yaml")
    with open(config, "w") as f:
        f.write(CONFIG.format(size=args.size, epochs=args.epochs, batch=args.batch))
    settings = {"images_train": args.images // 2, "size": args.size, "batch": args.batch, "epochs": args.epochs}
    results = {"single": [], "two_workers": []}
    for index in range(args.repeats):
        for mode in ("single", "two_workers"):  # alternating fresh processes
            result = _run(mode, work, prepared, config, index)
            results[mode].append(result["median_epoch_seconds"])
            print(json.dumps({"benchmark": "multiworker", **settings, **result, "machine": info}), flush=True)
    single, two = statistics.median(results["single"]), statistics.median(results["two_workers"])
    print(
        json.dumps(
            {
                "benchmark": "multiworker_summary",
                **settings,
                "single_epoch_seconds": single,
                "two_workers_epoch_seconds": two,
                "speedup": round(single / two, 3),
                "machine": info,
            }
        )
    )


if __name__ == "__main__":
    main()
