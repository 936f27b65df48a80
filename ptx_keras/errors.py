"""Exceptions users can cause. The CLIs print them as one line and exit non-zero."""

import os
import tempfile

__all__ = [
    "PORTABLE_MODULES",
    "BackendError",
    "BadSampleError",
    "ConfigError",
    "DataError",
    "ModelError",
    "OutputError",
    "PtxError",
    "WorkerLostError",
    "require_tensorflow",
    "writable_dir",
]


class PtxError(Exception):
    """Base class for errors caused by user input (files, configuration, shapes)."""


class ConfigError(PtxError, ValueError):
    """A configuration file, key or value is invalid."""


class DataError(PtxError, ValueError):
    """A data source, sample or prepared data set is invalid."""


class ModelError(PtxError, ValueError):
    """A model name, run directory or model input is invalid."""


class BadSampleError(DataError):
    """One sample (an image, a mask, a manifest row) is unusable; preparation can skip it instead (`skip_bad`).

    Args:
        problem: What is wrong, naming the file, line or ImageId.
        hint: How to skip such samples in the entry point the user ran (`ptx-prepare --skip-bad`,
            `--set data.skip_bad=true`), appended to the message; None for none.
    """

    def __init__(self, problem, hint=None):
        self.problem, self.hint = str(problem), hint
        super().__init__(self.problem if not hint else f"{self.problem}. {hint}")

    def with_hint(self, hint):
        """The same problem with another hint (each entry point names its own option)."""
        return type(self)(self.problem, hint)


class OutputError(PtxError, OSError):
    """An output directory or file cannot be written (permissions, read-only file system, a file in the way)."""


def writable_dir(path, what="output directory"):
    """Creates directory `path` (and its parents) if needed and checks that a file can be written in it.

    Called before any work, so that an unwritable output fails at once with its role and path named instead
    of a bare `[Errno N]` later.

    Args:
        path: The directory.
        what: Its role in the message (e.g. `"prepared data directory"`).

    Returns:
        The absolute path.

    Raises:
        OutputError: `Cannot write to the <what> <path>: <reason>`.
    """
    path = os.path.abspath(os.fspath(path))
    created = not os.path.exists(path)
    try:
        if not created and not os.path.isdir(path):
            raise NotADirectoryError(0, "a file of that name exists")
        os.makedirs(path, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(handle)
        os.remove(probe)
    except OSError as e:
        if created and os.path.isdir(path):
            os.rmdir(path)  # made here; a refused output leaves nothing behind
        raise OutputError(f"Cannot write to the {what} {path}: {e.strerror or e}") from None
    return path


class WorkerLostError(PtxError, RuntimeError):
    """A worker of a multi-worker run stopped or became unreachable; the message names it and how to resume."""


class BackendError(PtxError, ImportError):
    """A TensorFlow-only part of ptx_keras was imported while Keras runs on another backend (JAX, PyTorch)."""


# What runs on every Keras backend, for the message of `require_tensorflow` (docs/scaling.md).
PORTABLE_MODULES = "ptx_keras.layers, ptx_keras.losses, ptx_keras.metrics, ptx_keras.optimizers and ptx_keras.models"


def require_tensorflow(module):
    """Raises `BackendError` unless Keras runs on its TensorFlow backend; called at the top of TF-only modules.

    The tf.data input pipeline, training (tf.distribute), the SavedModel export and the serving graph are
    built from TensorFlow ops and call the model inside TensorFlow graphs: on another backend they would fail
    deep inside with an unrelated error. Keras reads its backend once, from `KERAS_BACKEND` or
    `~/.keras/keras.json`, when it is first imported.

    Args:
        module: The importing module's `__name__`, named in the message.

    Raises:
        BackendError: naming the module, the backend Keras runs on and how to choose TensorFlow.
    """
    import keras

    backend = keras.config.backend()
    if backend != "tensorflow":
        raise BackendError(
            f"{module} needs Keras' TensorFlow backend, but Keras runs on {backend!r}. Set KERAS_BACKEND=tensorflow "
            f"before Python starts for training, evaluation, export and prediction; {PORTABLE_MODULES} run on "
            f"every backend (docs/scaling.md)"
        )
