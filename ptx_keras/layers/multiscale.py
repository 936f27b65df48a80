"""The multi-scale convolution module (paper Fig. 2)."""

import keras
from keras import ops

from ptx_keras.constants import MULTISCALE_KERNEL_SIZES
from ptx_keras.layers._validation import check_bool, check_positive_int

__all__ = ["MultiScaleConv2D"]


@keras.saving.register_keras_serializable(package="ptx_keras")
class MultiScaleConv2D(keras.layers.Layer):
    """Parallel convolutions with different kernel sizes, concatenated along channels (paper Fig. 2).

    An inception module without the 1x1 convolution and the max-pooling branch, with a 7x7 branch
    added; it replaces the first convolution of FC-DenseNet (and of MS_scSE_U-Net).

    Args:
        filters: Filters of EACH branch; the output has `filters * len(kernel_sizes)` channels.
        kernel_sizes: Odd square kernel sizes, one branch each (paper: 3, 5, 7). Padding is "same",
            so every branch keeps the spatial size.
        use_bias: Whether the convolutions have biases.
        kernel_initializer: Initializer of the kernels (paper: HeUniform).
        **kwargs: Base `keras.layers.Layer` arguments.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, height, width, filters * len(kernel_sizes))`.

    Raises:
        ValueError: for a non-positive `filters`, an empty `kernel_sizes`, or a kernel size that is not
            a positive odd integer.
    """

    def __init__(
        self,
        filters,
        kernel_sizes=MULTISCALE_KERNEL_SIZES,
        use_bias=True,
        kernel_initializer="he_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        if isinstance(kernel_sizes, (str, bytes)) or not hasattr(kernel_sizes, "__len__") or not kernel_sizes:
            raise ValueError(
                f"`kernel_sizes` must be a non-empty sequence of odd integers. Received: kernel_sizes={kernel_sizes!r}"
            )
        for size in kernel_sizes:
            check_positive_int("kernel_sizes", size)
            if size % 2 == 0:
                # An even kernel with "same" padding shifts the branch by half a pixel against the others.
                raise ValueError(f"Every kernel size must be odd. Received: kernel_sizes={kernel_sizes!r}")
        self.kernel_sizes = tuple(int(s) for s in kernel_sizes)
        self.use_bias = check_bool("use_bias", use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.branches = [
            keras.layers.Conv2D(
                self.filters,
                size,
                padding="same",
                use_bias=use_bias,
                kernel_initializer=keras.initializers.get(kernel_initializer),
                dtype=self.dtype_policy,
                name=f"conv{size}x{size}",
            )
            for size in self.kernel_sizes
        ]

    def build(self, input_shape):
        for branch in self.branches:
            branch.build(input_shape)

    def call(self, inputs):
        return ops.concatenate([branch(inputs) for branch in self.branches], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters * len(self.kernel_sizes),)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_sizes": list(self.kernel_sizes),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
