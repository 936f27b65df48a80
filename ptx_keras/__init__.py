"""ptx_keras: pneumothorax segmentation and diagnosis on chest X-rays.

Implements MS_scSE_FC-DenseNet (FC-DenseNet with a multi-scale first convolution and scSE attention), the
spatially weighted cross-entropy loss, the paper's metrics and its area-threshold diagnosis rule.

Heavy submodules (Keras, TensorFlow) are imported lazily so that data preparation workers and command-line
help stay fast. Still, every Keras class of the package is registered for `keras.saving.load_model` as soon as
the process imports Keras (or at once if it already has): see `ptx_keras._registration`.

Importing the package also puts the faster CPU settings for TensorFlow into the process's environment
(`ptx_keras.runtime`: unless the user set them, or `PTX_KERAS_PROCESS_TUNING=0`); they take effect only when
ptx_keras is imported before Keras and TensorFlow, and a warning says so otherwise.
"""

__version__ = "0.1.0"

_LAZY = {
    "build_model": ("ptx_keras.models", "build_model"),
    "list_models": ("ptx_keras.models", "list_models"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'ptx_keras' has no attribute {name!r}")


__all__ = ["__version__", "build_model", "list_models"]

from ptx_keras import runtime  # noqa: E402 - standard library only: starts no TensorFlow

# Before anything can start TensorFlow: the allocator and kernel settings are read once, at its start.
runtime.configure_on_import()

from ptx_keras import _registration  # noqa: E402 - after __version__, which the registered modules may read

_registration.install()
