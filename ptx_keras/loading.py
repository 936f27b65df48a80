"""Loading saved `.keras` models: registers every ptx_keras custom object first.

Keras resolves registered classes only when the module that registers them has been imported; a process that
only evaluates or predicts may not have imported the layers, losses or metrics yet.
"""

import os

from ptx_keras.errors import ModelError


def register_all():
    """Imports the modules whose classes are registered with `keras.saving.register_keras_serializable`."""
    import ptx_keras.layers  # noqa: F401
    import ptx_keras.losses  # noqa: F401
    import ptx_keras.metrics.keras_metrics  # noqa: F401
    import ptx_keras.models  # noqa: F401
    import ptx_keras.optimizers  # noqa: F401


def load_model(path, compile=False):
    """Loads a `.keras` model saved by ptx_keras (e.g. `RUN_DIR/best.keras`).

    Args:
        path: The `.keras` file.
        compile: Restore the optimizer, loss and metrics too (not needed for inference).

    Returns:
        The `keras.Model`.

    Raises:
        ModelError: if the file is missing or is not a loadable Keras model.
    """
    import keras

    if not os.path.isfile(path):
        raise ModelError(f"No model file at {path}")
    register_all()
    try:
        return keras.models.load_model(path, compile=compile)
    except Exception as e:  # Keras raises ValueError/OSError/TypeError for corrupt or foreign files.
        raise ModelError(f"Cannot load the model {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
