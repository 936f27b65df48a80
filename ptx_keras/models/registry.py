"""The model registry behind `ptx_keras.build_model(name, **overrides)`.

Each model module registers its presets with `@register_preset("name", description=...)` on a builder
`fn(**overrides) -> keras.Model`. Every builder accepts at least `input_shape=(height, width, channels)` and
`num_classes`.

Importing this module imports its package `ptx_keras.models` first (Python imports parent packages), whose
`__init__` imports every model module: whenever the registry can be reached, every preset is registered.
"""

from ptx_keras.errors import ModelError

__all__ = ["build_model", "list_models", "register_preset"]


_PRESETS = {}


def register_preset(name, description=""):
    """Decorator registering `fn(**overrides) -> keras.Model` under `name`.

    Args:
        name: Preset name, lowercase with underscores.
        description: One line shown by `list_models()`.

    Returns:
        The decorator; it returns the builder unchanged.

    Raises:
        ValueError: if `name` is already registered.
    """

    def decorator(fn):
        if name in _PRESETS:
            raise ValueError(f"Model preset {name!r} is registered twice.")
        _PRESETS[name] = (fn, description)
        return fn

    return decorator


def list_models():
    """Returns `{name: description}` for every registered preset, sorted by name."""
    return {name: _PRESETS[name][1] for name in sorted(_PRESETS)}


def build_model(name, **overrides):
    """Builds a registered model.

    Args:
        name: One of `list_models()`, e.g. `"ms_scse_fc_densenet103"` (the paper's model).
        **overrides: Keyword arguments forwarded to the preset's builder (e.g. `input_shape=(256, 256, 1)`,
            `growth_rate=4`).

    Returns:
        An uncompiled `keras.Model` mapping `(batch, height, width, channels)` images to
        `(batch, height, width, num_classes)` softmax probabilities (float32); with `aux_head=True` (FC-DenseNets,
        U-Nets) the dict `{"mask": softmax, "aux": (batch, 1) image-level probability}` (`models.common`).

    Raises:
        ModelError: if `name` is unknown (the message lists the known names).
    """
    if name not in _PRESETS:
        known = ", ".join(sorted(_PRESETS))
        raise ModelError(f"Unknown model name: {name!r}. Known models: {known}")
    fn, _ = _PRESETS[name]
    return fn(**overrides)
