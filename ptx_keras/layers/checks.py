"""Input-size checks for networks that pool `num_pools` times."""

import keras

from ptx_keras.errors import ModelError
from ptx_keras.layers._validation import check_non_negative_int

__all__ = ["InputSizeCheck", "check_spatial_size"]


def check_spatial_size(height, width, num_pools):
    """Refuses a height or width that is not divisible by `2 ** num_pools`.

    Args:
        height: Image height in pixels, or None (unknown: not checked).
        width: Image width in pixels, or None.
        num_pools: Number of 2x2 poolings of the network.

    Raises:
        ModelError: naming the bad dimension and the nearest sizes that work, e.g. "height 100 is not
            divisible by 32 (5 poolings); use e.g. 96 or 128".
    """
    divisor = 2**num_pools
    for label, size in (("height", height), ("width", width)):
        if size is None:
            continue
        if size < divisor or size % divisor:
            lower = (size // divisor) * divisor
            upper = lower + divisor
            options = f"{lower} or {upper}" if lower > 0 else f"{upper}"
            raise ModelError(
                f"Input {label} {size} is not divisible by {divisor} ({num_pools} poolings); use e.g. {options}."
            )


@keras.saving.register_keras_serializable(package="ptx_keras")
class InputSizeCheck(keras.layers.Layer):
    """Identity layer that refuses spatial sizes a network with `num_pools` poolings cannot handle.

    Static sizes are checked when the layer is built (model construction) and again whenever it is
    called on a tensor whose height/width are known: eagerly, and in `tf.function` traces with static
    shapes (the first trace of `predict`/`fit`). A trace with fully dynamic (None) spatial dimensions
    cannot be checked without backend-specific assertions; such an input fails later, at the first
    skip-connection concatenation, with a shape-mismatch error.

    Args:
        num_pools: Number of 2x2 poolings; sizes must be divisible by `2 ** num_pools`.
        **kwargs: Base `keras.layers.Layer` arguments.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        Same as the input.

    Raises:
        ValueError: for a negative `num_pools`.
        ModelError: (at build or call time) for a height or width not divisible by `2 ** num_pools`.
    """

    def __init__(self, num_pools, **kwargs):
        super().__init__(**kwargs)
        self.num_pools = check_non_negative_int("num_pools", num_pools)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ModelError(
                f"Expected images of shape (batch, height, width, channels). Received: input_shape={input_shape}"
            )
        check_spatial_size(input_shape[1], input_shape[2], self.num_pools)

    def call(self, inputs):
        shape = inputs.shape
        check_spatial_size(shape[1], shape[2], self.num_pools)
        return inputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["num_pools"] = self.num_pools
        return config
