"""Learning-rate schedules: hand-computed rates per step, plateau reductions, and resuming with BackupAndRestore."""

import math

import keras
import numpy as np
import pytest

from ptx_keras.schedules import LearningRateLogger, PlateauSchedule, check_schedule, make_schedule

STEPS = 3  # steps per epoch: 12 samples, batch 4
X = np.random.default_rng(0).normal(size=(12, 2)).astype("float32")
Y = X.sum(axis=1, keepdims=True)


def _model(rate):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="mse")
    model.optimizer.build(model.trainable_variables)  # as training does: the backup restores into these
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


def _fit(rate, callbacks, epochs, backup_dir=None, stop_after=None):
    model = _model(rate)
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
    rate, callbacks = make_schedule("cosine", peak, steps_per_epoch=STEPS, epochs=epochs,
                                    warmup_epochs=warmup_epochs, min_learning_rate=low)
    _, rates, history = _fit(rate, callbacks, epochs=epochs)
    total, warmup = STEPS * epochs, STEPS * warmup_epochs
    expected = [_cosine(k, peak, low, warmup, total) for k in range(total)]
    # 0, 1/3, 2/3 of the peak, then the peak, then half a cosine towards the floor.
    assert expected[:4] == pytest.approx([0, peak / 3, 2 * peak / 3, peak])
    np.testing.assert_allclose(rates, expected, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(history["learning_rate"], expected[::STEPS], rtol=1e-5, atol=1e-9)


def test_cosine_without_warmup_and_constant_with_warmup():
    rate, _ = make_schedule("cosine", 1e-3, steps_per_epoch=STEPS, epochs=2)
    np.testing.assert_allclose([float(rate(k)) for k in range(7)],
                               [_cosine(k, 1e-3, 0.0, 0, 6) for k in range(6)] + [0.0], rtol=1e-5, atol=1e-12)
    rate, _ = make_schedule("constant", 1e-3, steps_per_epoch=STEPS, epochs=4, warmup_epochs=2)
    np.testing.assert_allclose([float(rate(k)) for k in range(12)],
                               [1e-3 * k / 6 for k in range(6)] + [1e-3] * 6, rtol=1e-6, atol=1e-12)


def test_resumed_cosine_continues_at_the_right_step(tmp_path):
    peak, epochs = 1e-2, 4
    rate, callbacks = make_schedule("cosine", peak, steps_per_epoch=STEPS, epochs=epochs, warmup_epochs=1)
    _, first, _ = _fit(rate, callbacks, epochs, backup_dir=tmp_path, stop_after=1)  # "killed" after 2 epochs
    assert len(first) == 2 * STEPS
    rate, callbacks = make_schedule("cosine", peak, steps_per_epoch=STEPS, epochs=epochs, warmup_epochs=1)
    model, second, _ = _fit(rate, callbacks, epochs, backup_dir=tmp_path)  # a new process would do this
    expected = [_cosine(k, peak, 0.0, STEPS, STEPS * epochs) for k in range(STEPS * epochs)]
    np.testing.assert_allclose(first + second, expected, rtol=1e-5, atol=1e-9)
    assert int(model.optimizer.iterations) == STEPS * epochs


SCORES = [0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7]
# patience 2, factor 0.5: no improvement at epochs 2 and 3 -> halved after epoch 3; again after epoch 6.
PLATEAU_RATES = [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def _plateau(history=None):
    return make_schedule("plateau", 1e-2, steps_per_epoch=STEPS, epochs=len(SCORES), plateau_patience=2,
                         plateau_factor=0.5, monitor="val_score", mode="max", history=history)


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
        make_schedule(*args[:2], steps_per_epoch=1, epochs=1, **dict(zip(
            ("warmup_epochs", "min_learning_rate", "plateau_factor", "plateau_patience"), args[2:])))


def test_steps_and_epochs_must_be_positive():
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive integer"):
        make_schedule("cosine", 1e-3, steps_per_epoch=0, epochs=3)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        make_schedule("cosine", 1e-3, steps_per_epoch=3, epochs=None)
