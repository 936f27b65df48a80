"""Learning-rate schedules: constant (the paper), cosine decay with linear warm-up, reduce on plateau.

`make_schedule` is the one function training calls: it returns the learning rate to give the optimizer (a
number or a `keras.optimizers.schedules.LearningRateSchedule`) and the callbacks the schedule needs.

* `constant` — the paper's setting (Adam, 1e-4 throughout). With `warmup_epochs`, the rate rises linearly
  from 0 over the warm-up steps and then stays constant.
* `cosine` — `keras.optimizers.schedules.CosineDecay`: linear warm-up from 0 to `learning_rate` over
  `warmup_epochs`, then half a cosine down to `min_learning_rate` at the last step of the last epoch:
  `lr(k) = min + (lr - min) * (1 + cos(pi * (k - w) / (n - w))) / 2` for `w <= k <= n`, where `w` and `n`
  are the warm-up and total steps.
* `plateau` — `keras.callbacks.ReduceLROnPlateau` on the run's monitored value: the rate is multiplied by
  `plateau_factor` after `plateau_patience` epochs without improvement, down to `min_learning_rate`.

**Resuming** (`BackupAndRestore`): the optimizer's step counter and learning-rate variable are part of the
backup, so the cosine schedule continues at the right step and a plateau-reduced rate stays reduced. What
Keras does not keep is `ReduceLROnPlateau`'s own counters (best value, epochs waited); `PlateauSchedule`
rebuilds them from the monitored values of the finished epochs (`history`), so a resumed run reduces at the
same epoch as an uninterrupted one. Training passes them from `history.csv`.

Every schedule's callbacks include `LearningRateLogger`, which writes the epoch's learning rate into the
logs (so `history.csv` gets a `learning_rate` column).

Keras is imported inside the functions, so that `ptx_keras.config` can validate the settings with
`check_schedule` without importing it.
"""

import functools
import math
import numbers

__all__ = [
    "LR_SCHEDULE",
    "MIN_LEARNING_RATE",
    "PLATEAU_FACTOR",
    "PLATEAU_PATIENCE",
    "SCHEDULES",
    "WARMUP_EPOCHS",
    "check_schedule",
    "make_schedule",
]


SCHEDULES = ("constant", "cosine", "plateau")
# Defaults (the paper: constant, no warm-up).
LR_SCHEDULE = "constant"
WARMUP_EPOCHS = 0
MIN_LEARNING_RATE = 0.0
PLATEAU_FACTOR = 0.5
PLATEAU_PATIENCE = 5  # well inside the early-stopping patience (20), so a plateau is tried before stopping


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_schedule(
    name,
    learning_rate,
    warmup_epochs=WARMUP_EPOCHS,
    min_learning_rate=MIN_LEARNING_RATE,
    plateau_factor=PLATEAU_FACTOR,
    plateau_patience=PLATEAU_PATIENCE,
):
    """Validates schedule settings.

    Raises:
        ValueError: naming the first invalid setting (`lr_schedule`, `warmup_epochs`, `min_learning_rate`,
            `plateau_factor`, `plateau_patience`) and its value.
    """
    if name not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {list(SCHEDULES)}. Received: lr_schedule={name!r}")
    if not _is_number(learning_rate) or learning_rate <= 0:
        raise ValueError(f"learning_rate must be a positive number. Received: learning_rate={learning_rate!r}")
    if not isinstance(warmup_epochs, numbers.Integral) or isinstance(warmup_epochs, bool) or warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be an integer >= 0. Received: warmup_epochs={warmup_epochs!r}")
    if not _is_number(min_learning_rate) or not 0 <= min_learning_rate < learning_rate:
        raise ValueError(
            f"min_learning_rate must be >= 0 and below learning_rate={learning_rate!r}. "
            f"Received: min_learning_rate={min_learning_rate!r}"
        )
    if not _is_number(plateau_factor) or not 0 < plateau_factor < 1:
        raise ValueError(f"plateau_factor must be in (0, 1). Received: plateau_factor={plateau_factor!r}")
    if not isinstance(plateau_patience, numbers.Integral) or isinstance(plateau_patience, bool) or plateau_patience < 1:
        raise ValueError(f"plateau_patience must be an integer >= 1. Received: plateau_patience={plateau_patience!r}")
    if name == "plateau" and warmup_epochs:
        raise ValueError(
            "warmup_epochs needs lr_schedule 'cosine' or 'constant': ReduceLROnPlateau sets the rate itself and "
            f"Keras cannot combine it with a schedule. Received: lr_schedule='plateau', warmup_epochs={warmup_epochs}"
        )


def make_schedule(
    name,
    learning_rate,
    *,
    steps_per_epoch,
    epochs,
    warmup_epochs=WARMUP_EPOCHS,
    min_learning_rate=MIN_LEARNING_RATE,
    plateau_factor=PLATEAU_FACTOR,
    plateau_patience=PLATEAU_PATIENCE,
    monitor="val_dsc1",
    mode="max",
    history=None,
):
    """The optimizer's learning rate and the callbacks of a schedule.

    Args:
        name: `"constant"`, `"cosine"` or `"plateau"`.
        learning_rate: The peak rate (paper: 1e-4).
        steps_per_epoch: Optimizer steps per epoch (positive int).
        epochs: Epochs of the run (positive int); the cosine reaches `min_learning_rate` at their end.
        warmup_epochs: Epochs of linear warm-up from 0 (`constant` and `cosine` only).
        min_learning_rate: The cosine's final rate and the plateau's floor.
        plateau_factor: `ReduceLROnPlateau`'s `factor`.
        plateau_patience: `ReduceLROnPlateau`'s `patience`.
        monitor: The run's monitored value (`plateau`).
        mode: Whether that value should go `"min"` or `"max"` (`plateau`).
        history: For `plateau`: a function `history(initial_epoch)` returning the monitored values of the
            epochs before `initial_epoch` (a resumed run), or None.

    Returns:
        `(learning_rate, callbacks)`: a float or a `LearningRateSchedule` for the optimizer, and a list of
        callbacks to put **before** `BackupAndRestore` (so that a plateau reduction is in the epoch's backup).

    Raises:
        ValueError: for an invalid setting (see `check_schedule`) or non-positive `steps_per_epoch`/`epochs`.
    """
    import keras

    check_schedule(name, learning_rate, warmup_epochs, min_learning_rate, plateau_factor, plateau_patience)
    for key, value in (("steps_per_epoch", steps_per_epoch), ("epochs", epochs)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive integer. Received: {key}={value!r}")
    total = steps_per_epoch * epochs
    warmup = min(warmup_epochs * steps_per_epoch, total - 1)
    classes = _callback_classes()
    callbacks = [classes["LearningRateLogger"]()]
    if name == "plateau":
        plateau = classes["PlateauSchedule"](
            history=history,
            monitor=monitor,
            mode=mode,
            factor=plateau_factor,
            patience=plateau_patience,
            min_lr=min_learning_rate,
            verbose=1,
        )
        return float(learning_rate), [plateau] + callbacks
    if name == "constant" and not warmup:
        return float(learning_rate), callbacks
    if name == "constant":  # warm-up, then a cosine that decays to alpha = 1: constant
        rate = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=1, alpha=1.0, warmup_target=float(learning_rate), warmup_steps=warmup
        )
    else:
        rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else float(learning_rate),
            decay_steps=total - warmup,
            alpha=min_learning_rate / learning_rate,
            warmup_target=float(learning_rate) if warmup else None,
            warmup_steps=warmup,
        )
    return rate, callbacks


def _current_rate(optimizer):
    import keras

    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def __getattr__(name):
    # The callback classes subclass Keras classes: built on first use, so that importing this module does
    # not import Keras.
    if name in ("LearningRateLogger", "PlateauSchedule"):
        return _callback_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _callback_classes():
    import keras

    class LearningRateLogger(keras.callbacks.Callback):
        """Adds `learning_rate` to the epoch's logs: the rate of the epoch's first step."""

        def on_epoch_begin(self, epoch, logs=None):
            self._rate = _current_rate(self.model.optimizer)

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs.setdefault("learning_rate", self._rate)

    class PlateauSchedule(keras.callbacks.ReduceLROnPlateau):
        """`keras.callbacks.ReduceLROnPlateau` that continues a resumed run where it stopped.

        Args:
            history: `history(initial_epoch)` -> the monitored values of the finished epochs, or None.
            **kwargs: `ReduceLROnPlateau`'s arguments.

        Before the first epoch it replays Keras' rule over those values to rebuild the best value, the
        epochs waited and the cooldown, without touching the optimizer, whose (possibly reduced) rate the
        backup restored. It replays at the first `on_epoch_begin`, after `BackupAndRestore` has set the
        initial epoch, although it runs before `BackupAndRestore` at each epoch's end.
        """

        def __init__(self, history=None, **kwargs):
            super().__init__(**kwargs)
            self.history = history
            self._replayed = False

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            self._replayed = False

        def on_epoch_begin(self, epoch, logs=None):
            if self._replayed:
                return
            self._replayed = True
            start = int(getattr(self.model, "_initial_epoch", None) or 0)
            if self.history is None or not start:
                return
            if self.monitor_op is None:
                self._set_monitor_op()
            for current in self.history(start):
                self._replay(float(current))

        def _replay(self, current):
            """`ReduceLROnPlateau.on_epoch_end` for a past epoch, minus the change to the optimizer."""
            if self.in_cooldown():
                self.cooldown_counter -= 1
                self.wait = 0
            if self._is_improvement(current, self.best):
                self.best = current
                self.wait = 0
            elif not self.in_cooldown():
                self.wait += 1
                if self.wait >= self.patience:  # the rate was reduced then (the backup holds the result)
                    self.cooldown_counter = self.cooldown
                    self.wait = 0

    return {"LearningRateLogger": LearningRateLogger, "PlateauSchedule": PlateauSchedule}
