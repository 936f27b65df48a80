"""Training: data resolution, distribution strategy, compile, callbacks, resume, and the end-of-run steps.

`train(cfg)` is what `python train.py` runs. A run directory `<output_dir>/<name>/` receives:

* `config.yaml` — the resolved configuration (including where the prepared data is);
* `history.csv` — one row per finished epoch, kept consistent across interruptions;
* `checkpoints/backup/` — `BackupAndRestore` state, so that the same command resumes a killed run;
* `best.keras` — the model at the best validation DSC1;
* `logs/` — TensorBoard;
* `training_curves.png` — loss and metrics per epoch;
* `eval/<split>/` and `saved_model/` — written by evaluation and export at the end (when enabled).
"""

import csv
import math
import os
import time

from ptx_keras import constants as C
from ptx_keras.config import CONFIG_FILENAME, save_config
from ptx_keras.errors import BadSampleError, ConfigError, DataError, writable_dir

HISTORY_FILENAME = "history.csv"
BEST_MODEL_FILENAME = "best.keras"
CURVES_FILENAME = "training_curves.png"


# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------
def _prep_kwargs(data_cfg):
    return dict(
        image_size=data_cfg.image_size,
        bit_depth=data_cfg.bit_depth,
        boundary_width=data_cfg.boundary_width,
        normalize=data_cfg.normalize,
        clip=data_cfg.clip,
        weight_dtype=data_cfg.weight_dtype,
        split_fractions=tuple(data_cfg.split_fractions),
        seed=data_cfg.split_seed,
        shard_size=data_cfg.shard_size,
        skip_bad=data_cfg.skip_bad,
        workers=data_cfg.workers,
    )


def _settings_tag(data_cfg):
    import hashlib
    import json

    blob = json.dumps(_prep_kwargs(data_cfg), sort_keys=True, default=str).encode()
    return f"{data_cfg.image_size}px-{hashlib.sha1(blob).hexdigest()[:8]}"


def resolve_data(cfg):
    """Returns the prepared directory for `cfg.data`, generating and preparing data when needed.

    * empty `data.path`: the synthetic phantoms are written to `<cache>/phantoms-...` and prepared;
    * a prepared directory: used as it is, after checking its resolution matches `data.image_size`;
    * a raw source (folder, CSV, SIIM-ACR): prepared into `<cache>/<source name>-<size>px-<hash>` and reused.

    Raises:
        DataError: if the path does not exist, or prepared data has another resolution than the config asks.
    """
    from ptx_keras.data import prepare as prep

    data_cfg = cfg.data
    cache = data_cfg.cache_dir or os.path.join(cfg.output_dir, "data_cache")
    kwargs = _prep_kwargs(data_cfg)
    if not data_cfg.path:
        from ptx_keras.data.phantoms import phantom_dataset_name, write_phantom_dataset

        ph = data_cfg.phantoms
        settings = dict(size=ph.size, seed=ph.seed, style=ph.style, conspicuity=ph.conspicuity, format="png", bit_depth=8)
        source = os.path.join(cache, phantom_dataset_name(ph.n, **settings))
        print(f"Data: synthetic {ph.style} phantoms ({ph.n} images, {ph.size}x{ph.size}, conspicuity {ph.conspicuity:g}) in {source}")
        write_phantom_dataset(source, ph.n, **settings)
    else:
        source = data_cfg.path
        if not os.path.exists(source):
            raise DataError(f"Data path does not exist: {source}")
        if prep.is_prepared_dir(source):
            info = prep.load_prepared_info(source)
            if int(info["image_size"]) != int(data_cfg.image_size):
                raise DataError(
                    f"{source} was prepared at {info['image_size']}x{info['image_size']} but the configuration asks for "
                    f"data.image_size={data_cfg.image_size}; prepare it again at that size or set "
                    f"data.image_size={info['image_size']}"
                )
            return os.path.abspath(source)
    name = os.path.basename(os.path.normpath(source)) or "data"
    prepared = os.path.join(cache, f"{name}-prepared-{_settings_tag(data_cfg)}")
    prep.prepare_dataset(source, prepared, **kwargs)
    return os.path.abspath(prepared)


# --------------------------------------------------------------------------------------------------------------
# Execution settings
# --------------------------------------------------------------------------------------------------------------
def _gpus():
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def choose_strategy(name):
    """Returns a `tf.distribute.Strategy` for `train.strategy`.

    `auto` uses `MirroredStrategy` when several GPUs are visible and the default strategy otherwise;
    `multi_worker` needs the `TF_CONFIG` environment variable (see docs/training.md).

    Raises:
        ConfigError: for `multi_worker` without TF_CONFIG, or an unknown name.
    """
    import tensorflow as tf

    if name == "auto":
        name = "mirrored" if len(_gpus()) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("train.strategy=multi_worker needs the TF_CONFIG environment variable (docs/training.md)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"Unknown train.strategy: {name!r}")


def configure_execution(train_cfg):
    """Sets seeds, determinism, the mixed-precision policy and Grappler.

    Like the mixed-precision policy, the Grappler choice (`train.graph_optimizer`) is process-wide: it
    applies to every `tf.function` traced afterwards in this process.

    Returns:
        `(mixed_precision_on, jit_compile, grappler_on)`.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(train_cfg.seed)
    if train_cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    has_gpu = bool(_gpus())
    mp = {"auto": has_gpu, "on": True, "off": False}[train_cfg.mixed_precision]
    keras.mixed_precision.set_global_policy("mixed_float16" if mp else "float32")
    # XLA: on CPU it made the quick-start train step ~3x slower and its first step ~2x slower to compile
    # (docs/benchmarks.md), so "auto" uses it only on GPUs.
    jit = {"auto": has_gpu, "on": True, "off": False}[train_cfg.jit_compile]
    # Grappler: on this CPU the paper model's step was no slower without it (6.3-7.1 vs 6.9-8.5 s), needed
    # ~700 MiB less memory, and the quick start's first step took 14 s instead of 25 s (docs/benchmarks.md);
    # on GPUs its layout and fusion passes matter, so "auto" keeps it there.
    grappler = {"auto": has_gpu, "on": True, "off": False}[train_cfg.graph_optimizer]
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not grappler})
    return mp, jit, grappler


# --------------------------------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------------------------------
def _read_history(path):
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _callback_classes():
    import keras
    import numpy as np

    class HistoryCSV(keras.callbacks.Callback):
        """CSV of one row per finished epoch that stays consistent when a run resumes.

        On a resumed run (`BackupAndRestore` set the initial epoch), rows of epochs that will be run again are
        dropped, so a run killed between the CSV write and the backup neither loses nor duplicates an epoch.
        """

        def __init__(self, path):
            super().__init__()
            self.path = path
            self.keys = None

        def on_train_begin(self, logs=None):
            start = int(getattr(self.model, "_initial_epoch", None) or 0)
            rows = [r for r in _read_history(self.path) if int(r["epoch"]) < start]
            self.keys = list(rows[0].keys())[1:] if rows else None
            self._rewrite(rows)

        def _rewrite(self, rows):
            tmp = self.path + ".tmp"
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                if rows:
                    w = csv.DictWriter(f, fieldnames=["epoch"] + self.keys)
                    w.writeheader()
                    w.writerows(rows)
            os.replace(tmp, self.path)

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            if self.keys is None:
                self.keys = sorted(logs)
            rows = _read_history(self.path)
            rows.append({"epoch": epoch, **{k: _fmt(logs.get(k, "")) for k in self.keys}})
            self._rewrite(rows)

    class ResumeBest(keras.callbacks.Callback):
        """Restores the best monitored value and the patience counter of a resumed run from `history.csv`.

        `EarlyStopping` and `ModelCheckpoint` forget their state when a process restarts; without this the first
        resumed epoch would overwrite `best.keras` with a worse model and patience would start again.
        """

        def __init__(self, path, monitor, early_stopping, checkpoint):
            super().__init__()
            self.path, self.monitor = path, monitor
            self.early_stopping, self.checkpoint = early_stopping, checkpoint

        def on_train_begin(self, logs=None):
            start = int(getattr(self.model, "_initial_epoch", None) or 0)
            rows = [r for r in _read_history(self.path) if int(r["epoch"]) < start and r.get(self.monitor)]
            if not rows:
                return
            values = np.array([float(r[self.monitor]) for r in rows])
            best_i = int(np.nanargmax(values))
            self.checkpoint.best = float(values[best_i])
            if self.early_stopping is not None:
                self.early_stopping.best = float(values[best_i])
                self.early_stopping.best_epoch = best_i
                self.early_stopping.wait = len(values) - 1 - best_i
            print(f"Resuming at epoch {start + 1}: best {self.monitor} so far {values[best_i]:.4f} (epoch {best_i + 1})")

    return HistoryCSV, ResumeBest


def _fmt(v):
    try:
        return f"{float(v):.6g}"
    except (TypeError, ValueError):
        return v


def make_callbacks(cfg, run_dir):
    """The run's callbacks, in the order their `on_train_begin` must run (backup first)."""
    import keras

    HistoryCSV, ResumeBest = _callback_classes()
    history_path = os.path.join(run_dir, HISTORY_FILENAME)
    monitor = cfg.train.monitor
    mode = "min" if monitor.endswith("loss") else "max"
    backup = keras.callbacks.BackupAndRestore(os.path.join(run_dir, "checkpoints", "backup"), delete_checkpoint=False)
    checkpoint = keras.callbacks.ModelCheckpoint(
        os.path.join(run_dir, BEST_MODEL_FILENAME), monitor=monitor, mode=mode, save_best_only=True, verbose=0
    )
    early = None
    if cfg.train.early_stopping_patience:
        early = keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=cfg.train.early_stopping_patience, restore_best_weights=True, verbose=1
        )
    callbacks = [backup, HistoryCSV(history_path), keras.callbacks.TerminateOnNaN(), checkpoint]
    if early is not None:
        callbacks.append(early)
    callbacks.append(ResumeBest(history_path, monitor, early, checkpoint))
    if cfg.train.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), write_graph=False))
    return callbacks


# --------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------
def set_bn_momentum(model, momentum):
    """Sets the moving-average momentum of every BatchNormalization layer, nested ones included.

    Keras' default (0.99) averages over ~100 steps; a run of a few hundred steps then predicts with moving
    statistics that lag far behind the weights (the validation loss climbs while the training loss falls,
    and the model predicts empty masks). It matters only while training (a resumed run sets it again); it is
    not saved for BatchNormalization layers nested inside ptx_keras layers, whose configs rebuild them.

    Returns:
        The number of layers changed.
    """
    import keras

    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            count += 1
    return count


def build_and_compile(cfg, jit_compile="auto"):
    """Builds `cfg.model`, compiles it with `make_optimizer` (paper: Adam, lr 1e-4, weight decay 1e-4) and the loss.

    Raises:
        ConfigError: for an unknown model or loss name, or options the model does not take.
    """
    from ptx_keras.losses import get_loss
    from ptx_keras.metrics import DSC1, MPA
    from ptx_keras.models import build_model
    from ptx_keras.optimizers import make_optimizer

    size = cfg.data.image_size
    try:
        model = build_model(
            cfg.model.name, input_shape=(size, size, cfg.data.channels), num_classes=C.NUM_CLASSES, **cfg.model.options
        )
    except (TypeError, ValueError) as e:  # ModelError is a ValueError: unknown name, option or input size
        raise ConfigError(f"model {cfg.model.name!r} (model.options, data.image_size={size}): {e}") from None
    if cfg.train.bn_momentum is not None:
        set_bn_momentum(model, cfg.train.bn_momentum)
    try:
        loss = get_loss(cfg.loss.name, **cfg.loss.options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"loss: {e}") from None
    try:  # wrapped in LossScaleOptimizer under mixed_float16
        optimizer = make_optimizer(
            learning_rate=cfg.train.learning_rate,
            weight_decay=cfg.train.weight_decay,
            weight_decay_mode=cfg.train.weight_decay_mode,
            beta_1=cfg.train.beta_1,
            beta_2=cfg.train.beta_2,
        )
    except ValueError as e:
        raise ConfigError(f"train: {e}") from None
    model.compile(optimizer=optimizer, loss=loss, metrics=[DSC1(), MPA()], jit_compile=jit_compile)
    # Creating the optimizer slots eagerly (~1 s) instead of inside the first traced step halves the first
    # step's cost: Keras otherwise traces the step twice (docs/benchmarks.md, "Training step").
    model.optimizer.build(model.trainable_variables)
    return model


def _learning_rate_schedule(cfg, model, n_train, run_dir):
    """Gives the optimizer `train.lr_schedule` and returns the schedule's callbacks (`ptx_keras.schedules`).

    The optimizer is made before the data is resolved, when the steps per epoch are not known yet, so a
    schedule replaces its constant rate here (Keras' `optimizer.learning_rate` setter); the schedule follows
    the optimizer's step counter, which `BackupAndRestore` restores.
    """
    from ptx_keras.schedules import make_schedule

    t = cfg.train
    monitor, history_path = t.monitor, os.path.join(run_dir, HISTORY_FILENAME)

    def history(start):  # the monitored values of the finished epochs of a resumed run
        return [float(r[monitor]) for r in _read_history(history_path) if int(r["epoch"]) < start and r.get(monitor)]

    rate, callbacks = make_schedule(
        t.lr_schedule, t.learning_rate, steps_per_epoch=t.steps_per_epoch or math.ceil(n_train / t.batch_size),
        epochs=t.epochs, warmup_epochs=t.warmup_epochs, min_learning_rate=t.min_learning_rate,
        plateau_factor=t.plateau_factor, plateau_patience=t.plateau_patience, monitor=monitor,
        mode="min" if monitor.endswith("loss") else "max", history=history,
    )
    if not isinstance(rate, float):
        model.optimizer.learning_rate = rate
    return callbacks


# --------------------------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------------------------
# How to skip bad samples from a training run (prepare_dataset's own hint names ptx-prepare's option).
SKIP_HINT = "Fix or remove it, or set data.skip_bad: true (--set data.skip_bad=true) to skip bad samples"


def _remove_rejected_run(run_dir):
    """Removes a run directory this invocation created for a run rejected before training: only what `train`
    writes there before training (the configuration), and the directory itself once it is empty."""
    try:
        os.remove(os.path.join(run_dir, CONFIG_FILENAME))
    except OSError:
        pass
    try:
        os.rmdir(run_dir)
    except OSError:
        pass  # not empty: something else lives there, leave it


def train(cfg, verbose=1):
    """Trains `cfg` end to end; running the same configuration again resumes an interrupted run.

    Args:
        cfg: A validated `ptx_keras.config.Config`.
        verbose: Keras progress-bar verbosity (1: bar, 2: one line per epoch, 0: silent).

    Returns:
        dict with `run_dir`, `best_model`, `history`, `epochs`, `seconds`, and `evaluation` / `export` results
        when those steps ran.

    Raises:
        PtxError: for user-caused problems (data path, resolution, config, permissions), before any data work
            where the configuration alone is at fault; a run rejected before training leaves no run directory
            behind (if this call created it) and never writes `config.yaml`.
    """
    t0 = time.time()
    run_dir = cfg.run_dir
    created = not os.path.exists(run_dir)
    writable_dir(run_dir, "output directory")
    try:
        # What the configuration alone decides is checked first (preparing data can take minutes): the
        # execution settings, the strategy, and the model itself (an unknown option, an input size its
        # poolings cannot divide).
        mixed, jit, grappler = configure_execution(cfg.train)
        strategy = choose_strategy(cfg.train.strategy)
        replicas = strategy.num_replicas_in_sync
        if cfg.train.batch_size % replicas:
            raise ConfigError(
                f"train.batch_size={cfg.train.batch_size} is the global batch size and must be divisible by the "
                f"{replicas} replicas of the {cfg.train.strategy} strategy"
            )
        with strategy.scope():
            model = build_and_compile(cfg, jit_compile=jit)
        try:
            prepared = resolve_data(cfg)
        except BadSampleError as e:
            raise e.with_hint(SKIP_HINT) from None
        cfg.data.prepared_dir = prepared
        from ptx_keras.data.pipeline import count_examples, make_dataset

        common = dict(channels=cfg.data.channels, seed=cfg.train.seed)
        train_ds = make_dataset(
            prepared, "train", cfg.train.batch_size, True, shuffle_buffer=cfg.data.shuffle_buffer,
            augment=cfg.data.augmentation(), positive_fraction=cfg.data.positive_fraction, **common,
        )
        val_ds = make_dataset(prepared, "val", cfg.train.batch_size, False, **common)
        n_train, n_val = count_examples(prepared, "train"), count_examples(prepared, "val")
        schedule_callbacks = _learning_rate_schedule(cfg, model, n_train, run_dir)
        save_config(cfg, os.path.join(run_dir, CONFIG_FILENAME))  # only now: the run is accepted
    except BaseException:
        if created:
            _remove_rejected_run(run_dir)
        raise
    print(
        f"Run {run_dir}: model {cfg.model.name}, loss {cfg.loss.name}, {n_train} train / {n_val} val images at "
        f"{cfg.data.image_size}px, batch {cfg.train.batch_size} on {replicas} replica(s), "
        f"mixed precision {'on' if mixed else 'off'}, XLA {jit}, Grappler {'on' if grappler else 'off'}"
    )
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=cfg.train.epochs,
        steps_per_epoch=cfg.train.steps_per_epoch,
        validation_steps=cfg.train.validation_steps,
        callbacks=schedule_callbacks + make_callbacks(cfg, run_dir),  # a plateau cut must precede the backup
        verbose=verbose,
    )
    history_path = os.path.join(run_dir, HISTORY_FILENAME)
    best = os.path.join(run_dir, BEST_MODEL_FILENAME)
    if not os.path.isfile(best):  # no epoch produced a finite monitored value (e.g. NaN loss)
        model.save(best)
    result = {
        "run_dir": run_dir,
        "best_model": best,
        "history": history_path,
        "epochs": len(_read_history(history_path)),
    }
    if result["epochs"]:
        from ptx_keras.figures.evaluation import plot_history

        result["curves"] = plot_history(history_path, os.path.join(run_dir, CURVES_FILENAME))
    if cfg.train.evaluate:
        from ptx_keras.evaluation import evaluate_run

        result["evaluation"] = evaluate_run(run_dir, split=cfg.evaluation.split)
    if cfg.train.export:
        from ptx_keras.export import export_saved_model

        result["export"] = export_saved_model(run_dir)
    result["seconds"] = time.time() - t0
    del history
    return result
