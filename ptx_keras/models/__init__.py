"""Segmentation networks and the preset registry.

`build_model(name, **overrides)` builds any registered preset; `list_models()` lists them. Importing a
model module registers its presets: one import line per model module below.
"""

from ptx_keras.models.registry import build_model, list_models, register_preset
from ptx_keras.models.fc_densenet import FCDenseNet
from ptx_keras.models.unet import UNet

# The counters live in `summary`, which is also run as `python -m ptx_keras.models.summary`; importing it
# here eagerly would make runpy warn, so its names are resolved on first access.
_SUMMARY_NAMES = ("count_macs", "count_parameters", "summary_table")


def __getattr__(name):
    if name in _SUMMARY_NAMES:
        from ptx_keras.models import summary

        return getattr(summary, name)
    raise AttributeError(f"module 'ptx_keras.models' has no attribute {name!r}")


__all__ = [
    "FCDenseNet",
    "UNet",
    "build_model",
    "count_macs",
    "count_parameters",
    "list_models",
    "register_preset",
    "summary_table",
]
from ptx_keras.models import segnet as _segnet  # noqa: E402,F401  (registers the "segnet" preset)
from ptx_keras.models import deeplab as _deeplab  # noqa: E402,F401  (registers "deeplabv3plus")
from ptx_keras.models import denseaspp as _denseaspp  # noqa: E402,F401  (registers "denseaspp")
