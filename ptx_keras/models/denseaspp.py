"""DenseASPP (Yang et al., CVPR 2018) with a DenseNet-161 backbone, the paper's "DenseASPP [34]" baseline.

Configuration followed: the authors' code (DeepMotionAIResearch/DenseASPP, `cfgs/DenseASPP161.py`,
`models/DenseASPP.py`) at output stride 8:

- Backbone: DenseNet-161 (growth rate 48, 96 initial filters, blocks 6, 12, 36, 24, bottleneck width 4 x
  growth, compression 0.5): 7x7/2 conv -> BN -> ReLU -> 3x3/2 max pool; dense layer = BN -> ReLU -> 1x1 conv
  -> BN -> ReLU -> 3x3 conv (no biases); transition = BN -> ReLU -> 1x1 conv (half the channels) [-> 2x2
  average pool]. Only the first transition pools; blocks 3 and 4 are dilated by 2 and 4; a fourth
  transition (no pooling) halves the channels again (2208 -> 1104), then a final BN.
- Dense ASPP: five atrous layers with rates 3, 6, 12, 18, 24, each ReLU -> 1x1 conv (512) -> BN -> ReLU ->
  3x3 atrous conv (128) -> spatial dropout 0.1, preceded by BN except the first (whose input already is
  the final BN's output), convolutions with bias; every layer sees the backbone output concatenated with
  all previous atrous outputs.
- Head: spatial dropout 0.1 -> 1x1 conv to `num_classes` -> bilinear x8 resize to the input -> softmax.

With 3 input channels and 2 classes this has 35,365,762 trainable parameters, exactly the paper's Table 2.
Keras' `keras.applications.DenseNet*` are not used: they cannot dilate, and DenseNet-161 is missing.
"""

import keras

from ptx_keras.constants import (
    DENSEASPP_BACKBONE,
    DENSEASPP_DROPOUT_RATE,
    DENSEASPP_OUTPUT_STRIDE,
    DENSEASPP_RATES,
    NUM_CLASSES,
)
from ptx_keras.layers._validation import check_choice, check_positive_int, check_rate
from ptx_keras.models._baselines import (
    check_int_tuple,
    check_num_classes,
    conv,
    conv_bn_relu,
    dropout,
    num_pools_for,
    resized_softmax,
)
from ptx_keras.models.common import SegmentationModel, build_with_overrides, image_input
from ptx_keras.models.registry import register_preset

# (growth rate, initial filters, layers per block, ASPP bottleneck filters, ASPP growth filters): the
# authors' cfgs/DenseASPP{121,161,169,201}.py.
DENSENET_CONFIGS = {
    "densenet121": (32, 64, (6, 12, 24, 16), 128, 64),
    "densenet161": (48, 96, (6, 12, 36, 24), 512, 128),
    "densenet169": (32, 64, (6, 12, 32, 32), 336, 168),
    "densenet201": (32, 64, (6, 12, 48, 32), 480, 240),
}
BOTTLENECK_WIDTH = 4  # DenseNet's bn_size: the 1x1 conv of a dense layer has 4 x growth filters


def _bn_relu_conv(x, filters, kernel_size, name, dilation_rate=1, use_bias=False, batch_norm=True):
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return conv(x, filters, kernel_size, name, dilation_rate=dilation_rate, use_bias=use_bias)


def _dense_block(x, num_layers, growth_rate, dilation_rate, name):
    for i in range(1, num_layers + 1):
        y = _bn_relu_conv(x, BOTTLENECK_WIDTH * growth_rate, 1, f"{name}_layer{i}_1")
        y = _bn_relu_conv(y, growth_rate, 3, f"{name}_layer{i}_2", dilation_rate=dilation_rate)
        x = keras.layers.Concatenate(name=f"{name}_layer{i}_concat")([x, y])
    return x


def _transition(x, name, pool):
    x = _bn_relu_conv(x, x.shape[-1] // 2, 1, name)
    if pool:
        x = keras.layers.AveragePooling2D(2, name=f"{name}_pool")(x)
    return x


def DenseASPP(
    num_classes=NUM_CLASSES,
    input_shape=(None, None, 3),
    backbone=DENSEASPP_BACKBONE,
    growth_rate=None,
    init_filters=None,
    block_config=None,
    aspp_bottleneck_filters=None,
    aspp_growth_filters=None,
    atrous_rates=DENSEASPP_RATES,
    dropout_rate=DENSEASPP_DROPOUT_RATE,
    name="denseaspp",
):
    """Builds DenseASPP: a dilated DenseNet (output stride 8) and densely connected atrous convolutions.

    Args:
        num_classes: Output classes (>= 2).
        input_shape: `(height, width, channels)`; height and width divisible by 8, or None; any channel
            count (1 for grayscale works, the stem conv adapts).
        backbone: "densenet161" (the paper's baseline), "densenet121", "densenet169" or "densenet201"; sets
            the defaults of the next five arguments (the authors' configurations).
        growth_rate: DenseNet growth rate (161: 48). None: the backbone's.
        init_filters: Filters of the 7x7 stem conv (161: 96). None: the backbone's.
        block_config: Layers in each of the 4 dense blocks (161: 6, 12, 36, 24). None: the backbone's.
        aspp_bottleneck_filters: 1x1 conv filters inside each atrous layer (161: 512). None: the backbone's.
        aspp_growth_filters: Output filters of each atrous layer (161: 128). None: the backbone's.
        atrous_rates: Dilation rates of the atrous layers, in order (3, 6, 12, 18, 24).
        dropout_rate: Spatial dropout after each atrous layer and before the classifier (0.1).
        name: Model name.

    Returns:
        A `keras.Model` mapping `(batch, height, width, channels)` to `(batch, height, width, num_classes)`
        float32 softmax probabilities.

    Raises:
        ValueError: for an invalid `num_classes`, unknown `backbone` or an invalid width, rate or count.
        ModelError: for a malformed `input_shape` or a size not divisible by 8.
    """
    num_classes = check_num_classes(num_classes)
    check_choice("backbone", backbone, tuple(DENSENET_CONFIGS))
    defaults = DENSENET_CONFIGS[backbone]
    growth_rate = check_positive_int("growth_rate", defaults[0] if growth_rate is None else growth_rate)
    init_filters = check_positive_int("init_filters", defaults[1] if init_filters is None else init_filters)
    block_config = check_int_tuple("block_config", defaults[2] if block_config is None else block_config, length=4)
    aspp_bottleneck_filters = check_positive_int(
        "aspp_bottleneck_filters", defaults[3] if aspp_bottleneck_filters is None else aspp_bottleneck_filters
    )
    aspp_growth_filters = check_positive_int(
        "aspp_growth_filters", defaults[4] if aspp_growth_filters is None else aspp_growth_filters
    )
    atrous_rates = check_int_tuple("atrous_rates", atrous_rates)
    check_rate("dropout_rate", dropout_rate)

    # The stem (conv /2, pool /2) and the first transition (/2) give the fixed output stride 8.
    inputs, x = image_input(input_shape, num_pools=num_pools_for(DENSEASPP_OUTPUT_STRIDE, "output_stride"))
    x = conv_bn_relu(x, init_filters, 7, "stem", strides=2)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    dilations = (1, 1, 2, 4)
    for block, (num_layers, dilation) in enumerate(zip(block_config, dilations), start=1):
        x = _dense_block(x, num_layers, growth_rate, dilation, f"block{block}")
        x = _transition(x, f"transition{block}", pool=block == 1)
    x = keras.layers.BatchNormalization(name="features_bn")(x)

    for i, rate in enumerate(atrous_rates):
        prefix = f"aspp{i + 1}_rate{rate}"
        y = _bn_relu_conv(x, aspp_bottleneck_filters, 1, f"{prefix}_1", use_bias=True, batch_norm=i > 0)
        y = _bn_relu_conv(y, aspp_growth_filters, 3, f"{prefix}_2", dilation_rate=rate, use_bias=True)
        y = dropout(y, dropout_rate, f"{prefix}_dropout")
        x = keras.layers.Concatenate(name=f"{prefix}_concat")([y, x])

    x = dropout(x, dropout_rate, "classifier_dropout")
    return SegmentationModel(inputs, resized_softmax(x, num_classes, inputs), name=name)


@register_preset(
    "denseaspp", description="DenseASPP baseline: DenseNet-161, atrous rates 3-24, output stride 8 (35.4 M)"
)
def denseaspp(**overrides):
    """The paper's DenseASPP baseline; `overrides` go to `DenseASPP` (e.g. `backbone="densenet121"`)."""
    return build_with_overrides(DenseASPP, {"num_classes": NUM_CLASSES}, overrides)


__all__ = ["DenseASPP"]
