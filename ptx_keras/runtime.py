"""Process-wide settings that make TensorFlow faster on CPUs; they must be in place before TensorFlow starts.

`import ptx_keras` applies the training settings (`configure_process()`) to the process's environment, so a
script that imports ptx_keras before Keras or TensorFlow, builds a model and calls `fit` gets the same speed
as the command-line tools (why at import time: docs/benchmarks.md, "Fast settings at import"). The variables
are those TensorFlow reads once, when it starts (measured in docs/benchmarks.md, "Speed against PyTorch"):

* `TF_CPU_ALLOCATOR_USE_BFC=true`: TensorFlow's best-fit-with-coalescing pool (its GPU allocator) for CPU
  tensors. The default CPU allocator hands every tensor to `malloc`, which maps each block of more than
  32 MiB (an FC-DenseNet at 256 x 256 makes hundreds per step) freshly from the kernel and unmaps it when
  it is freed: every page is faulted in again on every step, a third of a training step's CPU time went to
  the kernel. The pool maps its memory once and keeps it (the process's resident memory stays at its peak).
* `TF_ENABLE_ONEDNN_OPTS=1`: oneDNN's convolution, batch-normalization and pooling kernels. TensorFlow turns
  them on by itself only on CPUs with AVX-512 VNNI or newer; on AVX2 CPUs it otherwise runs Eigen's
  convolutions, whose filter gradients took almost half of a training step. A process that serves single
  images (`purpose="serve"` with `batch_size` below `ONEDNN_MIN_BATCH`) gets `TF_ENABLE_ONEDNN_OPTS=0`
  instead: oneDNN falls back to a slow kernel for a batch of one, where Eigen's is faster (docs/benchmarks.md).
  A process that keeps oneDNN on (a user's script that trains, then predicts single images) still gets a
  fast single-image prediction from the package's models: `ptx_keras.models.SegmentationModel` runs it
  XLA-compiled (`ptx_keras.ops.small_batch_xla_enabled`).

Rules, in order:

* `PTX_KERAS_PROCESS_TUNING=0` (or `false`, `off`, `no`): nothing is changed.
* A value the user set wins: only variables that ptx_keras itself set are ever changed again. Which those are
  is kept in `PTX_KERAS_PROCESS_DEFAULTS` (`NAME=value,...`), which child processes inherit: a `ptx-predict`
  started from a script that imported ptx_keras can still choose its serving settings.
* Before TensorFlow starts, every call sets the settings of its purpose (the last call before the start
  wins): `ptx-predict` and other serving entry points call `configure_process(purpose="serve",
  batch_size=N)` after `import ptx_keras` has set the training ones.
* Once TensorFlow has started, nothing can take effect: a setting that is not in effect is reported in the
  result (`"not_applied"`) and, for the training settings, by one log warning per process, which names the fix.

On a GPU machine these settings only concern the few operations left on the CPU.

One more setting is not an environment variable: `tf.data`'s autotuning model (`tf.data.Options().autotune`),
which TensorFlow runs in a thread beside every iterator of a dataset. Its wake-up at the end of a pass over the
data (an epoch, an `evaluate`, a `fit` call) can be lost: TensorFlow's cancellation notifies the thread before
it marks the iterator cancelled, the thread sees "not cancelled" and sleeps out the rest of its optimisation
period (10 ms, doubling after each optimisation up to 60 s), and the main thread waits for it (measured in
docs/benchmarks.md, "The 10-second `fit` stall"). `dataset_options()` turns that model off: the package's own
input pipelines always use it, and `keras_array_datasets_without_autotune()` (installed when `ptx_keras.models`
is imported, so by `import keras` in a process that imported ptx_keras, in either order) adds it to the
datasets Keras builds from arrays for `fit`, `evaluate` and `predict`, unless `PTX_KERAS_PROCESS_TUNING=0`.
A `tf.data.Dataset` a user passes keeps its own options:
`dataset.with_options(ptx_keras.runtime.dataset_options())` applies the same fix.
"""

import functools
import logging
import os
import sys

__all__ = [
    "PROCESS_SETTINGS",
    "TUNING_VARIABLE",
    "configure_process",
    "dataset_options",
    "keras_array_datasets_without_autotune",
    "tuning_enabled",
]


logger = logging.getLogger(__name__)

TUNING_VARIABLE = "PTX_KERAS_PROCESS_TUNING"
# `NAME=value,...` of the variables that ptx_keras (not the user) set; inherited by child processes.
DEFAULTS_VARIABLE = "PTX_KERAS_PROCESS_DEFAULTS"
# The training (and default) settings.
PROCESS_SETTINGS = {"TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_ENABLE_ONEDNN_OPTS": "1"}
PURPOSES = ("train", "serve")
# Serving batches smaller than this run Eigen's kernels (oneDNN off): oneDNN has no fast convolution for a
# batch of one NHWC tensor (docs/benchmarks.md, "Targets"). Batches of 2-7 were not measured; 8 is faster
# with oneDNN, so the switch is kept at the measured case.
ONEDNN_MIN_BATCH = 2

_warned = set()  # the settings one warning has already named in this process


def tuning_enabled():
    """Whether `configure_process` changes anything (`PTX_KERAS_PROCESS_TUNING`, default on)."""
    return os.environ.get(TUNING_VARIABLE, "1").strip().lower() not in ("0", "false", "off", "no")


def process_settings(purpose="train", batch_size=None):
    """The environment variables a process of this purpose should start TensorFlow with.

    Args:
        purpose: `"train"` (also the default for anything else: evaluation, export) or `"serve"` (a process
            that runs inference on batches of `batch_size` images).
        batch_size: Images per model call of a serving process; None: unknown (treated as large).

    Returns:
        dict `{variable: value}`.

    Raises:
        ValueError: for an unknown `purpose` or a `batch_size` that is not a positive integer or None.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"`purpose` must be one of {', '.join(PURPOSES)}. Received: purpose={purpose!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"`batch_size` must be a positive integer or None. Received: batch_size={batch_size!r}")
    settings = dict(PROCESS_SETTINGS)
    if purpose == "serve" and batch_size is not None and batch_size < ONEDNN_MIN_BATCH:
        settings["TF_ENABLE_ONEDNN_OPTS"] = "0"
    return settings


def _own_values():
    """`{variable: value}` that ptx_keras set in this process or a parent and that still hold."""
    own = {}
    for item in filter(None, os.environ.get(DEFAULTS_VARIABLE, "").split(",")):
        name, _, value = item.partition("=")
        if name in PROCESS_SETTINGS and os.environ.get(name) == value:
            own[name] = value
    return own


def _tensorflow_started():
    return "tensorflow" in sys.modules


def configure_process(purpose="train", batch_size=None):
    """Puts `process_settings(purpose, batch_size)` into the environment where TensorFlow has not started yet.

    Variables the user set are left alone; those ptx_keras set earlier (at `import ptx_keras`, or in a parent
    process) are set again for this purpose.

    Args:
        purpose, batch_size: As for `process_settings`.

    Returns:
        dict: `{variable: value in effect}`; `{"tuning": "off"}` with `PTX_KERAS_PROCESS_TUNING=0`; with a
        `"not_applied"` entry saying what is not in effect when TensorFlow had already started.

    Raises:
        ValueError: as `process_settings`.
    """
    wanted = process_settings(purpose, batch_size)
    if not tuning_enabled():
        return {"tuning": "off"}
    own = _own_values()
    users = {name for name in wanted if name in os.environ and name not in own}
    if _tensorflow_started():
        missed = sorted(n for n, v in wanted.items() if n not in users and os.environ.get(n) != v)
        result = {name: os.environ.get(name) for name in wanted}
        if missed:
            text = ", ".join(f"{n}={wanted[n]}" for n in missed)
            result["not_applied"] = f"TensorFlow started before ptx_keras could set {text}"
            if purpose != "train":
                # A serving command called inside a process that already runs TensorFlow (a test, a notebook):
                # it works, only not with the kernels best for its batch size.
                logger.debug("%s; the process keeps its kernels", result["not_applied"])
            elif not set(missed) <= _warned:
                _warned.update(missed)
                logger.warning(
                    "%s: this process runs without them (training on CPUs without AVX-512 VNNI up to 2x slower, "
                    "docs/benchmarks.md). Fix: import ptx_keras before keras and tensorflow (or set the variables "
                    "before Python starts); %s=0 turns this tuning and this warning off.",
                    result["not_applied"],
                    TUNING_VARIABLE,
                )
        return result
    for name, value in wanted.items():
        if name not in users:
            os.environ[name] = value
            own[name] = value
    os.environ[DEFAULTS_VARIABLE] = ",".join(f"{n}={v}" for n, v in sorted(own.items()))
    return {name: os.environ[name] for name in wanted}


def configure_on_import():
    """`configure_process()` as `import ptx_keras` runs it: never lets the import fail."""
    try:
        configure_process()
    except Exception as e:  # noqa: BLE001 - a broken environment must not break `import ptx_keras`
        logger.warning("ptx_keras could not apply its process settings (%s: %s)", type(e).__name__, e)


def serving_batch_size(inputs, batch_size):
    """The largest batch a serving command will run: `batch_size`, or fewer when it was given fewer files.

    Args:
        inputs: The paths the command was given (files or folders; a folder counts as many images).
        batch_size: The command's images per model call.

    Returns:
        int, at least 1.
    """
    if inputs and all(os.path.isfile(path) for path in inputs):
        return max(1, min(batch_size, len(inputs)))
    return batch_size


def dataset_options():
    """The `tf.data.Options` of the package's input pipelines: the autotuning model thread off (see the module).

    Without that thread, `num_parallel_calls=tf.data.AUTOTUNE` runs as many parallel calls as the machine has
    cores and `prefetch(tf.data.AUTOTUNE)` keeps its own buffer tuning (which does not use the thread).

    Returns:
        `tf.data.Options` with `autotune.enabled = False`; merge it with `dataset.with_options(...)`.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options


# Marks a `get_tf_dataset` that `keras_array_datasets_without_autotune` has wrapped (installing is idempotent).
_WRAPPED_MARK = "_ptx_keras_without_autotune"


def keras_array_datasets_without_autotune():
    """Makes the `tf.data` datasets Keras builds from arrays (`fit(x, y)`, `evaluate`, `predict`) use
    `dataset_options()`, so that the end of each pass does not wait out the autotuner's sleep (see the module).

    Wraps `keras.src.trainers.data_adapters.array_data_adapter.ArrayDataAdapter.get_tf_dataset` once per
    process; does nothing with `PTX_KERAS_PROCESS_TUNING=0`, or (with a debug log) when a Keras version no
    longer has that method. Never raises: a failure is logged as a warning.

    Returns:
        bool: whether Keras' array datasets now use `dataset_options()`.
    """
    if not tuning_enabled():
        return False
    try:
        from keras.src.trainers.data_adapters import array_data_adapter
    except ImportError as e:
        logger.debug("tf.data autotune fix not installed: %s", e)
        return False
    adapter = getattr(array_data_adapter, "ArrayDataAdapter", None)
    original = getattr(adapter, "get_tf_dataset", None)
    if original is None:
        logger.debug("tf.data autotune fix not installed: Keras has no ArrayDataAdapter.get_tf_dataset")
        return False
    if getattr(original, _WRAPPED_MARK, False):
        return True
    try:

        @functools.wraps(original)
        def get_tf_dataset(self, *args, **kwargs):
            return original(self, *args, **kwargs).with_options(dataset_options())

        setattr(get_tf_dataset, _WRAPPED_MARK, True)
        adapter.get_tf_dataset = get_tf_dataset
    except Exception as e:  # noqa: BLE001 - a speed fix must never break importing the models
        logger.warning("ptx_keras could not install its tf.data autotune fix (%s: %s)", type(e).__name__, e)
        return False
    return True
