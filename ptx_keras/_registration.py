"""Registers ptx_keras' Keras-serializable classes as soon as a process has imported both ptx_keras and Keras.

Why this module exists: `keras.saving.load_model("m.keras")` finds `"ptx_keras>SCSEBlock"` (and every other
class of ours in a saved file) only if the module that defines the class has run its
`@keras.saving.register_keras_serializable(package="ptx_keras")` decorator. `import ptx_keras` must not import
Keras itself: data-preparation workers (multiprocessing *spawn*) and `--help` would pay TensorFlow's start-up time
and memory each for TensorFlow they never use. So `install()`, called by `ptx_keras/__init__.py`:

* registers at once if Keras is already imported;
* otherwise puts a small finder at the front of `sys.meta_path`. It only looks at the import of `keras` and of
  `ptx_keras.*` modules; for those it wraps the loader's `exec_module` for that one call. Right after Keras'
  package has executed, and once no ptx_keras module is half-way through its own import in this thread
  (importing `ptx_keras.models` while `ptx_keras.layers` is being imported would fail on the half-made
  package), it imports `REGISTERING_MODULES` and removes itself from `sys.meta_path`.

A failure to register is logged as a warning and never breaks `import keras`; `ptx_keras.loading.load_model`
registers by itself in any case.
"""

import importlib
import logging
import sys
import threading

logger = logging.getLogger(__name__)

# The modules whose import registers classes with Keras (layers, losses, in-graph metrics, the optimizer), and
# the models package (its presets build with those classes).
REGISTERING_MODULES = (
    "ptx_keras.layers",
    "ptx_keras.losses",
    "ptx_keras.metrics.keras_metrics",
    "ptx_keras.optimizers",
    "ptx_keras.models",
)


def register_all():
    """Imports every module of `REGISTERING_MODULES` (a no-op for those already imported).

    Raises:
        Whatever one of these imports raises (e.g. ImportError without Keras installed).
    """
    for name in REGISTERING_MODULES:
        importlib.import_module(name)


def _register_or_warn():
    try:
        register_all()
    except Exception as e:  # noqa: BLE001 - this runs inside `import keras`, which must not fail because of us
        logger.warning(
            "ptx_keras could not register its Keras classes (%s: %s); keras.saving.load_model will not find "
            "them. ptx_keras.loading.load_model registers them itself.",
            type(e).__name__,
            e,
        )


def _initializing(module):
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


class _KerasImportHook:
    """A `sys.meta_path` finder that registers ptx_keras' classes right after Keras is imported (see above).

    It finds nothing itself: for `keras` and `ptx_keras.*` it asks the finders behind it for the spec and
    wraps that spec's loader's `exec_module` for the one import.
    """

    def __init__(self):
        self._local = threading.local()  # per thread: how many ptx_keras modules are executing
        self.keras_imported = False
        self.done = False

    @property
    def _depth(self):
        return getattr(self._local, "depth", 0)

    def find_spec(self, fullname, path=None, target=None):
        is_keras = fullname == "keras"
        if self.done or not (is_keras or fullname.startswith("ptx_keras.")):
            return None
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        loader = getattr(spec, "loader", None)
        # Only plain loader instances (SourceFileLoader and the like) are wrapped; a class used as a loader
        # (BuiltinImporter) would be changed for every module.
        if loader is not None and hasattr(loader, "exec_module") and not isinstance(loader, type):
            self._wrap(loader, is_keras)
        return spec

    def _wrap(self, loader, is_keras):
        exec_module = loader.exec_module

        def exec_and_register(module):
            if not is_keras:
                self._local.depth = self._depth + 1
            try:
                exec_module(module)
            finally:
                if not is_keras:
                    self._local.depth -= 1
                loader.__dict__.pop("exec_module", None)  # the loader's own method again
            if is_keras:
                self.keras_imported = True
            self._maybe_register()

        try:
            loader.exec_module = exec_and_register
        except (AttributeError, TypeError):  # a loader without an instance dict: leave it alone
            pass

    def _maybe_register(self):
        if self.done or not self.keras_imported or self._depth:
            return
        self.done = True  # before importing: those imports pass through this finder again
        uninstall()
        _register_or_warn()


def install():
    """Registers now if Keras is imported, else installs the import hook (once). Called by `ptx_keras`."""
    keras = sys.modules.get("keras")
    if keras is not None and not _initializing(keras):
        _register_or_warn()
        return
    if not any(isinstance(finder, _KerasImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _KerasImportHook())


def uninstall():
    """Removes the import hook (if installed)."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _KerasImportHook)]
