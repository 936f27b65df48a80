"""What do the inference options cost? One JSON line per measurement.

- `predict`: seconds per image of the shared prediction loop (`ptx_keras.inference.ModelRunner`) for each mode:
  `none`, `hflip` (flip TTA: two model calls), `mc_dropout:N` and `tta:N` (the N uncertainty samples of
  `ModelRunner.sample`, on top of the deterministic prediction, as `ptx-predict --uncertainty` runs them). Each
  measurement runs in a fresh process (one warm-up batch, then `--batches` batches of `--batch` images), the modes
  alternating over `--rounds`, so that ratios are measured under the same load.
- `search` (with `--search`): seconds of `ptx_keras.diagnosis.search_thresholds` alone (prediction excluded) on
  the counts of `--search-n` synthetic images: the pair, the triplet, and the triplet with the `both` gate.

The model is `--run`'s `best.keras`, or by default the quick-start architecture (`configs/quickstart.yaml`) with
an aux head and dropout 0.2, untrained (the cost does not depend on the weights).

Usage: `python benchmarks/inference_options.py [--run RUN_DIR] [--modes none hflip mc_dropout:10 tta:2]
[--batch 8 --batches 4 --rounds 2] [--search --search-n 2000]`. Quote the figures with the machine line and
say whether the machine was shared.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _machine import machine  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

_WORKER = """
import json, sys, time
import numpy as np
from ptx_keras.runtime import configure_process
configure_process()
import keras
from ptx_keras.inference import ModelRunner
run, mode, batch, batches = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if run:
    from ptx_keras.runs import RunDir
    model = RunDir(run).load_model()
else:
    from ptx_keras.config import load_config
    from ptx_keras.models import build_model
    cfg = load_config(sys.argv[5], overrides=["model.options.aux_head=true", "model.options.dropout_rate=0.2"])
    size = cfg.data.image_size
    model = build_model(cfg.model.name, input_shape=(size, size, cfg.data.channels), **cfg.model.options)
_, size, _, channels = model.input_shape
x = np.random.default_rng(0).random((batch, size, size, channels)).astype(np.float32)
method, _, samples = mode.partition(":")
runner = ModelRunner.from_keras(model, tta="hflip" if mode == "hflip" else "none")
def step():
    runner.outputs(x)
    if samples:
        runner.sample(x, method, int(samples))
step()  # warm-up: traces
start = time.perf_counter()
for _ in range(batches):
    step()
print(json.dumps({"seconds_per_image": (time.perf_counter() - start) / (batches * batch), "size": size}))
"""


def emit(name, **values):
    import keras
    import tensorflow as tf

    print(
        json.dumps({"measurement": name, **values, **machine(tensorflow=tf.__version__, keras=keras.__version__)}),
        flush=True,
    )


def predict(run, modes, batch, batches, rounds, config):
    for r in range(rounds):
        for mode in modes:
            out = subprocess.run(
                [sys.executable, "-c", _WORKER, run or "", mode, str(batch), str(batches), config],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            emit(
                "predict",
                mode=mode,
                round=r,
                batch=batch,
                images=batch * batches,
                model=run or config,
                size=result["size"],
                seconds_per_image=round(result["seconds_per_image"], 4),
            )


def search(n, seed=0):
    from ptx_keras import constants as C
    from ptx_keras.diagnosis import search_thresholds

    rng = np.random.default_rng(seed)
    levels = list(C.SEARCH_MASK_THRESHOLDS)
    labels = rng.random(n) < 0.5
    base = rng.integers(0, 2000, n) * labels
    areas = np.stack([base * (1 - t) + rng.integers(0, 40, n) for t in levels], axis=1).astype(int)
    true = (base * 0.7).astype(int)
    inter = np.minimum(areas, true[:, None])
    aux = np.clip(labels * 0.6 + rng.random(n) * 0.4, 0, 1)
    common = dict(areas=areas, pixels=256 * 256, levels=levels, intersections=inter, true_areas=true)
    for name, kw in (
        ("pair", {}),
        ("triplet", dict(form="triplet")),
        ("triplet+both", dict(form="triplet", gate="both", aux=aux)),
    ):
        start = time.perf_counter()
        out = search_thresholds(labels.astype(int), **common, **kw)
        emit("search", form=name, n=n, candidates=len(out["grid"]), seconds=round(time.perf_counter() - start, 3))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="run directory (default: the quick-start architecture, untrained)")
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "quickstart.yaml"))
    p.add_argument("--modes", nargs="+", default=["none", "hflip", "mc_dropout:10", "tta:2"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--search", action="store_true", help="also time the threshold search on synthetic counts")
    p.add_argument("--search-n", type=int, default=2000)
    p.add_argument("--no-predict", action="store_true")
    args = p.parse_args(argv)
    if not args.no_predict:
        predict(args.run, args.modes, args.batch, args.batches, args.rounds, args.config)
    if args.search:
        search(args.search_n)


if __name__ == "__main__":
    main()
