"""FC-DenseNet building blocks (Jegou et al. 2017; paper eq. 1 and Fig. 1b-e).

`DenseLayer` is one composite function H_l, `DenseBlock` chains them with concatenation,
`TransitionDown` and `TransitionUp` change the resolution. Each `DenseLayer` is a single Keras layer so
that it can be rematerialised as a unit (`memory_efficient=True`).
"""

import keras
from keras import ops

from ptx_keras import ops as ptx_ops
from ptx_keras.constants import DROPOUT_RATE, SCSE_FUSION, SCSE_REDUCTION
from ptx_keras.layers._validation import check_bool, check_choice, check_positive_int, check_rate
from ptx_keras.layers.scse import SCSE_FUSIONS, SCSEBlock

__all__ = ["DenseBlock", "DenseLayer", "TransitionDown", "TransitionUp", "resolve_layer_class"]


def resolve_layer_class(name, value, default):
    """Returns the Keras layer class `value` names: `default` for None, a class, or its registered name.

    The class must be registered with `keras.saving.register_keras_serializable`: a model or layer that
    records it in its config reloads from a `.keras` file only then.

    Args:
        name: The argument's name, for the error message.
        value: None, a `keras.layers.Layer` subclass, or its registered name (`"package>ClassName"`).
        default: The class returned for None.

    Returns:
        A `keras.layers.Layer` subclass.

    Raises:
        ValueError: for anything but a registered Keras layer class or the name of one.
    """
    if value is None:
        return default
    cls = keras.saving.get_registered_object(value) if isinstance(value, str) else value
    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
        raise ValueError(
            f"`{name}` must be a keras.layers.Layer subclass or the registered name of one "
            f'("package>ClassName"). Received: {name}={value!r}'
        )
    if keras.saving.get_registered_object(keras.saving.get_registered_name(cls)) is not cls:
        raise ValueError(
            f"`{name}` must be registered with @keras.saving.register_keras_serializable(package=...) so that "
            f".keras files that use it reload. Received: {name}={cls.__module__}.{cls.__qualname__}"
        )
    return cls


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


def _keep_mask(seed_generator, shape, rate):
    """A dropout keep mask (True with probability `1 - rate`), drawn outside any recomputed function.

    The recomputed function captures the mask instead of drawing its own, so the backward pass's
    recomputation applies the same mask; a boolean mask also costs a quarter of a float one to keep.
    """
    return ops.greater_equal(keras.random.uniform(shape, seed=seed_generator), rate)


def _drop(x, keep, rate):
    """Inverted dropout with a given keep mask (`None`: identity); its gradient needs only the mask."""
    if keep is None:
        return x
    return ops.where(keep, x * (1.0 / (1.0 - rate)), ops.zeros_like(x))


def _fusable(norm):
    """Whether `ptx_keras.ops.batch_normalization` computes exactly what `norm` would."""
    return ptx_ops.fused_ops_enabled() and _ops_compatible(norm)


def _ops_compatible(norm):
    """Whether `norm` is the plain batch normalization over the last axis that `ptx_keras.ops` computes."""
    return norm.axis in (-1, 3) and norm.center and norm.scale and not norm.renorm and not norm.synchronized


def _normalize_with_statistics(norm, x, training):
    """`norm(x)` through `ptx_keras.ops`, returning the batch statistics instead of updating `norm`.

    Returns:
        `(y, batch_mean, batch_variance)`; the statistics are None unless `norm` normalized with the batch's
        (training and `norm.trainable`). `_update_moving_statistics` folds them into `norm`.
    """
    training = bool(training) and norm.trainable
    normalize = ptx_ops.batch_normalization if ptx_ops.fused_ops_enabled() else ptx_ops.keras_batch_normalization
    return normalize(x, norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance, training, norm.epsilon)


def _update_moving_statistics(norm, mean, variance):
    """Keras' BatchNormalization.call update, term for term (`momentum` read now: `set_bn_momentum` applies)."""
    moving_mean = ops.cast(norm.moving_mean, "float32")
    moving_variance = ops.cast(norm.moving_variance, "float32")
    norm.moving_mean.assign(moving_mean * norm.momentum + mean * (1.0 - norm.momentum))
    norm.moving_variance.assign(moving_variance * norm.momentum + variance * (1.0 - norm.momentum))


def _normalize(norm, x, training, update_statistics):
    """`norm(x)` (a `keras.layers.BatchNormalization`), through the fused kernel where there is one.

    With `update_statistics=False` the moving averages stay as they are. The fused path (`ptx_keras.ops`, on
    by default; `PTX_KERAS_FUSED_OPS=0` turns it off) uses `norm`'s own variables and updates its moving
    statistics exactly as Keras does (`momentum` read at call time, so `training.set_bn_momentum` applies;
    biased batch variance).
    """
    if len(x.shape) == 4 and _fusable(norm):
        y, mean, variance = _normalize_with_statistics(norm, x, training)
        if mean is not None and update_statistics:
            _update_moving_statistics(norm, mean, variance)
        return y
    if update_statistics:
        return norm(x, training=training)
    # Same batch statistics, but a momentum of 1 leaves the moving averages exactly as they were.
    momentum = norm.momentum
    norm.momentum = 1.0
    try:
        return norm(x, training=training)
    finally:
        norm.momentum = momentum


def _run(function, memory_efficient, training, *tensors):
    """Calls `function(normalize, *tensors)`, rematerialised with `keras.remat` when asked.

    `function` normalizes with `normalize(norm, x)` instead of calling its BatchNormalization sublayers.
    Without rematerialisation that is `_normalize`. Under `keras.remat` the function runs once in the forward
    pass and again in the backward pass, inside a function transformation of the backend (`tf.recompute_grad`,
    `jax.checkpoint`, `torch.utils.checkpoint`): nothing computed in it may be assigned to a variable there
    (under JAX such a value is a tracer that must not escape the transformation). So the batch statistics
    are returned as extra outputs of the recomputed function (without gradient) and folded into the moving
    averages here, outside it: once per step, whatever the backend.
    """
    if not (memory_efficient and training):
        return function(lambda norm, x: _normalize(norm, x, training, True), *tensors)
    norms = []  # the BatchNormalization layers whose statistics the outputs carry, in order

    def forward(*args):
        statistics = []

        def normalize(norm, x):
            if not _ops_compatible(norm):
                raise ValueError(f"memory_efficient needs plain batch normalization over the last axis: {norm.name}")
            y, mean, variance = _normalize_with_statistics(norm, x, training)
            if mean is not None:
                statistics.append((norm, ops.stop_gradient(mean), ops.stop_gradient(variance)))
            return y

        y = function(normalize, *args)
        norms[:] = [norm for norm, _, _ in statistics]
        return (y, *[t for _, mean, variance in statistics for t in (mean, variance)])

    y, *flat = keras.remat(forward)(*tensors)
    for i, norm in enumerate(norms):
        _update_moving_statistics(norm, flat[2 * i], flat[2 * i + 1])
    return y


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
        memory_efficient: Recompute the whole layer (concatenation, BN, ELU, convolution, dropout with
            the same mask, scSE) in the backward pass instead of storing its intermediate tensors
            (`keras.remat`): only the inputs, the k new maps and a boolean dropout mask are kept.
            Outputs and gradients are unchanged and the BN moving statistics are updated once per step.
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
        # Dropout is drawn by this layer rather than a Dropout sublayer so that the recomputed function
        # (memory_efficient) can reuse the mask, and both modes draw the same masks.
        self.seed_generator = keras.random.SeedGenerator(name="dropout_seed")
        self.attention = (
            SCSEBlock(
                scse_reduction,
                scse_fusion,
                kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
                dtype=self.dtype_policy,
                name="scse",
            )
            if scse
            else None
        )

    def build(self, input_shape):
        channels = _channels(input_shape)
        shape = _first_shape(input_shape)[:-1] + (channels,)
        self.norm.build(shape)
        self.conv.build(shape)
        if self.attention is not None:
            self.attention.build(shape[:-1] + (self.growth_rate,))

    def call(self, inputs, training=None):
        features = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        keep = None
        if training and self.dropout_rate > 0:
            shape = tuple(ops.shape(features[0])[:-1]) + (self.growth_rate,)
            keep = _keep_mask(self.seed_generator, shape, self.dropout_rate)

        def composite(normalize, *stack):
            # `keep` is captured, not passed: the recomputation reuses the forward pass's mask.
            x = ops.concatenate(list(stack), axis=-1) if len(stack) > 1 else stack[0]
            x = self.conv(ops.elu(normalize(self.norm, x)))
            x = _drop(x, keep, self.dropout_rate)
            return x if self.attention is None else self.attention(x)

        return _run(composite, self.memory_efficient, training, *features)

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

    The layer class is an extension point: `dense_layer` replaces `DenseLayer` by another registered Keras
    layer class (docs/extending.md). The block constructs it with `DenseLayer`'s arguments
    (`growth_rate` positionally, then `dropout_rate`, `scse`, `scse_reduction`, `scse_fusion`,
    `kernel_initializer`, `memory_efficient`, `dtype` and `name` by keyword), calls it on the list of all
    earlier feature maps (the block input first) and expects `(batch, height, width, growth_rate)` back.

    Args:
        num_layers: Number of dense layers (>= 1).
        growth_rate: k, feature maps added by each layer.
        return_new_only: If True, return only the `num_layers * k` maps the block added (used before a
            transition up in FC-DenseNet, so the up path does not grow without bound); if False, return
            the input concatenated with them.
        dropout_rate: Passed to every dense layer.
        scse: Passed to every dense layer.
        scse_reduction: Passed to every dense layer.
        scse_fusion: Passed to every dense layer.
        kernel_initializer: Passed to every dense layer.
        memory_efficient: Passed to every dense layer.
        dense_layer: The dense layer class: None for `DenseLayer`, or a `keras.layers.Layer` subclass
            registered with `keras.saving.register_keras_serializable` (the class or its registered name,
            e.g. `"my_project>BottleneckDenseLayer"`), so that `.keras` files reload.
        **kwargs: Base `keras.layers.Layer` arguments.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, height, width, num_layers * growth_rate)` if `return_new_only`, else
        `(batch, height, width, channels + num_layers * growth_rate)`.

    Raises:
        ValueError: for a non-positive `num_layers`, any invalid `DenseLayer` argument, or a `dense_layer`
            that is not a registered Keras layer class.
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
        dense_layer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.return_new_only = check_bool("return_new_only", return_new_only)
        self.dense_layer = resolve_layer_class("dense_layer", dense_layer, DenseLayer)
        self.dense_layers = [
            self.dense_layer(
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
        self.growth_rate = check_positive_int("growth_rate", growth_rate)
        # What get_config saves for a dense layer class without `layer_arguments` (DenseLayer has it).
        self._layer_arguments = {
            "growth_rate": self.growth_rate,
            "dropout_rate": dropout_rate,
            "scse": scse,
            "scse_reduction": scse_reduction,
            "scse_fusion": scse_fusion,
            "kernel_initializer": keras.initializers.serialize(keras.initializers.get(kernel_initializer)),
            "memory_efficient": memory_efficient,
        }

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
        first = self.dense_layers[0]
        config.update(first.layer_arguments() if isinstance(first, DenseLayer) else self._layer_arguments)
        if self.dense_layer is not DenseLayer:  # files of plain blocks keep the config they always had
            config["dense_layer"] = keras.saving.get_registered_name(self.dense_layer)
        return config


@keras.saving.register_keras_serializable(package="ptx_keras")
class TransitionDown(keras.layers.Layer):
    """Transition down (paper Fig. 1d): BN -> ELU -> 1x1 conv (same channels) -> dropout -> 2x2 max-pool.

    Args:
        dropout_rate: Dropout after the convolution (paper: 0.2).
        kernel_initializer: Convolution initializer (paper: HeUniform).
        memory_efficient: Recompute the layer in the backward pass (`keras.remat`, the dropout mask
            drawn once and kept as booleans) instead of storing its full-resolution BN, ELU,
            convolution and dropout tensors; same outputs and gradients.
        **kwargs: Base `keras.layers.Layer` arguments.

    Input shape:
        `(batch, height, width, channels)`, height and width even.

    Output shape:
        `(batch, height // 2, width // 2, channels)`.

    Raises:
        ValueError: for a `dropout_rate` outside [0, 1) or a non-bool `memory_efficient`.
    """

    def __init__(self, dropout_rate=DROPOUT_RATE, kernel_initializer="he_uniform", memory_efficient=False, **kwargs):
        super().__init__(**kwargs)
        self.dropout_rate = check_rate("dropout_rate", dropout_rate)
        self.memory_efficient = check_bool("memory_efficient", memory_efficient)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.norm = keras.layers.BatchNormalization(dtype=self.dtype_policy, name="bn")
        self.seed_generator = keras.random.SeedGenerator(name="dropout_seed")
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
        keep = None
        if training and self.dropout_rate > 0:
            keep = _keep_mask(self.seed_generator, ops.shape(inputs), self.dropout_rate)

        def transition(normalize, x):
            x = ops.elu(normalize(self.norm, x))
            return self.pool(_drop(self.conv(x), keep, self.dropout_rate))

        return _run(transition, self.memory_efficient, training, inputs)

    def compute_output_shape(self, input_shape):
        return self.pool.compute_output_shape(tuple(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "dropout_rate": self.dropout_rate,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "memory_efficient": self.memory_efficient,
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
