"""The tiny configurations the tests share (not a test module: test modules import from here, never each other).

Fixtures built from these (runs on disk) live in `conftest.py`.
"""

import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")

# Shrinks the quick-start configuration to seconds: 24 phantoms at 64 px, a tiny FC-DenseNet.
TRAINING = [
    "data.phantoms.n=24",
    "data.phantoms.size=64",
    "data.phantoms.conspicuity=1",  # independent of the quick start's tuning
    "evaluation.search_thresholds=false",
    "data.image_size=64",
    "data.shard_size=8",
    "data.workers=1",
    "model.name=fc_densenet56",
    "model.options={growth_rate: 2, first_conv_filters: 8, num_pools: 3, layers_per_block: 2}",
    "train.batch_size=4",
    "train.tensorboard=false",
    "train.jit_compile=off",
]
# The same without the training keys, for runs that are made without training.
EVALUATION = [s for s in TRAINING if not s.startswith("train.")] + ["evaluation.batch_size=2"]

_FC = dict(input_shape=(32, 32, 3), growth_rate=2, layers_per_block=2, num_pools=2)
_UNET = dict(input_shape=(32, 32, 3), base_filters=4, depth=2)
# Width-reduced options of each preset of the paper's family (fast to build and train).
MODELS = {
    "fc_densenet56": _FC,
    "fc_densenet67": _FC,
    "fc_densenet103": dict(_FC, layers_per_block=[1, 2, 1, 2, 1]),
    "ms_scse_fc_densenet103": dict(_FC, multiscale_filters=2),
    "unet": _UNET,
    "ms_scse_unet": dict(_UNET, multiscale_filters=2),
}
# Width-reduced configurations of the baselines that keep every part of each architecture.
BASELINES = {
    "segnet": {"base_filters": 4, "convs_per_stage": (1, 1, 2, 1, 1)},
    "deeplabv3plus": {
        "blocks": (1, 1, 1, 2),
        "base_filters": 4,
        "aspp_filters": 8,
        "low_level_filters": 4,
        "decoder_filters": 8,
    },
    "denseaspp": {
        "backbone": "densenet121",
        "growth_rate": 4,
        "init_filters": 8,
        "block_config": (1, 1, 1, 1),
        "aspp_bottleneck_filters": 8,
        "aspp_growth_filters": 4,
    },
}


def small_fc(size, seed=None, **options):
    """The smallest FC-DenseNet the inference tests use (1 layer per block, 2 poolings) on `size` px greyscale;
    `seed` seeds Keras first (None: the test's own seed); `options` are further `build_model` overrides."""
    import keras

    from ptx_keras import build_model

    if seed is not None:
        keras.utils.set_random_seed(seed)
    return build_model(
        "fc_densenet56",
        input_shape=(size, size, 1),
        growth_rate=3,
        layers_per_block=1,
        num_pools=2,
        first_conv_filters=6,
        **options,
    )


BRIGHT_SIZE = 32  # side of the bright-is-pneumothorax model's images


def bright_is_ptx_model():
    """A 1x1-conv softmax: PTX probability sigmoid(20 (x - 0.5)), so bright pixels are the predicted mask."""
    import keras

    inp = keras.Input((BRIGHT_SIZE, BRIGHT_SIZE, 1))
    conv = keras.layers.Conv2D(2, 1)
    model = keras.Model(inp, keras.layers.Softmax()(conv(inp)), name="bright_is_ptx")
    conv.set_weights([np.array([[[[-10.0, 10.0]]]], np.float32), np.array([5.0, -5.0], np.float32)])
    return model


def make_bright_run(run):
    """Writes a run directory (config.yaml, best.keras) of `bright_is_ptx_model` into the folder `run`."""
    from ptx_keras.config import load_config, save_config

    cfg = load_config(extra={"model": {"name": "bright_is_ptx"}, "data": {"image_size": BRIGHT_SIZE, "channels": 1}})
    save_config(cfg, os.path.join(run, "config.yaml"))
    bright_is_ptx_model().save(os.path.join(run, "best.keras"))
    return run


def make_tiny_run(root, name="tiny", overrides=()):
    """A run directory as training leaves it (config.yaml, best.keras, history.csv), with an untrained model on
    the tiny phantoms prepared under `root` (a `pathlib.Path`); `overrides` are extra `--set` strings.

    Returns:
        `(run_dir, cfg, prepared_dir)`.
    """
    from ptx_keras.config import load_config, save_config
    from ptx_keras.data.resolve import resolve_data
    from ptx_keras.models import build_model
    from ptx_keras.runs import RunDir

    cfg = load_config(
        QUICKSTART,
        overrides=EVALUATION
        + [f"data.cache_dir={root / 'cache'}", f"output_dir={root / 'runs'}", f"name={name}", *overrides],
    )
    prepared = resolve_data(
        None, cfg.data, cache_dir=cfg.data.cache_dir, phantoms=cfg.data.phantoms, workers=1
    ).prepared_dir
    run = root / "runs" / name
    run.mkdir(parents=True)
    save_config(cfg, str(run / "config.yaml"))
    RunDir(str(run)).update_metadata(prepared_dir=prepared)
    model = build_model(cfg.model.name, input_shape=(64, 64, cfg.data.channels), num_classes=2, **cfg.model.options)
    model.save(str(run / "best.keras"))
    (run / "history.csv").write_text(
        "epoch,dsc1,loss,mpa,val_dsc1,val_loss,val_mpa\n0,0.1,2.0,0.5,0.2,1.9,0.55\n1,0.3,1.5,0.6,0.25,1.6,0.6\n"
    )
    return run, cfg, prepared


def smooth_picture(shape, seed=0):
    """A smooth random picture of `shape` in [0, 1] (Gaussian-filtered noise, sigma 4, stretched to the range)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random(shape), 4)
    return (x - x.min()) / (x.max() - x.min())


def load_benchmark(script):
    """Imports a script of `benchmarks/` (not a package module) from its path, for its tests."""
    import importlib.util

    name = os.path.splitext(os.path.basename(script))[0] + "_benchmark"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
