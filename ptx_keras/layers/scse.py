"""Concurrent spatial and channel squeeze & excitation (scSE), paper eqs. 2-4 (Roy et al. 2018)."""

import keras
from keras import ops

from ptx_keras.constants import SCSE_FUSION, SCSE_REDUCTION
from ptx_keras.layers._validation import check_bool, check_choice, check_positive_int

__all__ = ["SCSE_FUSIONS", "SCSEBlock"]


SCSE_FUSIONS = ("add", "max")


@keras.saving.register_keras_serializable(package="ptx_keras")
class SCSEBlock(keras.layers.Layer):
    """Recalibrates feature maps along space and channels (paper Fig. 3).

    `U_sSE = sigmoid(W_s * U) * U` (eq. 3): a 1x1 convolution to one channel, a sigmoid, times U.
    `U_cSE = sigmoid(W_1 relu(W_2 g(U))) * U` (eq. 4): global average pooling g, Dense(C / reduction,
    ReLU), Dense(C, sigmoid), times U. `U_scSE = U_sSE + U_cSE` (eq. 2, `fusion="add"`) or their
    elementwise maximum (`fusion="max"`, as in Roy et al.'s later code).

    Args:
        reduction: Channel reduction ratio r of the cSE bottleneck (paper: 2). The hidden width is
            `max(1, channels // reduction)`.
        fusion: `"add"` (eq. 2) or `"max"`.
        use_bias: Whether the 1x1 convolution and both Dense layers have biases.
        kernel_initializer: Initializer of the 1x1 convolution's and both Dense layers' kernels (paper:
            HeUniform for every kernel of the network). Models saved before this argument existed load with
            the default.
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        Same as the input.

    Raises:
        ValueError: for a non-positive `reduction`, an unknown `fusion`, a non-bool `use_bias` or an unknown
            `kernel_initializer`.
    """

    def __init__(
        self, reduction=SCSE_REDUCTION, fusion=SCSE_FUSION, use_bias=True, kernel_initializer="he_uniform", **kwargs
    ):
        super().__init__(**kwargs)
        self.reduction = check_positive_int("reduction", reduction)
        self.fusion = check_choice("fusion", fusion, SCSE_FUSIONS)
        self.use_bias = check_bool("use_bias", use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.spatial_conv = keras.layers.Conv2D(
            1,
            1,
            activation="sigmoid",
            use_bias=use_bias,
            kernel_initializer=self._new_initializer(),
            dtype=self.dtype_policy,
            name="sse_conv",
        )
        # The Dense widths depend on the channel count, known only in build().
        self.squeeze = None
        self.excite = None

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "SCSEBlock expects inputs of shape (batch, height, width, channels) with a known "
                f"channel count. Received: input_shape={input_shape}"
            )
        channels = input_shape[-1]
        hidden = max(1, channels // self.reduction)
        self.squeeze = keras.layers.Dense(
            hidden,
            activation="relu",
            use_bias=self.use_bias,
            kernel_initializer=self._new_initializer(),
            dtype=self.dtype_policy,
            name="cse_squeeze",
        )
        self.excite = keras.layers.Dense(
            channels,
            activation="sigmoid",
            use_bias=self.use_bias,
            kernel_initializer=self._new_initializer(),
            dtype=self.dtype_policy,
            name="cse_excite",
        )
        self.spatial_conv.build(input_shape)
        self.squeeze.build((input_shape[0], 1, 1, channels))
        self.excite.build((input_shape[0], 1, 1, hidden))

    def _new_initializer(self):
        # One instance per sublayer: a seeded initializer object shared by several kernels would give them
        # all the same values.
        return keras.initializers.get(keras.initializers.serialize(self.kernel_initializer))

    def call(self, inputs):
        spatial = self.spatial_conv(inputs)  # sigmoid(W_s * U), (batch, height, width, 1)
        channel = self.excite(self.squeeze(ops.mean(inputs, axis=(1, 2), keepdims=True)))  # (batch, 1, 1, C)
        if self.fusion == "add":
            # U * s + U * c as U * (s + c): one full-size product fewer forward and backward (equal to float
            # rounding; the block's training cost -16 % at 256 x 256, docs/benchmarks.md).
            return inputs * (spatial + channel)
        return ops.maximum(inputs * spatial, inputs * channel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "reduction": self.reduction,
                "fusion": self.fusion,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
