"""What `train.weight_decay` does to trained weights: 0 vs the paper's 1e-4, coupled (default) and decoupled.

Trains the quick-start architecture (MS_scSE_FC-DenseNet shrunk as in configs/quickstart.yaml) with SW-CEL at
the paper's learning rate (1e-4) for `--steps` steps on a fixed random data set (images and blob masks; the
weights' response to the decay does not need meaningful data), once per setting, from the same initial
weights and with the same batches and dropout seeds. Prints one JSON line per setting: the L2 norm of all
trainable weights, the mean and largest change of a weight against the `weight_decay: 0` run, and the
fraction of weights that differ from it at all.

    python benchmarks/weight_decay.py --steps 200
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from _machine import machine  # noqa: E402

SETTINGS = (("none", 0.0, "coupled"), ("coupled", 1e-4, "coupled"), ("decoupled", 1e-4, "decoupled"))


def _data(n, size, seed):
    from ptx_keras.data.weight_maps import spatial_weight_map
    from ptx_keras.targets import pack_targets

    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 1)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    masks = []
    for i in range(n):
        cy, cx, r = rng.integers(8, size - 8, 2).tolist() + [int(rng.integers(3, 10))]
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) if i % 2 else np.zeros((size, size), bool)
        x[i, mask, 0] *= 0.3  # darker where the "pneumothorax" is
        masks.append(mask)
    masks = np.stack(masks)
    weights = np.stack([spatial_weight_map(m) for m in masks]).astype(np.float32)
    return x, np.asarray(pack_targets(masks.astype(np.float32), weights))


def _train(weight_decay, mode, steps, size, x, y, seed):
    import keras

    from ptx_keras.losses import get_loss
    from ptx_keras.models import build_model
    from ptx_keras.optimizers import make_optimizer

    keras.utils.set_random_seed(seed)
    model = build_model(
        "ms_scse_fc_densenet103",
        input_shape=(size, size, 1),
        layers_per_block=3,
        num_pools=4,
        growth_rate=8,
        first_conv_filters=24,
        multiscale_filters=8,
    )
    model.compile(
        optimizer=make_optimizer(learning_rate=1e-4, weight_decay=weight_decay, weight_decay_mode=mode),
        loss=get_loss("sw_cel"),
    )
    start = time.perf_counter()
    batch = 4
    for step in range(steps):
        i = (step * batch) % len(x)
        model.train_on_batch(x[i : i + batch], y[i : i + batch])
    return [w.numpy() for w in model.trainable_weights], time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import keras
    import tensorflow as tf

    x, y = _data(32, args.size, args.seed)
    runs = {name: _train(wd, mode, args.steps, args.size, x, y, args.seed) for name, wd, mode in SETTINGS}
    reference = np.concatenate([w.ravel() for w in runs["none"][0]])
    for (name, wd, mode), (weights, seconds) in zip(SETTINGS, runs.values()):
        flat = np.concatenate([w.ravel() for w in weights])
        delta = np.abs(flat - reference)
        print(
            json.dumps(
                {
                    "benchmark": "weight_decay",
                    "setting": name,
                    "weight_decay": wd,
                    "mode": mode,
                    "steps": args.steps,
                    "size": args.size,
                    "weights": int(flat.size),
                    "l2_norm": round(float(np.linalg.norm(flat)), 5),
                    "mean_abs_change_vs_none": float(delta.mean()),
                    "max_abs_change_vs_none": float(delta.max()),
                    "fraction_changed_vs_none": round(float(np.mean(delta > 0)), 4),
                    "seconds": round(seconds, 1),
                    "machine": machine(tensorflow=tf.__version__, keras=keras.__version__),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
