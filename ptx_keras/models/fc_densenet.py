"""FC-DenseNet (Jegou et al. 2017) and the paper's MS_scSE_FC-DenseNet, with their presets.

Layout (paper Fig. 1a): [multi-scale] first conv -> (dense block -> transition down) x pools ->
bottleneck dense block -> (transition up -> concat skip -> dense block) x pools -> 1x1 conv -> softmax.
"""

import numbers

import keras

from ptx_keras.constants import (
    DROPOUT_RATE,
    FCDENSENET56_LAYERS,
    FCDENSENET67_GROWTH_RATE,
    FCDENSENET67_LAYERS,
    FCDENSENET103_LAYERS,
    FCDENSENET_NUM_POOLS,
    FIRST_CONV_FILTERS,
    GROWTH_RATE,
    MULTISCALE_FILTERS_PER_BRANCH,
    MULTISCALE_KERNEL_SIZES,
    NUM_CLASSES,
    SCSE_FUSION,
    SCSE_PLACEMENT,
    SCSE_REDUCTION,
)
from ptx_keras.layers import DenseBlock, MultiScaleConv2D, SCSEBlock, TransitionDown, TransitionUp
from ptx_keras.layers._validation import check_bool, check_choice, check_positive_int, check_rate
from ptx_keras.layers.dense_block import resolve_layer_class
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

__all__ = [
    "DEFAULT_NUM_POOLS",
    "SCSE_PLACEMENTS",
    "FCDenseNet",
    "fc_densenet56",
    "fc_densenet67",
    "fc_densenet103",
    "ms_scse_fc_densenet103",
]


SCSE_PLACEMENTS = ("per_layer", "per_block")
DEFAULT_NUM_POOLS = FCDENSENET_NUM_POOLS  # when layers_per_block is an int


def _blocks(layers_per_block, num_pools):
    """Returns the 2 * pools + 1 block sizes (down blocks, bottleneck, up blocks) and the pool count."""
    if isinstance(layers_per_block, numbers.Integral) and not isinstance(layers_per_block, bool):
        pools = DEFAULT_NUM_POOLS if num_pools is None else check_positive_int("num_pools", num_pools)
        check_positive_int("layers_per_block", layers_per_block)
        return [int(layers_per_block)] * (2 * pools + 1), pools
    if not isinstance(layers_per_block, (list, tuple)) or len(layers_per_block) < 3 or len(layers_per_block) % 2 == 0:
        raise ValueError(
            "`layers_per_block` must be an int or a list of 2 * num_pools + 1 ints (down blocks, "
            f"bottleneck, up blocks). Received: layers_per_block={layers_per_block!r}"
        )
    for n in layers_per_block:
        check_positive_int("layers_per_block", n)
    pools = (len(layers_per_block) - 1) // 2
    if num_pools is not None and num_pools != pools:
        raise ValueError(
            f"`num_pools` ({num_pools}) disagrees with `layers_per_block`, which has {len(layers_per_block)} "
            f"entries (= 2 * {pools} + 1). Received: num_pools={num_pools!r}"
        )
    return [int(n) for n in layers_per_block], pools


class _DenseBlocks:
    """Applies one dense block (the builder's class and shared arguments) and, with `scse_placement="per_block"`,
    its `SCSEBlock`."""

    def __init__(self, block_class, dense_layer, block_args, *, scse, scse_placement, scse_reduction, scse_fusion):
        self.block_class = block_class
        self.block_args = dict(
            block_args,
            scse=scse and scse_placement == "per_layer",
            scse_reduction=scse_reduction,
            scse_fusion=scse_fusion,
        )
        resolve_layer_class("dense_layer", dense_layer, None)
        if dense_layer is not None:  # passed only when set, so a `dense_block` of one's own need not take it
            self.block_args["dense_layer"] = dense_layer
        self.block_scse = (scse_reduction, scse_fusion) if scse and scse_placement == "per_block" else None

    def __call__(self, x, num_layers, name, return_new_only=False):
        x = self.block_class(num_layers, return_new_only=return_new_only, name=name, **self.block_args)(x)
        if self.block_scse is not None:
            x = SCSEBlock(*self.block_scse, name=f"{name}_scse")(x)
        return x


def FCDenseNet(
    num_classes=NUM_CLASSES,
    input_shape=(None, None, 3),
    layers_per_block=FCDENSENET103_LAYERS,
    num_pools=None,
    growth_rate=GROWTH_RATE,
    first_conv_filters=FIRST_CONV_FILTERS,
    multiscale=False,
    multiscale_filters=MULTISCALE_FILTERS_PER_BRANCH,
    multiscale_kernel_sizes=MULTISCALE_KERNEL_SIZES,
    scse=False,
    scse_placement=SCSE_PLACEMENT,
    scse_fusion=SCSE_FUSION,
    scse_reduction=SCSE_REDUCTION,
    dropout_rate=DROPOUT_RATE,
    memory_efficient=False,
    aux_head=False,
    dense_layer=None,
    dense_block=None,
    name="fc_densenet",
):
    """Builds an FC-DenseNet, optionally with the multi-scale module and scSE (MS_scSE_FC-DenseNet).

    This is the one general builder of the family (like `keras.applications`' builders): the presets
    (`fc_densenet56/67/103`, `ms_scse_fc_densenet103`) call it with their arguments, and `dense_layer` and
    `dense_block` swap the building blocks for registered Keras layer classes of one's own
    (docs/extending.md).

    The transition up of the bottleneck and of every up block but the last sees only the maps that
    block added (Jegou et al.), so the up path stays narrow. `scse_placement="per_layer"` puts an
    `SCSEBlock` on the new maps of every dense layer (the paper's reading); `"per_block"` puts one on
    the output of every dense block (the tensor passed on: full stack in the down path and the last up
    block, new maps elsewhere).

    Args:
        num_classes: Softmax channels (2: background, pneumothorax).
        input_shape: `(height, width, channels)`; height/width None or divisible by `2 ** num_pools`;
            1 (grayscale) or 3 channels, or any other count.
        layers_per_block: Layers of every block (int), or a list of `2 * num_pools + 1` counts: down
            blocks, bottleneck, up blocks (FC-DenseNet103: 4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4).
        num_pools: Poolings when `layers_per_block` is an int (default 5); derived from the list
            otherwise (and must agree if given).
        growth_rate: k, maps added per dense layer (paper: 12).
        first_conv_filters: Filters of the plain first 3x3 convolution (ignored with `multiscale`).
        multiscale: Replace the first convolution by `MultiScaleConv2D` (paper Fig. 2).
        multiscale_filters: Filters per multi-scale branch (output: `filters * len(kernel_sizes)`).
        multiscale_kernel_sizes: Kernel sizes of the multi-scale branches (paper: 3, 5, 7).
        scse: Add scSE modules (eqs. 2-4).
        scse_placement: `"per_layer"` or `"per_block"`.
        scse_fusion: `"add"` (eq. 2) or `"max"`.
        scse_reduction: cSE reduction ratio (paper: 2).
        dropout_rate: Dropout of dense layers and transitions down (paper: 0.2).
        memory_efficient: Recompute every dense layer (concatenation, BN, ELU, convolution, dropout,
            scSE) and every transition down in the backward pass (`keras.remat`) instead of storing
            their intermediate tensors: a lower peak of live tensors for a longer step (measured in
            docs/benchmarks.md, "Memory-efficient option"); same outputs and gradients (dropout masks are
            drawn once and reused).
        aux_head: Add an image-level pneumothorax probability computed from the bottleneck (global average
            pooling -> dense -> sigmoid, `ptx_keras.models.common.image_level_head`).
        dense_layer: The layer class of every dense layer: None for `DenseLayer`, or a registered
            `keras.layers.Layer` subclass (or its registered name) that takes `DenseLayer`'s constructor
            arguments, is called on the list of all earlier feature maps and returns `growth_rate` new maps
            (see `DenseBlock`).
        dense_block: The layer class of every dense block: None for `DenseBlock`, or a registered
            `keras.layers.Layer` subclass (or its registered name) that takes `DenseBlock`'s constructor
            arguments and computes the same output shape (`num_layers * growth_rate` maps with
            `return_new_only`, else the input's channels plus those).
        name: Model name.

    Returns:
        A `SegmentationModel` (a functional `keras.Model`) mapping `(batch, height, width, channels)` float32 images in [0, 1]
        to `(batch, height, width, num_classes)` float32 softmax probabilities; with `aux_head`, to the dict
        `{"mask": softmax, "aux": (batch, 1) float32 probability}`.

    Raises:
        ValueError: for any invalid argument (`ModelError`, a `ValueError`, for a bad input shape), and for a
            `dense_layer` or `dense_block` that is not a registered Keras layer class.
    """
    check_num_classes(num_classes)
    blocks, pools = _blocks(layers_per_block, num_pools)
    for key, value in (("growth_rate", growth_rate), ("first_conv_filters", first_conv_filters)):
        check_positive_int(key, value)
    for key, value in (("multiscale", multiscale), ("scse", scse), ("memory_efficient", memory_efficient)):
        check_bool(key, value)
    check_bool("aux_head", aux_head)
    check_choice("scse_placement", scse_placement, SCSE_PLACEMENTS)
    check_rate("dropout_rate", dropout_rate)
    dense = _DenseBlocks(
        resolve_layer_class("dense_block", dense_block, DenseBlock),
        dense_layer,
        dict(growth_rate=growth_rate, dropout_rate=dropout_rate, memory_efficient=memory_efficient),
        scse=scse,
        scse_placement=scse_placement,
        scse_reduction=scse_reduction,
        scse_fusion=scse_fusion,
    )

    inputs, x = image_input(input_shape, pools)
    if multiscale:
        x = MultiScaleConv2D(multiscale_filters, multiscale_kernel_sizes, name="multiscale_conv")(x)
    else:
        x = keras.layers.Conv2D(
            first_conv_filters, 3, padding="same", kernel_initializer="he_uniform", name="first_conv"
        )(x)
    skips = []
    for i in range(pools):
        x = dense(x, blocks[i], f"down_block_{i}")
        skips.append(x)
        x = TransitionDown(dropout_rate, memory_efficient=memory_efficient, name=f"transition_down_{i}")(x)
    x = dense(x, blocks[pools], "bottleneck", return_new_only=True)
    aux = image_level_head(x) if aux_head else None
    for i in range(pools):
        x = TransitionUp(name=f"transition_up_{i}")(x)
        x = keras.layers.Concatenate(name=f"skip_concat_{i}")([x, skips[-(i + 1)]])
        x = dense(x, blocks[pools + 1 + i], f"up_block_{i}", return_new_only=i < pools - 1)
    return SegmentationModel(inputs, segmentation_outputs(softmax_head(x, num_classes), aux), name=name)


@register_preset("fc_densenet56", description="FC-DenseNet56: 4 layers per block, k=12 (Jegou et al.)")
def fc_densenet56(**overrides):
    defaults = dict(layers_per_block=FCDENSENET56_LAYERS, growth_rate=GROWTH_RATE, name="fc_densenet56")
    return build_with_overrides(FCDenseNet, defaults, overrides)


@register_preset("fc_densenet67", description="FC-DenseNet67: 5 layers per block, k=16 (Jegou et al.)")
def fc_densenet67(**overrides):
    defaults = dict(layers_per_block=FCDENSENET67_LAYERS, growth_rate=FCDENSENET67_GROWTH_RATE, name="fc_densenet67")
    return build_with_overrides(FCDenseNet, defaults, overrides)


@register_preset("fc_densenet103", description="FC-DenseNet103 with k=12: the paper's FC-DenseNet baseline")
def fc_densenet103(**overrides):
    defaults = dict(layers_per_block=FCDENSENET103_LAYERS, growth_rate=GROWTH_RATE, name="fc_densenet103")
    return build_with_overrides(FCDenseNet, defaults, overrides)


@register_preset(
    "ms_scse_fc_densenet103",
    description="MS_scSE_FC-DenseNet (the paper's model): FC-DenseNet103, k=12, multi-scale, scSE per layer",
)
def ms_scse_fc_densenet103(**overrides):
    defaults = dict(
        layers_per_block=FCDENSENET103_LAYERS,
        growth_rate=GROWTH_RATE,
        multiscale=True,
        multiscale_filters=MULTISCALE_FILTERS_PER_BRANCH,
        scse=True,
        scse_placement="per_layer",
        scse_fusion=SCSE_FUSION,
        name="ms_scse_fc_densenet103",
    )
    return build_with_overrides(FCDenseNet, defaults, overrides)
