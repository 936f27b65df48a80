"""Segmentation networks and the preset registry.

`build_model(name, **overrides)` builds any registered preset; `list_models()` lists them. Importing a
model module registers its presets: one import line per model module below.
"""

from ptx_keras.models import deeplab as _deeplab  # noqa: F401  (registers "deeplabv3plus")
from ptx_keras.models import denseaspp as _denseaspp  # noqa: F401  (registers "denseaspp")
from ptx_keras.models import segnet as _segnet  # noqa: F401  (registers the "segnet" preset)
from ptx_keras.models.common import SegmentationModel
from ptx_keras.models.fc_densenet import FCDenseNet
from ptx_keras.models.registry import build_model, list_models, register_preset
from ptx_keras.models.summary import count_macs, count_parameters, summary_table
from ptx_keras.models.unet import UNet

__all__ = [
    "FCDenseNet",
    "SegmentationModel",
    "UNet",
    "build_model",
    "count_macs",
    "count_parameters",
    "list_models",
    "register_preset",
    "summary_table",
]
