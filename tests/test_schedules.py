"""Learning-rate schedules: hand-computed rates per step, plateau reductions, and resuming with BackupAndRestore."""

import math

import keras
import numpy as np
import pytest

from ptx_keras.schedules import LearningRateLogger, PlateauSchedule, check_schedule, make_schedule

import tiny

STEPS = 3  # steps per epoch: 12 samples, batch 4
X = np.random.default_rng(0).normal(size=(12, 2)).astype("float32")
Y = X.sum(axis=1, keepdims=True)


def _model(rate, set_after_build=False):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3 if set_after_build else rate), loss="mse")
    model.optimizer.build(model.trainable_variables)  # as training does: the backup restores into these
    if set_after_build:  # as training does: the optimizer exists before the steps per epoch are known
        model.optimizer.learning_rate = rate
    return model


class _Rates(keras.callbacks.Callback):
    """The learning rate of every step, as the optimizer sees it."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


class _Stop(keras.callbacks.Callback):
    def __init__(self, after_epoch):
        super().__init__()
        self.after_epoch = after_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after_epoch:
            self.model.stop_training = True


class _Score(keras.callbacks.Callback):
    """Writes a prescribed `val_score` into the logs (before the plateau callback reads it)."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["val_score"] = self.values[epoch]


def _fit(rate, callbacks, epochs, backup_dir=None, stop_after=None, set_after_build=False):
    model = _model(rate, set_after_build)
    rates = _Rates()
    cbs = list(callbacks)
    if backup_dir is not None:
        cbs.append(keras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=False))
    cbs.append(rates)
    if stop_after is not None:
        cbs.append(_Stop(stop_after))
    history = model.fit(X, Y, batch_size=4, epochs=epochs, callbacks=cbs, verbose=0, shuffle=False)
    return model, rates.rates, history.history


def _cosine(k, peak, low, warmup, total):
    if k < warmup:
        return peak * k / warmup
    return low + (peak - low) * (1 + math.cos(math.pi * (k - warmup) / (total - warmup))) / 2


def test_constant_is_the_paper_setting():
    rate, callbacks = make_schedule("constant", 1e-4, steps_per_epoch=STEPS, epochs=4)
    assert rate == 1e-4 and [type(c).__name__ for c in callbacks] == ["LearningRateLogger"]
    _, rates, history = _fit(rate, callbacks, epochs=2)
    assert rates == pytest.approx([1e-4] * 6) and history["learning_rate"] == pytest.approx([1e-4] * 2)


def test_cosine_with_warmup_matches_hand_computed_rates():
    peak, low, epochs, warmup_epochs = 1e-2, 1e-3, 4, 1
    rate, callbacks = make_schedule(
        "cosine", peak, steps_per_epoch=STEPS, epochs=epochs, warmup_epochs=warmup_epochs, min_learning_rate=low
    )
    _, rates, history = _fit(rate, callbacks, epochs=epochs)
    total, warmup = STEPS * epochs, STEPS * warmup_epochs
    expected = [_cosine(k, peak, low, warmup, total) for k in range(total)]
    # 0, 1/3, 2/3 of the peak, then the peak, then half a cosine towards the floor.
    assert expected[:4] == pytest.approx([0, peak / 3, 2 * peak / 3, peak])
    np.testing.assert_allclose(rates, expected, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(history["learning_rate"], expected[::STEPS], rtol=1e-5, atol=1e-9)


def test_cosine_without_warmup_and_constant_with_warmup():
    rate, _ = make_schedule("cosine", 1e-3, steps_per_epoch=STEPS, epochs=2)
    np.testing.assert_allclose(
        [float(rate(k)) for k in range(7)],
        [_cosine(k, 1e-3, 0.0, 0, 6) for k in range(6)] + [0.0],
        rtol=1e-5,
        atol=1e-12,
    )
    rate, _ = make_schedule("constant", 1e-3, steps_per_epoch=STEPS, epochs=4, warmup_epochs=2)
    np.testing.assert_allclose(
        [float(rate(k)) for k in range(12)], [1e-3 * k / 6 for k in range(6)] + [1e-3] * 6, rtol=1e-6, atol=1e-12
    )


@pytest.mark.parametrize("set_after_build", [False, True])
def test_resumed_cosine_continues_at_the_right_step(tmp_path, set_after_build):
    peak, epochs = 1e-2, 4
    rate, callbacks = make_schedule("cosine", peak, steps_per_epoch=STEPS, epochs=epochs, warmup_epochs=1)
    _, first, _ = _fit(
        rate,
        callbacks,
        epochs,
        backup_dir=tmp_path,
        stop_after=1,  # "killed" after 2 epochs
        set_after_build=set_after_build,
    )
    assert len(first) == 2 * STEPS
    rate, callbacks = make_schedule("cosine", peak, steps_per_epoch=STEPS, epochs=epochs, warmup_epochs=1)
    model, second, _ = _fit(
        rate,
        callbacks,
        epochs,
        backup_dir=tmp_path,  # a new process would do this
        set_after_build=set_after_build,
    )
    expected = [_cosine(k, peak, 0.0, STEPS, STEPS * epochs) for k in range(STEPS * epochs)]
    np.testing.assert_allclose(first + second, expected, rtol=1e-5, atol=1e-9)
    assert int(model.optimizer.iterations) == STEPS * epochs


SCORES = [0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7]
# patience 2, factor 0.5: no improvement at epochs 2 and 3 -> halved after epoch 3; again after epoch 6.
PLATEAU_RATES = [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def _plateau(history=None):
    return make_schedule(
        "plateau",
        1e-2,
        steps_per_epoch=STEPS,
        epochs=len(SCORES),
        plateau_patience=2,
        plateau_factor=0.5,
        monitor="val_score",
        mode="max",
        history=history,
    )


def test_plateau_halves_after_patience():
    rate, callbacks = _plateau()
    assert rate == 1e-2 and isinstance(callbacks[0], PlateauSchedule)
    assert isinstance(callbacks[-1], LearningRateLogger)
    _, rates, history = _fit(rate, [_Score(SCORES)] + callbacks, epochs=len(SCORES))
    np.testing.assert_allclose(history["learning_rate"], np.array(PLATEAU_RATES) * 1e-2, rtol=1e-6)
    np.testing.assert_allclose(rates[::STEPS], np.array(PLATEAU_RATES) * 1e-2, rtol=1e-6)


@pytest.mark.parametrize("stop_after", [2, 3])
def test_resumed_plateau_reduces_at_the_same_epochs(tmp_path, stop_after):
    """Killed while waiting (after epoch 2) or right after a reduction (after epoch 3)."""
    rate, callbacks = _plateau()
    _, first, _ = _fit(rate, [_Score(SCORES)] + callbacks, len(SCORES), backup_dir=tmp_path, stop_after=stop_after)
    done = stop_after + 1
    rate, callbacks = _plateau(history=lambda start: SCORES[:start])  # history.csv's values in training
    _, second, history = _fit(rate, [_Score(SCORES)] + callbacks, len(SCORES), backup_dir=tmp_path)
    np.testing.assert_allclose((first + second)[::STEPS], np.array(PLATEAU_RATES) * 1e-2, rtol=1e-6)
    np.testing.assert_allclose(history["learning_rate"], np.array(PLATEAU_RATES[done:]) * 1e-2, rtol=1e-6)


def test_resumed_plateau_without_history_would_wait_again(tmp_path):
    """What the replay prevents: Keras' callback alone forgets that epoch 2 already waited."""
    rate, callbacks = _plateau()
    _fit(rate, [_Score(SCORES)] + callbacks, len(SCORES), backup_dir=tmp_path, stop_after=2)
    rate, callbacks = _plateau(history=None)
    _, second, _ = _fit(rate, [_Score(SCORES)] + callbacks, len(SCORES), backup_dir=tmp_path)
    assert second[STEPS] == pytest.approx(1e-2)  # epoch 4 not reduced: PLATEAU_RATES[4] is 0.5


@pytest.mark.parametrize(
    "args, match",
    [
        (("linear", 1e-3), r"lr_schedule must be one of \['constant', 'cosine', 'plateau'\]"),
        (("cosine", 0.0), "learning_rate must be a positive number"),
        (("cosine", 1e-3, -1), "warmup_epochs must be an integer >= 0"),
        (("cosine", 1e-3, 1.5), "warmup_epochs must be an integer >= 0"),
        (("cosine", 1e-3, 0, 1e-3), r"min_learning_rate must be >= 0 and below learning_rate=0.001"),
        (("plateau", 1e-3, 0, 0.0, 1.0), r"plateau_factor must be in \(0, 1\)"),
        (("plateau", 1e-3, 0, 0.0, 0.5, 0), "plateau_patience must be an integer >= 1"),
        (("plateau", 1e-3, 2), "warmup_epochs needs lr_schedule 'cosine' or 'constant'"),
    ],
)
def test_invalid_settings_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        check_schedule(*args)
    with pytest.raises(ValueError, match=match):
        make_schedule(
            *args[:2],
            steps_per_epoch=1,
            epochs=1,
            **dict(zip(("warmup_epochs", "min_learning_rate", "plateau_factor", "plateau_patience"), args[2:])),
        )


def test_steps_and_epochs_must_be_positive():
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive integer"):
        make_schedule("cosine", 1e-3, steps_per_epoch=0, epochs=3)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        make_schedule("cosine", 1e-3, steps_per_epoch=3, epochs=None)


@pytest.mark.slow
def test_training_resumes_a_plateau_schedule_from_history_csv(tmp_path, monkeypatch):
    """The wiring in `ptx_keras.training`: schedule callbacks before the backup, counters from history.csv.

    A tiny run stops after 2 of 4 epochs (its backup written) and the same configuration is run again; the
    learning rate of every epoch in history.csv must follow Keras' plateau rule (patience 1, factor 0.5)
    replayed over the run's own validation DSC1 values, as if the run had not stopped.
    """
    import csv
    import os

    import ptx_keras.training as training
    from ptx_keras.config import load_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    overrides = _tiny_run(
        tmp_path,
        "plateau",
        "train.epochs=4",
        "train.learning_rate=0.01",
        "train.lr_schedule=plateau",
        "train.plateau_patience=1",
    )
    cfg = load_config(os.path.join(root, "configs", "quickstart.yaml"), overrides)
    original = training.make_callbacks
    monkeypatch.setattr(training, "make_callbacks", lambda cfg, run_dir: original(cfg, run_dir) + [_Stop(1)])
    training.train(cfg, verbose=0)
    monkeypatch.setattr(training, "make_callbacks", original)
    training.train(load_config(os.path.join(root, "configs", "quickstart.yaml"), overrides), verbose=0)
    with open(tmp_path / "runs" / "plateau" / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    best, wait, rate, expected = -math.inf, 0, 0.01, []
    for r in rows:  # Keras' rule: improvement resets, `patience` epochs without one halve the rate
        expected.append(rate)
        value = float(r["val_dsc1"])
        if value > best:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= 1:
                rate, wait = rate * 0.5, 0
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows], expected, rtol=1e-5)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["train.lr_schedule=cosin"], r"train.lr_schedule must be one of \['constant', 'cosine', 'plateau'\]"),
        (["train.lr_schedule=plateau", "train.warmup_epochs=2"], "train.warmup_epochs needs lr_schedule"),
        (["train.min_learning_rate=0.5"], r"train.min_learning_rate must be >= 0 and below learning_rate"),
        (["train.plateau_factor=2"], r"train.plateau_factor must be in \(0, 1\)"),
        (["train.warmup_epochs=-1"], "train.warmup_epochs must be an integer >= 0"),
    ],
)
def test_config_errors_name_the_key(overrides, match):
    from ptx_keras.config import load_config
    from ptx_keras.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        load_config(overrides=overrides)


def test_config_defaults_are_the_paper_setting():
    from ptx_keras.config import load_config

    t = load_config().train
    assert (t.lr_schedule, t.warmup_epochs, t.learning_rate) == ("constant", 0, 1e-4)


def test_schedule_set_on_a_loss_scale_optimizer():
    """Under mixed_float16 training wraps the optimizer in LossScaleOptimizer; the setter reaches the inner one."""
    rate, _ = make_schedule("cosine", 1e-2, steps_per_epoch=STEPS, epochs=2, warmup_epochs=1)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3)), loss="mse")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.learning_rate = rate
    rates = _Rates()
    model.fit(X, Y, batch_size=4, epochs=2, callbacks=[rates], verbose=0, shuffle=False)
    np.testing.assert_allclose(
        rates.rates, [_cosine(k, 1e-2, 0.0, STEPS, 2 * STEPS) for k in range(2 * STEPS)], rtol=1e-5, atol=1e-9
    )


def test_steps_per_epoch_beyond_the_split_runs_every_step(tmp_path):
    """train.steps_per_epoch larger than the training split: every epoch runs all its steps (the data repeats),
    so the cosine schedule's warm-up ends exactly after one epoch. Before the fix an epoch ended when the 16
    training images ran out (4 steps of 6) and the rate at epoch 1's first step was lr x 4/6."""
    import csv
    import os

    import ptx_keras.training as training
    from ptx_keras.config import load_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    overrides = _tiny_run(
        tmp_path,
        "steps",
        "train.epochs=3",
        "train.steps_per_epoch=6",
        "train.learning_rate=0.01",
        "train.lr_schedule=cosine",
        "train.warmup_epochs=1",
    )
    result = training.train(load_config(os.path.join(root, "configs", "quickstart.yaml"), overrides), verbose=0)
    assert result.epochs == 3
    with open(tmp_path / "runs" / "steps" / "history.csv", newline="") as f:
        rates = [float(r["learning_rate"]) for r in csv.DictReader(f)]
    # n = 18 steps, warm-up w = 6: epoch starts k = 0, 6, 12 -> 0, lr, lr (1 + cos(pi 6 / 12)) / 2 = lr / 2
    np.testing.assert_allclose(rates, [0.0, 0.01, 0.005], rtol=1e-5, atol=1e-9)


def _tiny_run(tmp_path, name, *extra):
    """Overrides of the quick start for a tiny phantom run (seconds on a CPU) named `name` under `tmp_path`."""
    return [
        *tiny.TRAINING,
        "train.evaluate=false",
        "train.export=false",
        "train.early_stopping_patience=null",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"output_dir={tmp_path / 'runs'}",
        f"name={name}",
        *extra,
    ]
