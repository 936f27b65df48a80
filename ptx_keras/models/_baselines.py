"""Building blocks shared by the comparison baselines (SegNet, DeepLab v3+, DenseASPP)."""

import math
import numbers

import keras

from ptx_keras.layers._validation import check_positive_int, check_rate
from ptx_keras.layers.baselines import ResizeLike
from ptx_keras.models.common import check_num_classes  # noqa: F401  (re-exported for the baseline builders)


def check_int_tuple(name, value, length=None):
    """Returns `value` as a tuple of positive ints (of `length` items when given), else raises `ValueError`."""
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and (length is None or len(value) == length)
    ok = ok and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok:
        what = f"{length} positive integers" if length else "a non-empty list of positive integers"
        raise ValueError(f"`{name}` must be {what}. Received: {name}={value!r}")
    return tuple(int(v) for v in value)


def num_pools_for(stride, name):
    """Returns log2(`stride`) for a power-of-two stride >= 2 (the divisor input sizes need)."""
    check_positive_int(name, stride)
    pools = int(round(math.log2(stride))) if stride >= 2 else 0
    if pools < 1 or 2**pools != stride:
        raise ValueError(f"`{name}` must be a power of two >= 2. Received: {name}={stride!r}")
    return pools


def conv(x, filters, kernel_size, name, strides=1, dilation_rate=1, use_bias=False):
    """Conv2D with 'same' padding and HeUniform initialisation (the paper's), named `{name}_conv`."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        dilation_rate=dilation_rate,
        use_bias=use_bias,
        kernel_initializer="he_uniform",
        name=f"{name}_conv",
    )(x)


def conv_bn_relu(x, filters, kernel_size, name, strides=1, dilation_rate=1, use_bias=False, activation=True):
    """`conv` -> BatchNorm -> ReLU (the ReLU optional)."""
    x = conv(x, filters, kernel_size, name, strides=strides, dilation_rate=dilation_rate, use_bias=use_bias)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    if activation:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def dropout(x, rate, name):
    """Channel-wise (spatial) dropout, as PyTorch's Dropout2d in the reference code; identity for rate 0."""
    check_rate(name, rate)
    if rate == 0:
        return x
    return keras.layers.SpatialDropout2D(rate, name=name)(x)


def resized_softmax(x, num_classes, reference):
    """1x1 conv to `num_classes` logits, bilinear resize to `reference`'s height and width, float32 softmax.

    Resizing the 2-channel logits rather than the features costs the least; the two orders are equal since
    the 1x1 conv and the bilinear resize are both linear (and resize weights sum to 1).

    Args:
        x: Feature maps `(batch, h, w, channels)`.
        num_classes: Output classes.
        reference: The model input `(batch, height, width, channels)`.

    Returns:
        `(batch, height, width, num_classes)` float32 probabilities (float32 also under mixed precision).
    """
    logits = conv(x, num_classes, 1, "logits", use_bias=True)
    logits = ResizeLike(interpolation="bilinear", name="resize_to_input")([logits, reference])
    return keras.layers.Activation("softmax", dtype="float32", name="softmax")(logits)
