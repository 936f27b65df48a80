"""Training end to end on tiny phantoms: run directory, resume after SIGKILL, mirrored strategy, CLI errors."""

import csv
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

from ptx_keras.cli.train import main as train_main
from ptx_keras.config import load_config

import tiny

QUICKSTART = tiny.QUICKSTART

TINY = tiny.TRAINING


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _args(tmp_path, *extra, cache=None):
    cache = cache or str(tmp_path / "cache")
    sets = TINY + [f"data.cache_dir={cache}"] + list(extra)
    out = ["--config", QUICKSTART, "--output-dir", str(tmp_path / "runs"), "--verbose", "0"]
    for s in sets:
        out += ["--set", s]
    return out


@pytest.mark.slow
def test_two_epochs_end_to_end_writes_the_run_directory(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = train_main(_args(tmp_path, "train.epochs=2", "name=e2e"))
    assert rc == 0
    # The pipeline shuffles; Keras' `shuffle=True` default would warn that it ignores it on a dataset.
    assert not [w for w in caught if "shuffle=True" in str(w.message)]
    run = tmp_path / "runs" / "e2e"
    for name in ("config.yaml", "history.csv", "best.keras", "training_curves.png"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "backup").is_dir()
    rows = _history(str(run))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"loss", "dsc1", "mpa", "val_loss", "val_dsc1", "val_mpa"} <= set(rows[0])
    from ptx_keras.runs import RunDir

    prepared = RunDir(str(run)).prepared_dir()
    assert prepared and os.path.isfile(os.path.join(prepared, "dataset.json"))
    assert RunDir(str(run)).read_metadata()["status"] == "trained"
    assert "prepared_dir" not in (run / "config.yaml").read_text()  # run state lives in run.json
    import keras

    model = keras.models.load_model(str(run / "best.keras"))
    assert model.output_shape[-1] == 2
    if (run / "eval").exists():
        assert (run / "eval" / "test" / "summary.json").is_file()
    if (run / "saved_model").exists():
        assert (run / "saved_model" / "1").is_dir()


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time, keras
    from ptx_keras.cli import train as t
    # Slow each training step a little so that the parent can kill the process in the middle of an epoch.
    class Slow(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.25)
    import ptx_keras.training as tr
    _orig = tr.make_callbacks
    tr.make_callbacks = lambda cfg, run_dir: _orig(cfg, run_dir) + [Slow()]
    sys.exit(t.main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_without_lost_or_repeated_epochs(tmp_path):
    epochs = 4
    args = _args(
        tmp_path,
        f"train.epochs={epochs}",
        "name=resume",
        "train.evaluate=false",
        "train.export=false",
        "train.early_stopping_patience=null",
    )
    run = tmp_path / "runs" / "resume"
    cmd = [sys.executable, "-c", _KILL_SCRIPT] + args
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline:
        if (run / "history.csv").is_file() and len(_history(str(run))) >= 2:
            break
        if proc.poll() is not None:
            pytest.fail("training ended before it could be killed: " + proc.stderr.read().decode()[-2000:])
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("training did not reach epoch 2 in time")
    time.sleep(0.6)  # now inside epoch 3
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(_history(str(run)))
    assert done_before < epochs
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    rows = _history(str(run))
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import sys, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ptx_keras.cli import train as t
    sys.exit(t.main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    args = _args(
        tmp_path,
        "train.epochs=1",
        "name=mirrored",
        "train.strategy=mirrored",
        "train.evaluate=false",
        "train.export=false",
    )
    res = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT] + args,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 replica(s)" in res.stderr  # the run line is logged (stderr)
    assert len(_history(str(tmp_path / "runs" / "mirrored"))) == 1


def test_config_typo_gives_one_line_with_suggestion(tmp_path, capsys):
    rc = train_main(["--config", QUICKSTART, "--output-dir", str(tmp_path), "--set", "train.epohcs=1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.count("\n") == 0 and err.startswith("error:")
    assert "Did you mean 'epochs'" in err


def test_missing_data_path_is_one_line_error(tmp_path, capsys):
    rc = train_main(_args(tmp_path, "name=x") + ["--data", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Data path does not exist" in err and "nowhere" in err


def test_unwritable_output_dir_is_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    rc = train_main(["--config", QUICKSTART, "--output-dir", str(blocker), "--verbose", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Cannot write to the output directory" in err


@pytest.mark.slow
def test_resolution_mismatch_and_indivisible_size(tmp_path, capsys):
    cache = str(tmp_path / "cache")
    # Prepare the tiny phantoms once (through a 0-epoch-free path: run one epoch without eval/export).
    assert (
        train_main(
            _args(tmp_path, "train.epochs=1", "name=p", "train.evaluate=false", "train.export=false", cache=cache)
        )
        == 0
    )
    from ptx_keras.runs import RunDir

    prepared = RunDir(str(tmp_path / "runs" / "p")).prepared_dir()
    capsys.readouterr()
    rc = train_main(_args(tmp_path, "name=q", "data.image_size=96", cache=cache) + ["--data", prepared])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "prepared at 64x64" in err and "data.image_size=96" in err
    # 7 poolings need sides divisible by 128: the 64 px data cannot feed this model.
    rc = train_main(
        _args(tmp_path, "name=r", "model.options={growth_rate: 2, num_pools: 7, layers_per_block: 1}", cache=cache)
        + ["--data", prepared]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "64" in err and "128" in err and err.count("\n") == 0


def test_bn_momentum_reaches_nested_batchnorm_layers():
    import keras

    from ptx_keras.models import build_model
    from ptx_keras.training import set_bn_momentum

    model = build_model(
        "ms_scse_fc_densenet103",
        input_shape=(32, 32, 1),
        layers_per_block=1,
        num_pools=2,
        growth_rate=2,
        first_conv_filters=4,
        multiscale_filters=2,
    )
    bns = [l for l in model._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    # 5 dense layers (one per block) + 2 transitions down, each with one BatchNormalization.
    assert set_bn_momentum(model, 0.9) == len(bns) == 7
    assert {l.momentum for l in bns} == {0.9}


def test_bn_momentum_out_of_range_is_refused():
    from ptx_keras.errors import ConfigError

    with pytest.raises(ConfigError, match="train.bn_momentum"):
        load_config(QUICKSTART, ["train.bn_momentum=1.5"])


@pytest.mark.parametrize("choice, disabled", [("auto", True), ("on", False), ("off", True)])
def test_graph_optimizer_choice_sets_grappler(choice, disabled):
    # auto = Grappler off without a GPU (this test machine has none): same step time, much faster first step.
    import tensorflow as tf

    from ptx_keras.training import configure_execution

    cfg = load_config(QUICKSTART, [f"train.graph_optimizer={choice}"])
    before = tf.config.optimizer.get_experimental_options()
    try:
        _, _, grappler = configure_execution(cfg.train)
        assert grappler is not disabled
        assert tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False) is disabled
    finally:
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": before.get("disable_meta_optimizer", False)}
        )


def test_mixed_precision_on_without_a_gpu_warns(caplog):
    # float16 on a CPU is tens of times slower per step (docs/training.md): the run says so at its start.
    import keras
    import tensorflow as tf

    from ptx_keras.training import configure_execution

    before = keras.mixed_precision.global_policy().name
    grappler_before = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    try:
        with caplog.at_level(logging.WARNING, logger="ptx_keras.training"):
            mixed, _, _ = configure_execution(load_config(QUICKSTART, ["train.mixed_precision=on"]).train)
        assert mixed and keras.mixed_precision.global_policy().name == "mixed_float16"
        assert any("train.mixed_precision=on without a GPU" in r.getMessage() for r in caplog.records)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ptx_keras.training"):
            mixed, _, _ = configure_execution(load_config(QUICKSTART).train)  # auto: off on this CPU, silent
        assert not mixed and keras.mixed_precision.global_policy().name == "float32"
        assert not [r for r in caplog.records if "mixed_precision" in r.getMessage()]
    finally:
        keras.mixed_precision.set_global_policy(before)
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": grappler_before})


def test_graph_optimizer_bad_choice_is_refused():
    from ptx_keras.errors import ConfigError

    with pytest.raises(ConfigError, match="train.graph_optimizer"):
        load_config(QUICKSTART, ["train.graph_optimizer=sometimes"])


# --- Training on crops (data.crop_size) -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sets, message",
    [
        (["data.crop_size=64"], r"data.crop_size must be null or an int below data.image_size=64. Received: 64"),
        (["data.crop_size=half"], r"data.crop_size must be an integer. Received: 'half'"),
        (["data.crop_size=32", "data.crop_foreground=2"], r"data.crop_foreground must be a number in \[0, 1\]"),
    ],
)
def test_crop_settings_are_checked(sets, message):
    from ptx_keras.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(QUICKSTART, TINY + sets)


def test_crop_size_the_poolings_cannot_divide_is_a_config_error():
    from ptx_keras.errors import ConfigError
    from ptx_keras.training import build_and_compile

    cfg = load_config(QUICKSTART, TINY + ["data.crop_size=36"])  # 3 poolings: multiples of 8
    with pytest.raises(ConfigError, match=r"data.crop_size=36.*36 is not divisible by 8"):
        build_and_compile(cfg, jit_compile=False)


def test_crop_model_takes_any_size_and_its_fixed_copy_gives_the_same_outputs():
    import numpy as np

    from ptx_keras.training import build_and_compile, fixed_size_model

    cfg = load_config(QUICKSTART, TINY + ["data.crop_size=32", "model.options.dropout_rate=0.0"])
    model = build_and_compile(cfg, jit_compile=False)
    assert model.input_shape[1:3] == (None, None)
    images = np.random.default_rng(0).uniform(size=(2, 64, 64, cfg.data.channels)).astype(np.float32)
    crops = images[:, :32, :32]
    assert model.predict(crops, verbose=0).shape == (2, 32, 32, 2)  # trains on crops
    fixed = fixed_size_model(cfg, model)
    assert fixed.input_shape == (None, 64, 64, cfg.data.channels)
    np.testing.assert_allclose(fixed.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    plain = build_and_compile(load_config(QUICKSTART, TINY), jit_compile=False)
    assert fixed_size_model(cfg, plain) is plain  # already at a fixed size: unchanged


@pytest.mark.slow
def test_training_on_crops_validates_whole_images_and_deploys_at_the_prepared_size(tmp_path):
    import keras

    # The standard augmentation's geometric transforms need the crops' static size.
    sets = [
        "train.epochs=1",
        "train.steps_per_epoch=2",
        "data.crop_size=32",
        "data.augment.preset=standard",
        "name=crops",
    ]
    assert train_main(_args(tmp_path, *sets)) == 0
    run = tmp_path / "runs" / "crops"
    rows = _history(str(run))
    assert len(rows) == 1 and rows[0]["val_dsc1"] != ""
    model = keras.models.load_model(str(run / "best.keras"))
    assert model.input_shape[1:3] == (64, 64)  # the whole image, as every export needs
    if (run / "saved_model").exists():
        assert (run / "saved_model" / "1").is_dir()
