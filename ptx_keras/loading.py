"""Loading saved `.keras` models: registers every ptx_keras custom object first.

Keras resolves registered classes only when the module that registers them has been imported; a process that
only evaluates or predicts may not have imported the layers, losses or metrics yet.
"""

import os
import zipfile
import zlib

from ptx_keras import _registration
from ptx_keras.errors import ModelError

__all__ = ["check_archive", "load_model", "register_all"]


def register_all():
    """Imports the modules whose classes are registered with `keras.saving.register_keras_serializable`.

    `import ptx_keras` already does this once Keras is imported (`ptx_keras._registration`); calling it again
    costs nothing.
    """
    _registration.register_all()


_DAMAGED_HINT = "it may be truncated or damaged (an interrupted save, copy or download); save or copy it again"


def check_archive(path):
    """Checks that a `.keras` file is a complete zip archive holding a model configuration.

    Keras reports a truncated `.keras` file (no zip directory at its end) as "File not found". Other
    extensions (legacy `.h5`) are left to Keras.

    Raises:
        ModelError: naming the file and what is wrong with it.
    """
    if not str(path).endswith(".keras"):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ModelError(
            f"{path} is not a valid, complete .keras archive ({type(e).__name__}: {e}); {_DAMAGED_HINT}"
        ) from None
    if "config.json" not in names:
        raise ModelError(f"{path} is a zip archive but not a .keras model (no config.json inside)")


def load_model(path, compile=False):
    """Loads a `.keras` model saved by ptx_keras (e.g. `RUN_DIR/best.keras`).

    Args:
        path: The `.keras` file.
        compile: Restore the optimizer, loss and metrics too (not needed for inference).

    Returns:
        The `keras.Model`.

    Raises:
        ModelError: if the file is missing, is not a complete and intact `.keras` archive (truncated, damaged)
            or is not a loadable Keras model.
    """
    import keras

    if not os.path.isfile(path):
        raise ModelError(f"No model file at {path}")
    check_archive(path)
    register_all()
    try:
        return keras.models.load_model(path, compile=compile)
    except (zipfile.BadZipFile, zlib.error) as e:  # a member fails its CRC check or does not decompress
        raise ModelError(f"{path} is damaged ({type(e).__name__}: {e}); {_DAMAGED_HINT}") from None
    except Exception as e:  # Keras raises ValueError/OSError/TypeError for corrupt or foreign files.
        raise ModelError(f"Cannot load the model {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
