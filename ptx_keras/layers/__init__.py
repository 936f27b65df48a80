"""Custom Keras layers: scSE attention, the multi-scale convolution and the FC-DenseNet blocks.

All compute with `keras.ops`, validate their arguments, serialise with `get_config` and are registered
under the package name "ptx_keras", so `.keras` files load without `custom_objects`.
"""

from ptx_keras.layers.checks import InputSizeCheck, check_spatial_size
from ptx_keras.layers.dense_block import DenseBlock, DenseLayer, TransitionDown, TransitionUp
from ptx_keras.layers.multiscale import MultiScaleConv2D
from ptx_keras.layers.scse import SCSEBlock

__all__ = [
    "DenseBlock",
    "DenseLayer",
    "InputSizeCheck",
    "MultiScaleConv2D",
    "SCSEBlock",
    "TransitionDown",
    "TransitionUp",
    "check_spatial_size",
]

from ptx_keras.layers.baselines import MaxPoolingWithIndices2D, MaxUnpooling2D, ResizeLike  # noqa: E402

__all__ += ["MaxPoolingWithIndices2D", "MaxUnpooling2D", "ResizeLike"]
