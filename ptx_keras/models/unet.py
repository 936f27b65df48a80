"""U-Net (Ronneberger et al. 2015) and the paper's MS_scSE_U-Net comparison model, with their presets.

Layout: (conv block -> 2x2 max-pool) x depth -> bottleneck conv block ->
(2x2 transposed conv -> concat skip -> conv block) x depth -> 1x1 conv -> softmax. A conv block is
two (3x3 conv [-> BN] -> ReLU), followed by an scSE module when `scse=True`.
"""

import keras

from ptx_keras.constants import (
    MULTISCALE_FILTERS_PER_BRANCH,
    MULTISCALE_KERNEL_SIZES,
    NUM_CLASSES,
    SCSE_FUSION,
    SCSE_REDUCTION,
    UNET_BASE_FILTERS,
    UNET_BATCH_NORM,
    UNET_DEPTH,
)
from ptx_keras.layers import MultiScaleConv2D, SCSEBlock
from ptx_keras.layers._validation import check_bool, check_positive_int
from ptx_keras.models.common import (
    SegmentationModel,
    build_with_overrides,
    check_num_classes,
    image_input,
    image_level_head,
    segmentation_outputs,
    softmax_head,
)
from ptx_keras.models.registry import register_preset

__all__ = ["UNet", "ms_scse_unet", "unet"]


def _conv_bn_relu(x, filters, batch_norm, name):
    x = keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_uniform", name=f"{name}_conv")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def UNet(
    num_classes=NUM_CLASSES,
    input_shape=(None, None, 3),
    base_filters=UNET_BASE_FILTERS,
    depth=UNET_DEPTH,
    batch_norm=UNET_BATCH_NORM,
    multiscale=False,
    multiscale_filters=MULTISCALE_FILTERS_PER_BRANCH,
    multiscale_kernel_sizes=MULTISCALE_KERNEL_SIZES,
    scse=False,
    scse_fusion=SCSE_FUSION,
    scse_reduction=SCSE_REDUCTION,
    aux_head=False,
    name="unet",
):
    """Builds a U-Net, optionally with the multi-scale first convolution and scSE (MS_scSE_U-Net).

    With `scse=True` an `SCSEBlock` follows every conv block (encoder, bottleneck and decoder); with
    32 base filters, 4 poolings and reduction 2 that adds 439,913 parameters, exactly the difference
    between the paper's MS_scSE_U-Net and U-Net rows of Table 2.

    Args:
        num_classes: Softmax channels.
        input_shape: `(height, width, channels)`; height/width None or divisible by `2 ** depth`.
        base_filters: Filters of the first level; level i has `base_filters * 2 ** i`.
        depth: Number of poolings (the bottleneck has `base_filters * 2 ** depth` filters).
        batch_norm: BatchNormalization after every 3x3 convolution.
        multiscale: Replace the first 3x3 convolution by `MultiScaleConv2D` (paper Fig. 2).
        multiscale_filters: Filters per multi-scale branch.
        multiscale_kernel_sizes: Kernel sizes of the branches (paper: 3, 5, 7).
        scse: Add an scSE module after every conv block.
        scse_fusion: `"add"` (eq. 2) or `"max"`.
        scse_reduction: cSE reduction ratio (paper: 2).
        aux_head: Add an image-level pneumothorax probability computed from the bottleneck (global average
            pooling -> dense -> sigmoid, `ptx_keras.models.common.image_level_head`).
        name: Model name.

    Returns:
        A functional `keras.Model` mapping `(batch, height, width, channels)` images to
        `(batch, height, width, num_classes)` float32 softmax probabilities; with `aux_head`, to the dict
        `{"mask": softmax, "aux": (batch, 1) float32 probability}`.

    Raises:
        ValueError: for any invalid argument (`ModelError`, a `ValueError`, for a bad input shape).
    """
    check_num_classes(num_classes)
    check_positive_int("base_filters", base_filters)
    check_positive_int("depth", depth)
    check_bool("batch_norm", batch_norm)
    check_bool("multiscale", multiscale)
    check_bool("scse", scse)
    check_bool("aux_head", aux_head)

    def conv_block(x, filters, block_name, first_multiscale=False):
        if first_multiscale:
            x = MultiScaleConv2D(multiscale_filters, multiscale_kernel_sizes, name=f"{block_name}_multiscale")(x)
            if batch_norm:
                x = keras.layers.BatchNormalization(name=f"{block_name}_multiscale_bn")(x)
            x = keras.layers.Activation("relu", name=f"{block_name}_multiscale_relu")(x)
        else:
            x = _conv_bn_relu(x, filters, batch_norm, f"{block_name}_a")
        x = _conv_bn_relu(x, filters, batch_norm, f"{block_name}_b")
        if scse:
            x = SCSEBlock(scse_reduction, scse_fusion, name=f"{block_name}_scse")(x)
        return x

    inputs, x = image_input(input_shape, depth)
    skips = []
    for i in range(depth):
        x = conv_block(x, base_filters * 2**i, f"down_{i}", first_multiscale=multiscale and i == 0)
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(x)
    x = conv_block(x, base_filters * 2**depth, "bottleneck")
    aux = image_level_head(x) if aux_head else None
    for i in reversed(range(depth)):
        filters = base_filters * 2**i
        x = keras.layers.Conv2DTranspose(
            filters, 2, strides=2, kernel_initializer="he_uniform", name=f"up_{i}_transpose"
        )(x)
        x = keras.layers.Concatenate(name=f"up_{i}_concat")([x, skips[i]])
        x = conv_block(x, filters, f"up_{i}")
    return SegmentationModel(inputs, segmentation_outputs(softmax_head(x, num_classes), aux), name=name)


@register_preset("unet", description="U-Net: 32 base filters, 4 poolings, 2x2 transposed conv up, BN")
def unet(**overrides):
    return build_with_overrides(UNet, dict(name="unet"), overrides)


@register_preset("ms_scse_unet", description="MS_scSE_U-Net: U-Net with the multi-scale first conv and scSE")
def ms_scse_unet(**overrides):
    defaults = dict(multiscale=True, scse=True, name="ms_scse_unet")
    return build_with_overrides(UNet, defaults, overrides)
