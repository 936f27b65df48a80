"""SegNet (Badrinarayanan, Kendall and Cipolla, TPAMI 2017), the paper's "SegNet [32]" baseline.

Encoder: the 13 convolutions of VGG16, each 3x3 conv (with bias) -> BatchNorm -> ReLU, in 5 stages of
2, 2, 3, 3, 3 convolutions and 64, 128, 256, 512, 512 filters, each stage ending in a 2x2 max pooling that
remembers where its maxima were. Decoder: the mirror image; each stage starts with max-unpooling through
those pooling indices, then 3x3 conv -> BN -> ReLU layers whose last one narrows to the next stage's width;
the very last convolution is a 3x3 conv to `num_classes` (no BN) followed by the softmax (the authors'
Caffe `segnet_train.prototxt`). With 3 input channels and 2 classes this has 29,444,162 trainable
parameters, exactly the paper's Table 2.
"""

import keras

from ptx_keras.constants import NUM_CLASSES, SEGNET_BASE_FILTERS
from ptx_keras.layers._validation import check_positive_int
from ptx_keras.layers.baselines import MaxPoolingWithIndices2D, MaxUnpooling2D
from ptx_keras.models._baselines import check_int_tuple, check_num_classes, conv, conv_bn_relu
from ptx_keras.models.common import SegmentationModel, build_with_overrides, image_input
from ptx_keras.models.registry import register_preset

VGG16_CONVS_PER_STAGE = (2, 2, 3, 3, 3)
VGG16_WIDTH_FACTORS = (1, 2, 4, 8, 8)  # stage widths in units of base_filters


def SegNet(
    num_classes=NUM_CLASSES,
    input_shape=(None, None, 3),
    base_filters=SEGNET_BASE_FILTERS,
    convs_per_stage=VGG16_CONVS_PER_STAGE,
    name="segnet",
):
    """Builds SegNet with a VGG16-BN encoder and a mirrored decoder using max-unpooling indices.

    Args:
        num_classes: Output classes (>= 2).
        input_shape: `(height, width, channels)`; height and width divisible by `2 ** len(convs_per_stage)`
            (32 for VGG16) or None; any channel count (1 for grayscale works, the first conv adapts).
        base_filters: Filters of the first stage; the stages use `base_filters * (1, 2, 4, 8, 8)` (VGG16: 64).
        convs_per_stage: Convolutions per encoder stage (VGG16: 2, 2, 3, 3, 3); at most 5 stages.
        name: Model name.

    Returns:
        A `keras.Model` mapping `(batch, height, width, channels)` images to `(batch, height, width,
        num_classes)` float32 softmax probabilities.

    Raises:
        ValueError: for an invalid `num_classes`, `base_filters` or `convs_per_stage`.
        ModelError: for a malformed `input_shape` or a size not divisible by `2 ** len(convs_per_stage)`.
    """
    num_classes = check_num_classes(num_classes)
    base_filters = check_positive_int("base_filters", base_filters)
    convs_per_stage = check_int_tuple("convs_per_stage", convs_per_stage)
    if len(convs_per_stage) > len(VGG16_WIDTH_FACTORS):
        raise ValueError(
            f"`convs_per_stage` may have at most {len(VGG16_WIDTH_FACTORS)} stages. "
            f"Received: convs_per_stage={convs_per_stage!r}"
        )
    widths = [base_filters * f for f in VGG16_WIDTH_FACTORS[: len(convs_per_stage)]]

    inputs, x = image_input(input_shape, num_pools=len(convs_per_stage))
    indices = []
    for stage, (n, width) in enumerate(zip(convs_per_stage, widths), start=1):
        for i in range(1, n + 1):
            x = conv_bn_relu(x, width, 3, name=f"encoder{stage}_{i}", use_bias=True)
        x, idx = MaxPoolingWithIndices2D(2, name=f"encoder{stage}_pool")(x)
        indices.append(idx)

    for stage in range(len(convs_per_stage), 0, -1):
        n, width = convs_per_stage[stage - 1], widths[stage - 1]
        x = MaxUnpooling2D(2, name=f"decoder{stage}_unpool")([x, indices[stage - 1]])
        for i in range(n, 0, -1):
            if i > 1:
                x = conv_bn_relu(x, width, 3, name=f"decoder{stage}_{i}", use_bias=True)
            elif stage > 1:
                x = conv_bn_relu(x, widths[stage - 2], 3, name=f"decoder{stage}_{i}", use_bias=True)
            else:
                x = conv(x, num_classes, 3, "logits", use_bias=True)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="softmax")(x)
    return SegmentationModel(inputs, outputs, name=name)


@register_preset("segnet", description="SegNet baseline: VGG16-BN encoder, max-unpooling decoder (29.4 M params)")
def segnet(**overrides):
    """The paper's SegNet baseline; `overrides` go to `SegNet` (e.g. `base_filters=8`)."""
    return build_with_overrides(SegNet, {"num_classes": NUM_CLASSES}, overrides)


__all__ = ["SegNet"]
