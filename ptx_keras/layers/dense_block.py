"""FC-DenseNet building blocks (Jegou et al. 2017; paper eq. 1 and Fig. 1b-e).

`DenseLayer` is one composite function H_l, `DenseBlock` chains them with concatenation,
`TransitionDown` and `TransitionUp` change the resolution. Each `DenseLayer` is a single Keras layer so
that it can be rematerialised as a unit (`memory_efficient=True`).
"""

import keras
from keras import ops

from ptx_keras.constants import DROPOUT_RATE, SCSE_FUSION, SCSE_REDUCTION
from ptx_keras.layers._validation import check_bool, check_choice, check_positive_int, check_rate
from ptx_keras.layers.scse import SCSE_FUSIONS, SCSEBlock


def _channels(input_shape):
    """Channel count of one shape or the summed channels of a list of shapes (concatenated inputs)."""
    if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
        if any(shape[-1] is None for shape in input_shape):
            raise ValueError(f"The channel dimension must be known. Received: input_shape={input_shape}")
        return sum(shape[-1] for shape in input_shape)
    if input_shape[-1] is None:
        raise ValueError(f"The channel dimension must be known. Received: input_shape={input_shape}")
    return input_shape[-1]


def _first_shape(input_shape):
    if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
        return tuple(input_shape[0])
    return tuple(input_shape)


@keras.saving.register_keras_serializable(package="ptx_keras")
class DenseLayer(keras.layers.Layer):
    """One dense-block layer H_l (paper Fig. 1c): BN -> ELU -> 3x3 conv (k filters) -> dropout [-> scSE].

    It returns only its k NEW feature maps; `DenseBlock` concatenates them onto its input
    (`x_l = H_l(x_{l-1} (+) ... (+) x_0)`, eq. 1). With `scse=True` the scSE module (eqs. 2-4)
    recalibrates those new maps (the paper's "incorporated into each convolution layer in the dense
    block").

    Args:
        growth_rate: k, the number of feature maps the layer adds.
        dropout_rate: Dropout after the convolution (paper: 0.2).
        scse: Whether an `SCSEBlock` follows the dropout.
        scse_reduction: Reduction ratio of that scSE block.
        scse_fusion: `"add"` or `"max"` (see `SCSEBlock`).
        kernel_initializer: Convolution initializer (paper: HeUniform).
        memory_efficient: Recompute the concatenation, BN, ELU and convolution in the backward pass
            instead of storing their outputs (`keras.remat`); outputs and gradients are unchanged and
            the BN moving statistics are updated once per step.
        **kwargs: Base `keras.layers.Layer` arguments.

    Input shape:
        `(batch, height, width, channels)`, or a list of such tensors that are concatenated first.

    Output shape:
        `(batch, height, width, growth_rate)`.

    Raises:
        ValueError: for a non-positive `growth_rate`, a `dropout_rate` outside [0, 1), a bad scSE
            argument or a non-bool flag.
    """

    def __init__(
        self,
        growth_rate,
        dropout_rate=DROPOUT_RATE,
        scse=False,
        scse_reduction=SCSE_REDUCTION,
        scse_fusion=SCSE_FUSION,
        kernel_initializer="he_uniform",
        memory_efficient=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.growth_rate = check_positive_int("growth_rate", growth_rate)
        self.dropout_rate = check_rate("dropout_rate", dropout_rate)
        self.scse = check_bool("scse", scse)
        self.scse_reduction = check_positive_int("scse_reduction", scse_reduction)
        self.scse_fusion = check_choice("scse_fusion", scse_fusion, SCSE_FUSIONS)
        self.memory_efficient = check_bool("memory_efficient", memory_efficient)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.norm = keras.layers.BatchNormalization(dtype=self.dtype_policy, name="bn")
        self.conv = keras.layers.Conv2D(
            self.growth_rate,
            3,
            padding="same",
            kernel_initializer=keras.initializers.get(kernel_initializer),
            dtype=self.dtype_policy,
            name="conv",
        )
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy, name="dropout")
        self.attention = (
            SCSEBlock(scse_reduction, scse_fusion, dtype=self.dtype_policy, name="scse") if scse else None
        )

    def build(self, input_shape):
        channels = _channels(input_shape)
        shape = _first_shape(input_shape)[:-1] + (channels,)
        self.norm.build(shape)
        self.conv.build(shape)
        if self.attention is not None:
            self.attention.build(shape[:-1] + (self.growth_rate,))

    def _bn_elu_conv(self, features, training, update_statistics=True):
        x = ops.concatenate(features, axis=-1) if len(features) > 1 else features[0]
        if update_statistics:
            x = self.norm(x, training=training)
        else:
            # Recomputation in the backward pass: same batch statistics, but a momentum of 1 leaves the
            # moving averages exactly as the forward pass set them (otherwise they would move twice).
            momentum = self.norm.momentum
            self.norm.momentum = 1.0
            try:
                x = self.norm(x, training=training)
            finally:
                self.norm.momentum = momentum
        return self.conv(ops.elu(x))

    def call(self, inputs, training=None):
        features = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if self.memory_efficient and training:
            calls = []

            def forward(*tensors):
                calls.append(None)
                return self._bn_elu_conv(list(tensors), training, update_statistics=len(calls) == 1)

            x = keras.remat(forward)(*features)
        else:
            x = self._bn_elu_conv(features, training)
        # Dropout stays outside the recomputed function: a second draw would use a different mask.
        x = self.dropout(x, training=training)
        if self.attention is not None:
            x = self.attention(x)
        return x

    def compute_output_shape(self, input_shape):
        return _first_shape(input_shape)[:-1] + (self.growth_rate,)

    def layer_arguments(self):
        """The constructor arguments of this layer (without the base Layer ones), serialisable."""
        return {
            "growth_rate": self.growth_rate,
            "dropout_rate": self.dropout_rate,
            "scse": self.scse,
            "scse_reduction": self.scse_reduction,
            "scse_fusion": self.scse_fusion,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "memory_efficient": self.memory_efficient,
        }

    def get_config(self):
        config = super().get_config()
        config.update(self.layer_arguments())
        return config


@keras.saving.register_keras_serializable(package="ptx_keras")
class DenseBlock(keras.layers.Layer):
    """A dense block (paper Fig. 1b): `num_layers` `DenseLayer`s, each fed all maps before it (eq. 1).

    Args:
        num_layers: Number of dense layers (>= 1).
        growth_rate: k, feature maps added by each layer.
        return_new_only: If True, return only the `num_layers * k` maps the block added (used before a
            transition up in FC-DenseNet, so the up path does not grow without bound); if False, return
            the input concatenated with them.
        dropout_rate, scse, scse_reduction, scse_fusion, kernel_initializer, memory_efficient: Passed to
            every `DenseLayer`.
        **kwargs: Base `keras.layers.Layer` arguments.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, height, width, num_layers * growth_rate)` if `return_new_only`, else
        `(batch, height, width, channels + num_layers * growth_rate)`.

    Raises:
        ValueError: for a non-positive `num_layers` or any invalid `DenseLayer` argument.
    """

    def __init__(
        self,
        num_layers,
        growth_rate,
        return_new_only=False,
        dropout_rate=DROPOUT_RATE,
        scse=False,
        scse_reduction=SCSE_REDUCTION,
        scse_fusion=SCSE_FUSION,
        kernel_initializer="he_uniform",
        memory_efficient=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.return_new_only = check_bool("return_new_only", return_new_only)
        self.dense_layers = [
            DenseLayer(
                growth_rate,
                dropout_rate=dropout_rate,
                scse=scse,
                scse_reduction=scse_reduction,
                scse_fusion=scse_fusion,
                kernel_initializer=kernel_initializer,
                memory_efficient=memory_efficient,
                dtype=self.dtype_policy,
                name=f"layer_{i}",
            )
            for i in range(self.num_layers)
        ]
        self.growth_rate = self.dense_layers[0].growth_rate

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.dense_layers:
            layer.build(shape)
            shape = shape[:-1] + (shape[-1] + self.growth_rate,)

    def call(self, inputs, training=None):
        # Each layer receives the list of all earlier maps and concatenates them itself, so a
        # memory-efficient layer can recompute that (large) concatenation instead of storing it.
        features = [inputs]
        for layer in self.dense_layers:
            features.append(layer(features, training=training))
        if self.return_new_only:
            return ops.concatenate(features[1:], axis=-1)
        return ops.concatenate(features, axis=-1)

    def compute_output_shape(self, input_shape):
        added = self.num_layers * self.growth_rate
        channels = added if self.return_new_only else input_shape[-1] + added
        return tuple(input_shape[:-1]) + (channels,)

    def get_config(self):
        config = super().get_config()
        config.update({"num_layers": self.num_layers, "return_new_only": self.return_new_only})
        config.update(self.dense_layers[0].layer_arguments())
        return config


@keras.saving.register_keras_serializable(package="ptx_keras")
class TransitionDown(keras.layers.Layer):
    """Transition down (paper Fig. 1d): BN -> ELU -> 1x1 conv (same channels) -> dropout -> 2x2 max-pool.

    Args:
        dropout_rate: Dropout after the convolution (paper: 0.2).
        kernel_initializer: Convolution initializer (paper: HeUniform).
        **kwargs: Base `keras.layers.Layer` arguments.

    Input shape:
        `(batch, height, width, channels)`, height and width even.

    Output shape:
        `(batch, height // 2, width // 2, channels)`.

    Raises:
        ValueError: for a `dropout_rate` outside [0, 1).
    """

    def __init__(self, dropout_rate=DROPOUT_RATE, kernel_initializer="he_uniform", **kwargs):
        super().__init__(**kwargs)
        self.dropout_rate = check_rate("dropout_rate", dropout_rate)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.norm = keras.layers.BatchNormalization(dtype=self.dtype_policy, name="bn")
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy, name="dropout")
        self.pool = keras.layers.MaxPooling2D(2, dtype=self.dtype_policy, name="pool")
        self.conv = None  # its width is the input channel count, known in build()

    def build(self, input_shape):
        channels = _channels(input_shape)
        self.conv = keras.layers.Conv2D(
            channels,
            1,
            kernel_initializer=keras.initializers.get(keras.initializers.serialize(self.kernel_initializer)),
            dtype=self.dtype_policy,
            name="conv",
        )
        self.norm.build(input_shape)
        self.conv.build(input_shape)

    def call(self, inputs, training=None):
        x = ops.elu(self.norm(inputs, training=training))
        x = self.dropout(self.conv(x), training=training)
        return self.pool(x)

    def compute_output_shape(self, input_shape):
        return self.pool.compute_output_shape(tuple(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "dropout_rate": self.dropout_rate,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="ptx_keras")
class TransitionUp(keras.layers.Layer):
    """Transition up (paper Fig. 1e): a 3x3 transposed convolution with stride 2.

    In FC-DenseNet it is applied to the NEW feature maps of the previous block only; the model then
    concatenates the result with the skip connection.

    Args:
        filters: Output channels; None keeps the input channel count (Jegou et al.).
        kernel_initializer: Initializer of the kernel (paper: HeUniform).
        **kwargs: Base `keras.layers.Layer` arguments.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, 2 * height, 2 * width, filters or channels)`.

    Raises:
        ValueError: for a `filters` that is neither None nor a positive integer.
    """

    def __init__(self, filters=None, kernel_initializer="he_uniform", **kwargs):
        super().__init__(**kwargs)
        self.filters = None if filters is None else check_positive_int("filters", filters)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.conv = None  # its default width is the input channel count, known in build()

    def build(self, input_shape):
        channels = self.filters or _channels(input_shape)
        self.conv = keras.layers.Conv2DTranspose(
            channels,
            3,
            strides=2,
            padding="same",
            kernel_initializer=keras.initializers.get(keras.initializers.serialize(self.kernel_initializer)),
            dtype=self.dtype_policy,
            name="conv_transpose",
        )
        self.conv.build(input_shape)

    def call(self, inputs):
        return self.conv(inputs)

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        return (
            input_shape[0],
            None if height is None else 2 * height,
            None if width is None else 2 * width,
            self.filters or input_shape[-1],
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
