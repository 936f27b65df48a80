"""Pieces every segmentation model builder shares: input validation, the softmax head, the optional image-level
(aux) head, the output structure, preset overrides.

Output structure (the one definition training, inference, serving and export read): a model without an aux head
returns the softmax tensor `(batch, H, W, num_classes)`, as it always has; a model built with `aux_head=True`
returns a dict `{MASK_OUTPUT: softmax, AUX_OUTPUT: (batch, 1) image-level pneumothorax probability}`.
`split_outputs` reads either.
"""

import inspect
import numbers

import keras

from ptx_keras.constants import AUX_OUTPUT, MASK_OUTPUT
from ptx_keras.errors import ModelError
from ptx_keras.layers import InputSizeCheck, check_spatial_size
from ptx_keras.layers._validation import check_positive_int

__all__ = [
    "AUX_OUTPUT",
    "MASK_OUTPUT",
    "build_with_overrides",
    "check_num_classes",
    "has_aux_output",
    "image_input",
    "image_level_head",
    "segmentation_outputs",
    "softmax_head",
    "split_outputs",
]


def image_input(input_shape, num_pools, name="image"):
    """Creates the model input and the size check for a network with `num_pools` poolings.

    Args:
        input_shape: `(height, width, channels)`; height/width may be None (checked at call time).
        num_pools: Number of 2x2 poolings (sizes must be divisible by `2 ** num_pools`).
        name: Name of the `keras.Input`.

    Returns:
        `(inputs, checked)`: the `keras.Input` and the output of an `InputSizeCheck` on it.

    Raises:
        ModelError: for a malformed `input_shape` or a static size not divisible by `2 ** num_pools`.
    """
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 3:
        raise ModelError(f"`input_shape` must be (height, width, channels). Received: input_shape={input_shape!r}")
    height, width, channels = input_shape
    for label, value in (("height", height), ("width", width), ("channels", channels)):
        ok = value is None and label != "channels"
        ok = ok or (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1)
        if not ok:
            raise ModelError(
                f"`input_shape` {label} must be a positive integer{' or None' if label != 'channels' else ''}. "
                f"Received: input_shape={tuple(input_shape)!r}"
            )
    check_spatial_size(height, width, num_pools)
    inputs = keras.Input(shape=tuple(input_shape), name=name)
    return inputs, InputSizeCheck(num_pools, name="input_size_check")(inputs)


def check_num_classes(num_classes):
    """Returns `num_classes` if it is an integer >= 2 (a softmax needs two classes), else raises `ValueError`."""
    check_positive_int("num_classes", num_classes)
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be at least 2 for a softmax. Received: num_classes={num_classes}")
    return int(num_classes)


def softmax_head(x, num_classes):
    """1x1 convolution to `num_classes` and a softmax kept in float32 under mixed precision.

    Args:
        x: Feature maps `(batch, height, width, channels)`.
        num_classes: Number of output classes (>= 2 for a softmax).

    Returns:
        Probabilities `(batch, height, width, num_classes)`, float32.

    Raises:
        ValueError: if `num_classes` is not an integer >= 2.
    """
    check_num_classes(num_classes)
    x = keras.layers.Conv2D(num_classes, 1, kernel_initializer="he_uniform", name="logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="softmax")(x)


def image_level_head(features, name=AUX_OUTPUT):
    """The image-level pneumothorax probability from bottleneck features (smp's `aux_params` head).

    Global average pooling -> Dense(1) -> sigmoid, the sigmoid kept in float32 under mixed precision.

    Args:
        features: Bottleneck feature maps `(batch, height, width, channels)`.
        name: Name of the output layer (the key of the model's output dict).

    Returns:
        float32 tensor `(batch, 1)` in (0, 1).
    """
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(features)
    x = keras.layers.Dense(1, name=f"{name}_logit")(x)
    return keras.layers.Activation("sigmoid", dtype="float32", name=name)(x)


def segmentation_outputs(mask, aux=None):
    """The model's outputs: the softmax alone, or `{MASK_OUTPUT: softmax, AUX_OUTPUT: aux}` with an aux head."""
    return mask if aux is None else {MASK_OUTPUT: mask, AUX_OUTPUT: aux}


def has_aux_output(model):
    """Whether a Keras model has the image-level (aux) output."""
    return isinstance(model.output, dict) and AUX_OUTPUT in model.output


def split_outputs(outputs):
    """`(softmax, aux)` from a model's outputs: a tensor (aux None) or the dict of a model with an aux head.

    Raises:
        ValueError: for a dict without `MASK_OUTPUT`.
    """
    if isinstance(outputs, dict):
        if MASK_OUTPUT not in outputs:
            raise ValueError(f"model outputs must hold {MASK_OUTPUT!r}. Received keys: {sorted(outputs)}")
        return outputs[MASK_OUTPUT], outputs.get(AUX_OUTPUT)
    return outputs, None


def build_with_overrides(builder, defaults, overrides):
    """Calls `builder(**defaults, **overrides)`, refusing override names the builder does not take.

    Args:
        builder: A model function such as `FCDenseNet`.
        defaults: The preset's arguments.
        overrides: The user's arguments; they win over `defaults`.

    Returns:
        The `keras.Model` the builder returns.

    Raises:
        ModelError: for an override the builder does not accept (the message lists the accepted ones).
    """
    accepted = set(inspect.signature(builder).parameters)
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ModelError(
            f"Unknown argument(s) for {builder.__name__}: {', '.join(unknown)}. Accepted: {', '.join(sorted(accepted))}"
        )
    return builder(**{**defaults, **overrides})
