"""DeepLab v3+ (Chen et al., ECCV 2018) with a ResNet-101 backbone, the paper's "DeepLab v3+ [33]" baseline.

Configuration followed: the widely used PyTorch reference implementation (jfzhang95/pytorch-deeplab-xception,
`backbone="resnet"`), which reproduces the paper's Table 2 count within 0.02 %:

- Backbone: ResNet-101 (bottleneck blocks 3, 4, 23, 3; stride in the 3x3 conv; convolutions without bias,
  each followed by BatchNorm), no classifier. At output stride 16 the last stage keeps stride 1 and uses
  dilation 2 with multi-grid (1, 2, 4), i.e. rates 2, 4, 8; at output stride 8 the third stage is dilated
  by 2 as well and the last by 4 (rates 4, 8, 16).
- ASPP on the last stage (2048 channels): a 1x1 conv, three 3x3 atrous convs (rates 6, 12, 18 at output
  stride 16, doubled at 8) and image pooling (global average -> 1x1 conv -> resized back), each 256
  filters + BN + ReLU; concatenated and projected by a 1x1 conv to 256 (+ BN, ReLU, dropout 0.5).
- Decoder: the ASPP output resized (bilinear) to the stride-4 low-level features (first stage's output,
  256 channels) reduced by a 1x1 conv to 48; concatenated; two 3x3 convs of 256 (+ BN, ReLU, dropout 0.5
  then 0.1); a 1x1 conv to `num_classes`; bilinear resize to the input size; softmax.

Keras' `keras.applications.ResNet101` is not used: its convolutions carry biases and it cannot dilate, so
the backbone is written here (initialised with HeUniform, no pretrained weights).
"""

import keras

from ptx_keras.constants import (
    DEEPLAB_ASPP_FILTERS,
    DEEPLAB_ASPP_RATES,
    DEEPLAB_BACKBONE,
    DEEPLAB_DROPOUT_RATES,
    DEEPLAB_LOW_LEVEL_FILTERS,
    DEEPLAB_OUTPUT_STRIDE,
    NUM_CLASSES,
)
from ptx_keras.layers._validation import check_choice, check_positive_int, check_rate
from ptx_keras.layers.baselines import ResizeLike
from ptx_keras.models._baselines import (
    check_int_tuple,
    check_num_classes,
    conv_bn_relu,
    dropout,
    num_pools_for,
    resized_softmax,
)
from ptx_keras.models.common import SegmentationModel, build_with_overrides, image_input
from ptx_keras.models.registry import register_preset

RESNET_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3)}
RESNET_EXPANSION = 4
MULTI_GRID = (1, 2, 4)
OUTPUT_STRIDES = (8, 16)


def _bottleneck(x, planes, strides, dilation, name, project):
    """ResNet v1.5 bottleneck: 1x1 -> 3x3 (stride, dilation) -> 1x1 (x4), projected shortcut when needed."""
    shortcut = x
    if project:
        shortcut = conv_bn_relu(x, planes * RESNET_EXPANSION, 1, f"{name}_shortcut", strides=strides, activation=False)
    x = conv_bn_relu(x, planes, 1, f"{name}_1")
    x = conv_bn_relu(x, planes, 3, f"{name}_2", strides=strides, dilation_rate=dilation)
    x = conv_bn_relu(x, planes * RESNET_EXPANSION, 1, f"{name}_3", activation=False)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def _resnet(x, blocks, base_filters, output_stride):
    """Returns `(low_level, features)`: the stride-4 first-stage output and the last stage's output."""
    if output_stride == 16:
        strides, dilations = (1, 2, 2, 1), (1, 1, 1, 2)
    else:
        strides, dilations = (1, 2, 1, 1), (1, 1, 2, 4)
    x = conv_bn_relu(x, base_filters, 7, "stem", strides=2)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    low_level = None
    in_channels = base_filters
    for stage, (n, stride, dilation) in enumerate(zip(blocks, strides, dilations), start=1):
        planes = base_filters * 2 ** (stage - 1)
        last = stage == len(blocks)
        for i in range(n):
            # The last stage uses multi-grid rates (Chen et al. 2017), repeated if it has more than 3 blocks.
            rate = dilation * MULTI_GRID[i % len(MULTI_GRID)] if last else dilation
            project = i == 0 and (stride != 1 or in_channels != planes * RESNET_EXPANSION)
            x = _bottleneck(x, planes, stride if i == 0 else 1, rate, f"stage{stage}_block{i + 1}", project)
            in_channels = planes * RESNET_EXPANSION
        if stage == 1:
            low_level = x
    return low_level, x


def _aspp(x, filters, rates, dropout_rate):
    """Atrous spatial pyramid pooling: 1x1, atrous 3x3 at `rates`, image pooling; concatenated and projected."""
    branches = [conv_bn_relu(x, filters, 1, "aspp_1x1")]
    for rate in rates:
        branches.append(conv_bn_relu(x, filters, 3, f"aspp_rate{rate}", dilation_rate=rate))
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name="aspp_image_pool")(x)
    pooled = conv_bn_relu(pooled, filters, 1, "aspp_image")
    branches.append(ResizeLike(interpolation="bilinear", name="aspp_image_resize")([pooled, x]))
    x = keras.layers.Concatenate(name="aspp_concat")(branches)
    x = conv_bn_relu(x, filters, 1, "aspp_project")
    return dropout(x, dropout_rate, "aspp_dropout")


def DeepLabV3Plus(
    num_classes=NUM_CLASSES,
    input_shape=(None, None, 3),
    backbone=DEEPLAB_BACKBONE,
    blocks=None,
    output_stride=DEEPLAB_OUTPUT_STRIDE,
    atrous_rates=None,
    base_filters=64,
    aspp_filters=DEEPLAB_ASPP_FILTERS,
    low_level_filters=DEEPLAB_LOW_LEVEL_FILTERS,
    decoder_filters=DEEPLAB_ASPP_FILTERS,
    dropout_rates=DEEPLAB_DROPOUT_RATES,
    name="deeplabv3plus",
):
    """Builds DeepLab v3+ with a dilated ResNet backbone, ASPP and the stride-4 decoder.

    Args:
        num_classes: Output classes (>= 2).
        input_shape: `(height, width, channels)`; height and width divisible by `output_stride`, or None;
            any channel count (1 for grayscale works, the stem conv adapts).
        backbone: "resnet101" (the paper's baseline), "resnet50" or "resnet152".
        blocks: Bottleneck blocks in each of the 4 ResNet stages; None: the backbone's (101: 3, 4, 23, 3).
        output_stride: 16 (default) or 8: input size / size of the ASPP feature maps.
        atrous_rates: The three ASPP rates; None means (6, 12, 18) at output stride 16 and (12, 24, 36) at 8.
        base_filters: Width of the ResNet stem; stage `s` uses `base_filters * 2**(s-1)` bottleneck planes
            (x4 outputs). 64 in ResNet; smaller values shrink the model.
        aspp_filters: Filters of each ASPP branch and of the projection (256).
        low_level_filters: Filters of the 1x1 conv on the low-level features (48).
        decoder_filters: Filters of the two 3x3 decoder convs (256).
        dropout_rates: Spatial dropout after the ASPP projection and after the two decoder convs:
            `(rate_aspp_and_first_decoder_conv, rate_second_decoder_conv)` = (0.5, 0.1).
        name: Model name.

    Returns:
        A `keras.Model` mapping `(batch, height, width, channels)` to `(batch, height, width, num_classes)`
        float32 softmax probabilities.

    Raises:
        ValueError: for an invalid `num_classes`, unknown `backbone`, unsupported `output_stride`, or a
            non-positive filter count or rate.
        ModelError: for a malformed `input_shape` or a size not divisible by `output_stride`.
    """
    num_classes = check_num_classes(num_classes)
    check_choice("backbone", backbone, tuple(RESNET_BLOCKS))
    blocks = check_int_tuple("blocks", RESNET_BLOCKS[backbone] if blocks is None else blocks, length=4)
    check_choice("output_stride", output_stride, OUTPUT_STRIDES)
    if atrous_rates is None:
        atrous_rates = tuple(r * 16 // output_stride for r in DEEPLAB_ASPP_RATES)
    atrous_rates = check_int_tuple("atrous_rates", atrous_rates)
    check_positive_int("base_filters", base_filters)
    check_positive_int("aspp_filters", aspp_filters)
    check_positive_int("low_level_filters", low_level_filters)
    check_positive_int("decoder_filters", decoder_filters)
    if not isinstance(dropout_rates, (list, tuple)) or len(dropout_rates) != 2:
        raise ValueError(f"`dropout_rates` must be two rates in [0, 1). Received: dropout_rates={dropout_rates!r}")
    for rate in dropout_rates:
        check_rate("dropout_rates", rate)

    inputs, x = image_input(input_shape, num_pools=num_pools_for(output_stride, "output_stride"))
    low_level, x = _resnet(x, blocks, base_filters, output_stride)
    x = _aspp(x, aspp_filters, atrous_rates, dropout_rates[0])

    low_level = conv_bn_relu(low_level, low_level_filters, 1, "decoder_low_level")
    x = ResizeLike(interpolation="bilinear", name="decoder_upsample")([x, low_level])
    x = keras.layers.Concatenate(name="decoder_concat")([x, low_level])
    x = conv_bn_relu(x, decoder_filters, 3, "decoder_1")
    x = dropout(x, dropout_rates[0], "decoder_1_dropout")
    x = conv_bn_relu(x, decoder_filters, 3, "decoder_2")
    x = dropout(x, dropout_rates[1], "decoder_2_dropout")
    return SegmentationModel(inputs, resized_softmax(x, num_classes, inputs), name=name)


@register_preset(
    "deeplabv3plus", description="DeepLab v3+ baseline: ResNet-101, ASPP (6, 12, 18) at output stride 16 (59.3 M)"
)
def deeplabv3plus(**overrides):
    """The paper's DeepLab v3+ baseline; `overrides` go to `DeepLabV3Plus` (e.g. `backbone="resnet50"`)."""
    return build_with_overrides(DeepLabV3Plus, {"num_classes": NUM_CLASSES}, overrides)


__all__ = ["DeepLabV3Plus"]
