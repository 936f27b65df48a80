"""Segmentation networks and the preset registry.

`build_model(name, **overrides)` builds any registered preset; `list_models()` lists them.
"""

from ptx_keras.models.registry import build_model, list_models, register_preset

__all__ = ["build_model", "list_models", "register_preset"]
