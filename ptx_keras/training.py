"""Training: distribution strategy, compile, callbacks and resume. `train(cfg)` is the first step of `python
train.py` (`ptx_keras.workflows` then evaluates and exports).

It writes one run directory, `<output_dir>/<name>/`, whose layout `ptx_keras.runs` defines (its module
docstring lists every file; `RunDir` names each path): the resolved configuration first, then the history,
the resumable checkpoint state, the best model, TensorBoard logs and the training curves.
"""

import csv
import dataclasses
import logging
import math
import os
import shutil
import time
from typing import Optional

from ptx_keras import constants as C
from ptx_keras.errors import BadSampleError, ConfigError, require_tensorflow, writable_dir
from ptx_keras.multiworker import (  # noqa: F401 - TF_CONFIG_VARIABLE, Worker, describe_task: this module's API
    TF_CONFIG_VARIABLE,
    Worker,
    check_multi_worker_data,
    describe_task,
    lost_worker_error,
    multi_worker_strategy,
    patch_keras_for_multi_worker,
    read_tf_config,
    shard_by_data,
    worker_scratch,
)
from ptx_keras.runs import RunDir

__all__ = [
    "SKIP_HINT",
    "TF_CONFIG_VARIABLE",
    "TrainResult",
    "Worker",
    "aux_targets",
    "build_and_compile",
    "choose_strategy",
    "configure_execution",
    "describe_task",
    "fixed_size_model",
    "lost_worker_error",
    "make_callbacks",
    "monitored",
    "read_tf_config",
    "set_bn_momentum",
    "train",
]


require_tensorflow(__name__)  # tf.distribute, tf.data and TensorFlow graphs: a clear error on JAX or PyTorch

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What `train` did.

    Attributes:
        run_dir: The `RunDir`.
        best_model: `best.keras`.
        history: `history.csv`.
        epochs: Finished epochs (a resumed run counts the earlier ones too).
        seconds: Wall time of this call.
        prepared_dir: The prepared data set trained on.
        curves: `training_curves.png`, or None when no epoch finished.
        is_chief: False on the other workers of a multi-worker run: they wrote nothing in the run directory
            (the chief did), and the steps after training (evaluation, export) are the chief's.
    """

    run_dir: RunDir
    best_model: str
    history: str
    epochs: int
    seconds: float
    prepared_dir: str
    curves: Optional[str] = None
    is_chief: bool = True


# --------------------------------------------------------------------------------------------------------------
# Execution settings
# --------------------------------------------------------------------------------------------------------------
def _gpus():
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def choose_strategy(name, timeout_s=C.WORKER_TIMEOUT_S):
    """Returns a `tf.distribute.Strategy` for `train.strategy`.

    `auto` uses `MirroredStrategy` when several GPUs are visible and the default strategy otherwise;
    `multi_worker` needs the `TF_CONFIG` environment variable (see docs/training.md), checked by
    `read_tf_config` before TensorFlow sees it; every peer must answer within `timeout_s` seconds
    (`train.worker_timeout_s`, `ptx_keras.multiworker.multi_worker_strategy`).

    Raises:
        ConfigError: for `multi_worker` without a valid TF_CONFIG, or an unknown name.
        WorkerLostError: for `multi_worker` when a peer does not answer in time (named).
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
        return multi_worker_strategy(read_tf_config(), timeout_s)
    raise ConfigError(f"Unknown train.strategy: {name!r}")


def configure_execution(train_cfg):
    """Sets seeds, determinism, the mixed-precision policy and Grappler.

    Like the mixed-precision policy, the Grappler choice (`train.graph_optimizer`) is process-wide: it
    applies to every `tf.function` traced afterwards in this process.

    Returns:
        `(mixed_precision_on, jit_compile, grappler_on)`.
    """
    from ptx_keras.runtime import configure_process

    configure_process()  # CPU allocator: must precede TensorFlow's start where a script has not started it
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(train_cfg.seed)
    if train_cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    has_gpu = bool(_gpus())
    mp = {"auto": has_gpu, "on": True, "off": False}[train_cfg.mixed_precision]
    if mp and not has_gpu:
        # Not refused (the CPU tests run it), but a user who asked for speed should know at once.
        logger.warning(
            "train.mixed_precision=on without a GPU: float16 kernels on a CPU are far slower than float32 "
            "(docs/training.md, 'Precision, XLA, determinism'); use auto or off to train on this machine"
        )
    keras.mixed_precision.set_global_policy("mixed_float16" if mp else "float32")
    # XLA: on CPU it made the quick-start train step ~3x slower and its first step ~2x slower to compile
    # (docs/benchmarks.md), so "auto" uses it only on GPUs.
    jit = {"auto": has_gpu, "on": True, "off": False}[train_cfg.jit_compile]
    # Grappler: on a CPU the paper model's step was no slower without it, needed less memory and started
    # faster (docs/benchmarks.md, "Training step"); on GPUs its layout and fusion passes matter, so "auto"
    # keeps it there.
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
    """The run's own Keras callbacks, `(HistoryCSV, ResumeBest)` (defined on first use: Keras loads lazily)."""
    return _history_csv_class(), _resume_best_class()


def _history_csv_class():
    import keras

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

    return HistoryCSV


def _resume_best_class():
    import keras
    import numpy as np

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
            logger.info(
                "Resuming at epoch %d: best %s so far %.4f (epoch %d)",
                start + 1,
                self.monitor,
                values[best_i],
                best_i + 1,
            )

    return ResumeBest


def _fmt(v):
    try:
        return f"{float(v):.6g}"
    except (TypeError, ValueError):
        return v


def make_callbacks(cfg, run):
    """The run's callbacks, in the order their `on_train_begin` must run (backup first).

    Args:
        cfg: The run's `Config`.
        run: Its `RunDir` (or path).
    """
    import keras

    run = RunDir.of(run)
    HistoryCSV, ResumeBest = _callback_classes()
    history_path = run.history_file
    monitor = monitored(cfg)
    mode = "min" if monitor.endswith("loss") else "max"
    backup = keras.callbacks.BackupAndRestore(run.backup_dir, delete_checkpoint=False)
    checkpoint = keras.callbacks.ModelCheckpoint(
        run.best_model, monitor=monitor, mode=mode, save_best_only=True, verbose=0
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
        callbacks.append(keras.callbacks.TensorBoard(run.logs_dir, write_graph=False))
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


def monitored(cfg):
    """`train.monitor` as Keras logs it.

    A model with an aux head (`model.options.aux_head`) has two outputs, and Keras logs each output's metrics
    with its name first: `val_dsc1` is logged as `val_mask_dsc1` (`loss` / `val_loss` stay the total).
    """
    monitor = cfg.train.monitor
    if not cfg.model.options.get("aux_head"):
        return monitor
    from ptx_keras.models.common import AUX_OUTPUT, MASK_OUTPUT

    prefix = "val_" if monitor.startswith("val_") else ""
    name = monitor[len(prefix) :]
    if name == "loss" or name.startswith((f"{MASK_OUTPUT}_", f"{AUX_OUTPUT}_")):
        return monitor
    return f"{prefix}{MASK_OUTPUT}_{name}"


def aux_targets(dataset):
    """`(image, y_true)` batches -> `(image, {"mask": y_true, "aux": image_labels(y_true)})`, the targets of a
    model with an aux head (`ptx_keras.losses.image_labels`: 1 when the mask has any pneumothorax pixel)."""
    import tensorflow as tf

    from ptx_keras.losses import image_labels
    from ptx_keras.models.common import AUX_OUTPUT, MASK_OUTPUT

    return dataset.map(
        lambda x, y: (x, {MASK_OUTPUT: y, AUX_OUTPUT: image_labels(y)}), num_parallel_calls=tf.data.AUTOTUNE
    )


def _build(cfg, input_shape):
    """`cfg.model` built on `input_shape` (the one call training and `fixed_size_model` share)."""
    from ptx_keras.models import build_model

    return build_model(cfg.model.name, input_shape=input_shape, num_classes=C.NUM_CLASSES, **cfg.model.options)


def _train_input_shape(cfg):
    """The trained model's input: `(S, S, C)` at the prepared size, or `(None, None, C)` when training on crops
    (`data.crop_size`), so that the same network trains on crops and validates on whole images."""
    size = None if cfg.data.crop_size is not None else cfg.data.image_size
    return (size, size, cfg.data.channels)


def _check_crop_divisible(model, size, crop):
    """Applies the model's own size checks (`InputSizeCheck`) to the crop and to the whole image.

    Raises:
        ModelError: for a size the model's poolings cannot divide.
    """
    from ptx_keras.layers.checks import InputSizeCheck, check_spatial_size

    for layer in model.layers:
        if isinstance(layer, InputSizeCheck):
            check_spatial_size(crop, crop, layer.num_pools)
            check_spatial_size(size, size, layer.num_pools)


def fixed_size_model(cfg, model):
    """A copy of a model trained on crops (built on `(None, None, C)`) with the prepared size as its input, the
    form every deployment needs (`ptx_keras.serving.model_input`); the same model when it already has one.

    Args:
        cfg: The run's `Config`.
        model: The trained Keras model.

    Returns:
        A Keras model with input `(batch, data.image_size, data.image_size, channels)` and the same weights.
    """
    if model.input_shape[1] is not None:
        return model
    size = cfg.data.image_size
    fixed = _build(cfg, (size, size, cfg.data.channels))
    if cfg.train.bn_momentum is not None:
        set_bn_momentum(fixed, cfg.train.bn_momentum)
    fixed.set_weights(model.get_weights())
    return fixed


def build_and_compile(cfg, jit_compile="auto"):
    """Builds `cfg.model`, compiles it with `make_optimizer` (paper: Adam, lr 1e-4, weight decay 1e-4) and the loss.

    A model with an aux head (`model.options.aux_head: true`) is compiled with one loss per output: the
    segmentation loss on the softmax and `loss.aux_weight` x binary cross-entropy on the image-level
    probability (`ptx_keras.losses.aux_loss`), with DSC1 and MPA on the mask and ROC AUC on the image level;
    its data must then carry both targets (`aux_targets`).

    Raises:
        ConfigError: for an unknown model or loss name, or options the model does not take.
    """
    from ptx_keras.losses import aux_loss, get_loss
    from ptx_keras.metrics import DSC1, MPA
    from ptx_keras.models.common import AUX_OUTPUT, MASK_OUTPUT, has_aux_output
    from ptx_keras.optimizers import make_optimizer

    size, crop = cfg.data.image_size, cfg.data.crop_size
    try:
        model = _build(cfg, _train_input_shape(cfg))
        if crop is not None:  # built on any size: the poolings must divide the crops and the whole images
            _check_crop_divisible(model, size, crop)
    except (TypeError, ValueError) as e:  # ModelError is a ValueError: unknown name, option or input size
        where = f"data.image_size={size}" + ("" if crop is None else f", data.crop_size={crop}")
        raise ConfigError(f"model {cfg.model.name!r} (model.options, {where}): {e}") from None
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
    metrics = [DSC1(), MPA()]
    loss_weights = None
    if has_aux_output(model):
        # The image-level output trains against image_labels(y_true) (aux_targets maps the data to match).
        import keras

        loss = {MASK_OUTPUT: loss, AUX_OUTPUT: aux_loss()}
        loss_weights = {MASK_OUTPUT: 1.0, AUX_OUTPUT: float(cfg.loss.aux_weight)}
        metrics = {MASK_OUTPUT: metrics, AUX_OUTPUT: [keras.metrics.AUC(name="auc")]}
    model.compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics, jit_compile=jit_compile)
    # Creating the optimizer slots eagerly (~1 s) instead of inside the first traced step halves the first
    # step's cost: Keras otherwise traces the step twice (docs/benchmarks.md, "Training step").
    model.optimizer.build(model.trainable_variables)
    return model


def _learning_rate_schedule(cfg, model, steps_per_epoch, run):
    """Gives the optimizer `train.lr_schedule` and returns the schedule's callbacks (`ptx_keras.schedules`).

    The optimizer is made before the data is resolved, when the steps per epoch are not known yet, so a
    schedule replaces its constant rate here (Keras' `optimizer.learning_rate` setter); the schedule follows
    the optimizer's step counter, which `BackupAndRestore` restores.
    """
    from ptx_keras.schedules import make_schedule

    t = cfg.train
    monitor, history_path = monitored(cfg), run.history_file

    def history(start):  # the monitored values of the finished epochs of a resumed run
        return [float(r[monitor]) for r in _read_history(history_path) if int(r["epoch"]) < start and r.get(monitor)]

    rate, callbacks = make_schedule(
        t.lr_schedule,
        t.learning_rate,
        steps_per_epoch=steps_per_epoch,
        epochs=t.epochs,
        warmup_epochs=t.warmup_epochs,
        min_learning_rate=t.min_learning_rate,
        plateau_factor=t.plateau_factor,
        plateau_patience=t.plateau_patience,
        monitor=monitor,
        mode="min" if monitor.endswith("loss") else "max",
        history=history,
    )
    if not isinstance(rate, float):
        model.optimizer.learning_rate = rate
    return callbacks


# --------------------------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------------------------
# How to skip bad samples from a training run (prepare_dataset's own hint names ptx-prepare's option).
SKIP_HINT = "Fix or remove it, or set data.skip_bad: true (--set data.skip_bad=true) to skip bad samples"


def check_label_balance(cfg, prepared_dir):
    """Refuses, before the first epoch, training data the run could not use: a training split with only positive
    or only negative images (the model cannot learn to tell them apart, and the diagnosis has nothing to
    separate; positive images alone are accepted, with a warning, under `train.allow_positive_only`), or, when the thresholds are searched at the end (`evaluation.search_thresholds` with
    `train.evaluate`), a validation split with only one kind (the search needs both).

    Raises:
        DataError: naming the split, its counts and the prepared data set.
    """
    from ptx_keras.data.prepared import load_prepared_info
    from ptx_keras.errors import DataError

    counts = load_prepared_info(prepared_dir)["counts"]
    needs = [("train", "training needs both positive and negative images")]
    if cfg.train.evaluate and cfg.evaluation.search_thresholds:
        needs.append(
            (
                "val",
                "the threshold search (evaluation.search_thresholds) needs both kinds; set it to false "
                "to keep the configured thresholds",
            )
        )
    for split, why in needs:
        count = counts[split]
        if not count["total"] or (count["positive"] and count["negative"]):
            continue
        positive_only = split == "train" and not count["negative"]
        if positive_only and cfg.train.allow_positive_only:
            logger.warning(
                "The train split of %s has %d positive and no negative images (train.allow_positive_only): the "
                "model learns the masks but never sees a negative image, so its diagnosis is not trained to "
                "reject one",
                prepared_dir,
                count["positive"],
            )
            continue
        hint = (
            "; to learn the masks from positive images alone, set train.allow_positive_only: true "
            "(--set train.allow_positive_only=true)"
            if positive_only
            else ""
        )
        raise DataError(
            f"The {split} split of {prepared_dir} has {count['positive']} positive and {count['negative']} "
            f"negative images: {why}. Add images of the missing kind to the source (the split is stratified by "
            f"label){hint}"
        )


def _remove_rejected_run(run):
    """Removes what `train` wrote in a run directory this invocation created, for a run rejected before
    training (the configuration and run metadata), and the directory itself once it is empty."""
    for path in (run.config_file, run.metadata_file):
        try:
            os.remove(path)
        except OSError:
            pass
    try:
        os.rmdir(run.path)
    except OSError:
        pass  # not empty: something else lives there, leave it


def train(cfg, verbose=1):
    """Trains `cfg`; running the same configuration again resumes an interrupted run.

    With `train.strategy: multi_worker` every worker runs this with its own `TF_CONFIG`: the chief writes the run
    directory, the others a temporary copy of its resume state that they remove (docs/training.md).

    Args:
        cfg: A validated `ptx_keras.config.Config`.
        verbose: Keras progress-bar verbosity (1: bar, 2: one line per epoch, 0: silent).

    Returns:
        `TrainResult`.

    Raises:
        PtxError: for user-caused problems (data path, resolution, config, permissions), before any data work
            where the configuration alone is at fault; a run rejected before training leaves no run directory
            behind (if this call created it) and never writes `config.yaml`.
        WorkerLostError: when another worker of a multi-worker run stops or cannot be reached.
    """
    t0 = time.time()
    run = RunDir(cfg.run_dir)
    worker = None
    if cfg.train.strategy == "multi_worker":
        worker = read_tf_config()
        check_multi_worker_data(cfg)
    chief = worker is None or worker.is_chief
    # Where this process writes: the run directory, or for a non-chief worker a temporary copy of its resume state.
    out = run if chief else worker_scratch(run, worker)
    created = chief and not run.exists()
    try:
        if chief:
            writable_dir(run.path, "output directory")
        return _train(cfg, run, out, worker, created, verbose, t0)
    finally:
        if not chief:
            shutil.rmtree(out.path, ignore_errors=True)


def _initialize(cfg, model, out):
    """Loads `train.init_from` into `model` (`ptx_keras.finetune`); None without it, or when resuming (the
    backup holds the run's own weights then)."""
    if not cfg.train.init_from:
        return None
    if _read_history(out.history_file):
        logger.info("Resuming: the weights come from %s; train.init_from is not loaded again", out.backup_dir)
        return None
    from ptx_keras.finetune import initialize_from

    return initialize_from(model, cfg.train.init_from)


def _train(cfg, run, out, worker, created, verbose, t0):
    """`train`'s work. `run` is the run directory, `out` where this process writes (`run`, or a non-chief
    worker's scratch copy), `worker` the multi-worker role or None, `created` whether this call made `run`."""
    chief = worker is None or worker.is_chief
    try:
        # What the configuration alone decides is checked first (preparing data can take minutes): the
        # execution settings, the strategy, and the model itself (an unknown option, an input size its
        # poolings cannot divide).
        execution = _execution(cfg.train)
        setup = _build_model(cfg, out, execution)
        data = _datasets(cfg, run, execution.replicas)
        if worker is not None:
            data = dataclasses.replace(data, train=shard_by_data(data.train), val=shard_by_data(data.val))
            patch_keras_for_multi_worker(setup.model, execution.strategy, data.train.element_spec)
        schedule_callbacks = _learning_rate_schedule(cfg, setup.model, data.steps_per_epoch, out)
        if chief:
            _accept_run(cfg, run, data, execution, worker, setup.init)
    except BaseException:
        if created:
            _remove_rejected_run(run)
        raise
    _log_start(cfg, run, out, worker, execution, data)
    _fit(cfg, setup, data, schedule_callbacks, out, worker, run, verbose)
    epochs = len(_read_history(out.history_file))
    curves = _finish_run(cfg, run, setup.model, epochs) if chief else None
    seconds = time.time() - t0
    return TrainResult(run, run.best_model, run.history_file, epochs, seconds, data.prepared, curves, chief)


@dataclasses.dataclass(frozen=True)
class _Execution:
    """How this process computes: `configure_execution`'s settings and the distribution strategy."""

    mixed: bool
    jit: object
    grappler: bool
    strategy: object
    replicas: int


@dataclasses.dataclass(frozen=True)
class _ModelSetup:
    """The compiled model, its `train.init_from` initialization (or None) and its training phases."""

    model: object
    init: object
    phases: list
    encoder: list  # the layers frozen in a frozen-encoder phase (empty without one)


@dataclasses.dataclass(frozen=True)
class _Datasets:
    """The prepared data set and the `tf.data` pipelines trained and validated on."""

    prepared: str
    kind: str
    source: str
    n_train: int
    n_val: int
    steps_per_epoch: int
    train: object
    val: object


def _execution(train_cfg):
    """Configures the execution and chooses the strategy; the global batch must split evenly over the replicas.

    Raises:
        ConfigError: if `train.batch_size` is not divisible by the number of replicas.
    """
    mixed, jit, grappler = configure_execution(train_cfg)
    strategy = choose_strategy(train_cfg.strategy, train_cfg.worker_timeout_s)
    replicas = strategy.num_replicas_in_sync
    if train_cfg.batch_size % replicas:
        raise ConfigError(
            f"train.batch_size={train_cfg.batch_size} is the global batch size and must be divisible by the "
            f"{replicas} replicas of the {train_cfg.strategy} strategy"
        )
    return _Execution(mixed, jit, grappler, strategy, replicas)


def _build_model(cfg, out, execution):
    """Builds and compiles the model in the strategy's scope, initializes it and plans its training phases."""
    with execution.strategy.scope():
        model = build_and_compile(cfg, jit_compile=execution.jit)
        init = _initialize(cfg, model, out)
    from ptx_keras.finetune import encoder_layers, training_phases

    t = cfg.train
    phases = training_phases(t.epochs, t.freeze_encoder_epochs, len(_read_history(out.history_file)))
    encoder = encoder_layers(model) if t.freeze_encoder_epochs else []
    return _ModelSetup(model, init, phases, encoder)


def _datasets(cfg, run, replicas):
    """Resolves (prepares when needed) the data and builds the training and validation pipelines.

    Raises:
        ConfigError: if several replicas need a larger training split than the global batch.
        BadSampleError: for a bad sample (with the hint to skip bad samples).
    """
    from ptx_keras.data.pipeline import count_examples, make_dataset

    data = _resolve(cfg, run)
    prepared = data.prepared_dir
    n_train, n_val = count_examples(prepared, "train"), count_examples(prepared, "val")
    check_label_balance(cfg, prepared)
    # Several replicas: every step gives each exactly batch_size / replicas images, so the last, smaller
    # batch of an epoch is dropped (split unevenly, a replica could get none).
    drop_remainder = replicas > 1
    if drop_remainder and n_train < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is larger than the {n_train} training images")
    steps_per_epoch = cfg.train.steps_per_epoch or (
        n_train // cfg.train.batch_size if drop_remainder else math.ceil(n_train / cfg.train.batch_size)
    )
    common = dict(channels=cfg.data.channels, seed=cfg.train.seed)
    train_ds = make_dataset(
        prepared,
        "train",
        cfg.train.batch_size,
        True,
        shuffle_buffer=cfg.data.shuffle_buffer,
        augment=cfg.data.augmentation(),
        positive_fraction=cfg.data.positive_fraction,
        crop_size=cfg.data.crop_size,
        crop_foreground=cfg.data.crop_foreground,
        drop_remainder=drop_remainder,
        # A fixed steps_per_epoch may ask for more batches than the split holds: without repeating, Keras
        # ends each epoch when the data runs out (a warning only), and the schedules, which count
        # steps_per_epoch steps per epoch, would never reach their end.
        repeat=cfg.train.steps_per_epoch is not None,
        **common,
    )
    val_ds = make_dataset(prepared, "val", cfg.train.batch_size, False, **common)
    if cfg.model.options.get("aux_head"):
        train_ds, val_ds = aux_targets(train_ds), aux_targets(val_ds)
    return _Datasets(prepared, data.kind, data.source, n_train, n_val, steps_per_epoch, train_ds, val_ds)


def _resolve(cfg, run):
    """`ptx_keras.data.resolve.resolve_data` for the configuration; a bad sample's error gets the skip hint."""
    from ptx_keras.data.resolve import resolve_data

    try:
        return resolve_data(
            cfg.data.path,
            cfg.data,
            cache_dir=cfg.data.cache_dir or run.default_cache_dir,
            phantoms=cfg.data.phantoms,
            skip_bad=cfg.data.skip_bad,
            workers=cfg.data.workers,
        )
    except BadSampleError as e:
        raise e.with_hint(SKIP_HINT) from None


def _accept_run(cfg, run, data, execution, worker, init):
    """The chief accepts the run: writes its configuration, and its data, distribution and initialization to
    `run.json`."""
    run.save_config(cfg)  # only now: the run is accepted
    distribution = {"strategy": cfg.train.strategy, "replicas": execution.replicas}
    if worker is not None:
        distribution["workers"] = worker.cluster
    run.update_metadata(
        prepared_dir=data.prepared,
        data_kind=data.kind,
        data_source=data.source,
        status="training",
        distribution=distribution,
    )
    if init is not None:
        run.update_metadata(
            init_from=init.summary(
                report=init.write_csv(run.init_report_file),
                freeze_encoder_epochs=cfg.train.freeze_encoder_epochs,
            )
        )


def _log_start(cfg, run, out, worker, execution, data):
    logger.info(
        "Run %s: model %s, loss %s, %d train / %d val images at %dpx, batch %d on %d replica(s), mixed precision "
        "%s, XLA %s, Grappler %s",
        run.path,
        cfg.model.name,
        cfg.loss.name,
        data.n_train,
        data.n_val,
        cfg.data.image_size,
        cfg.train.batch_size,
        execution.replicas,
        "on" if execution.mixed else "off",
        execution.jit,
        "on" if execution.grappler else "off",
    )
    if worker is not None:
        chief = worker.is_chief
        logger.info(
            "This process is %s of %d workers (%s): %d images per step of the global batch of %d; %s",
            worker.name,
            worker.count,
            "chief" if chief else "not the chief",
            cfg.train.batch_size // execution.replicas,
            cfg.train.batch_size,
            "it writes the run directory" if chief else f"its checkpoints go to {out.path}, removed at the end",
        )


def _fit(cfg, setup, data, schedule_callbacks, out, worker, run, verbose):
    """Fits the model, phase by phase; a lost worker's error is explained (`lost_worker_error`)."""
    from ptx_keras.finetune import apply_phase

    try:
        for phase in setup.phases:  # one phase unless the encoder is frozen for the first epochs
            apply_phase(setup.model, phase, setup.encoder)
            setup.model.fit(
                data.train,
                validation_data=data.val,
                initial_epoch=phase.start,
                epochs=phase.end,
                steps_per_epoch=cfg.train.steps_per_epoch,
                validation_steps=cfg.train.validation_steps,
                shuffle=False,  # the pipeline shuffles (make_dataset); Keras' default True only warns on a dataset
                callbacks=schedule_callbacks + make_callbacks(cfg, out),  # a plateau cut must precede the backup
                verbose=verbose,
            )
            if setup.model.stop_training:  # early stopping or a NaN loss in the frozen phase
                break
    except Exception as e:
        lost = lost_worker_error(e, worker, run) if worker is not None else None
        if lost is None:
            raise
        raise lost from e


def _finish_run(cfg, run, model, epochs):
    """The chief's end of training: a model even when no epoch was best, the curves, status `trained`.

    Returns:
        `training_curves.png`, or None when no epoch finished.
    """
    curves = None
    if not run.has_model():  # no epoch produced a finite monitored value (e.g. NaN loss)
        model.save(run.best_model)
    if cfg.data.crop_size is not None:  # trained on crops: best.keras takes whole images at the prepared size
        fixed_size_model(cfg, run.load_model()).save(run.best_model)
    if epochs:
        from ptx_keras.figures.evaluation import plot_history

        curves = plot_history(run.history_file, run.curves_file, monitor=monitored(cfg))
    run.update_metadata(status="trained", epochs=epochs)
    return curves
