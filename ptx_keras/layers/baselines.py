"""Layers the comparison baselines need and Keras lacks: max pooling with indices, max-unpooling, resize-like.

SegNet (Badrinarayanan et al. 2017) up-samples by putting each decoder value back where the encoder's
maximum came from; Keras has no `max_pool_with_argmax`, so `MaxPoolingWithIndices2D` returns, beside the
pooled maps, the position of each maximum inside its window (`0 .. pool_size**2 - 1`, row-major), and
`MaxUnpooling2D` scatters values back to those positions. DeepLab v3+ and DenseASPP resize feature maps to
the size of another tensor (image pooling branch, decoder, final logits): `ResizeLike`.

All three compute with `keras.ops` only and work with unknown (None) batch, height and width.
"""

import keras
from keras import ops

__all__ = ["MaxPoolingWithIndices2D", "MaxUnpooling2D", "ResizeLike"]


_INTERPOLATIONS = ("bilinear", "nearest")


def _check_pool_size(pool_size):
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 2:
        raise ValueError(
            f"`pool_size` must be an integer >= 2 (square, non-overlapping windows). Received: pool_size={pool_size!r}"
        )


def _scaled(dim, factor):
    return None if dim is None else dim * factor


@keras.saving.register_keras_serializable(package="ptx_keras")
class MaxPoolingWithIndices2D(keras.layers.Layer):
    """Non-overlapping `p x p` max pooling that also returns where each maximum was (SegNet's pooling indices).

    Ties go to the first maximum in row-major window order (as `argmax`). Gradients flow through the pooled
    output only; the indices are integers.

    Args:
        pool_size: Window side `p` (and stride), an integer >= 2.
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(batch, height, width, channels)`, height and width divisible by `pool_size`.

    Returns:
        `[pooled, indices]`: pooled `(batch, height / p, width / p, channels)` in the input dtype, and
        indices of the same shape, int32 in `[0, p * p)`: `row_in_window * p + column_in_window`.

    Raises:
        ValueError: if `pool_size` is not an integer >= 2, or a known input size is not divisible by it.
    """

    def __init__(self, pool_size=2, **kwargs):
        super().__init__(**kwargs)
        _check_pool_size(pool_size)
        self.pool_size = pool_size

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"{self.name} expects (batch, height, width, channels) inputs. Received: input_shape={input_shape}"
            )
        for dim in input_shape[1:3]:
            if dim is not None and dim % self.pool_size:
                raise ValueError(
                    f"{self.name}: height and width must be divisible by pool_size={self.pool_size}. "
                    f"Received: input_shape={input_shape}"
                )

    def call(self, inputs):
        p = self.pool_size
        shape = ops.shape(inputs)
        h, w, c = shape[1] // p, shape[2] // p, shape[3]
        x = ops.reshape(inputs, (-1, h, p, w, p, c))
        x = ops.transpose(x, (0, 1, 3, 5, 2, 4))  # (batch, h, w, channels, p, p)
        x = ops.reshape(x, (-1, h, w, c, p * p))
        pooled = ops.max(x, axis=-1)
        indices = ops.cast(ops.argmax(x, axis=-1), "int32")
        return [pooled, indices]

    def compute_output_shape(self, input_shape):
        p = self.pool_size
        shape = (
            input_shape[0],
            None if input_shape[1] is None else input_shape[1] // p,
            None if input_shape[2] is None else input_shape[2] // p,
            input_shape[3],
        )
        return [shape, shape]

    def compute_output_spec(self, inputs):
        shape = self.compute_output_shape(inputs.shape)[0]
        return [
            keras.KerasTensor(shape, dtype=inputs.dtype),
            keras.KerasTensor(shape, dtype="int32"),
        ]

    def get_config(self):
        config = super().get_config()
        config.update({"pool_size": self.pool_size})
        return config


@keras.saving.register_keras_serializable(package="ptx_keras")
class MaxUnpooling2D(keras.layers.Layer):
    """Inverse of `MaxPoolingWithIndices2D`: each value goes back to its maximum's position, zeros elsewhere.

    Args:
        pool_size: Window side `p`, the same as the pooling layer's.
        **kwargs: Base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `[values, indices]`, both `(batch, height, width, channels)`; indices as returned by
            `MaxPoolingWithIndices2D` (so `values` must have the pooled tensor's channel count).

    Returns:
        `(batch, height * p, width * p, channels)`.

    Raises:
        ValueError: if `pool_size` is not an integer >= 2, or the two inputs' known shapes differ.
    """

    def __init__(self, pool_size=2, **kwargs):
        super().__init__(**kwargs)
        _check_pool_size(pool_size)
        self.pool_size = pool_size

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(f"{self.name} expects two inputs [values, indices]. Received: input_shape={input_shape}")
        values_shape, indices_shape = input_shape
        for a, b in zip(values_shape[1:], indices_shape[1:]):
            if a is not None and b is not None and a != b:
                raise ValueError(
                    f"{self.name}: values and indices must have the same shape. "
                    f"Received: values shape={values_shape}, indices shape={indices_shape}"
                )

    def call(self, inputs):
        values, indices = inputs
        p = self.pool_size
        shape = ops.shape(values)
        h, w, c = shape[1], shape[2], shape[3]
        mask = ops.one_hot(ops.cast(indices, "int32"), p * p, dtype=values.dtype)
        x = ops.expand_dims(values, -1) * mask  # (batch, h, w, channels, p * p)
        x = ops.reshape(x, (-1, h, w, c, p, p))
        x = ops.transpose(x, (0, 1, 4, 2, 5, 3))  # (batch, h, p, w, p, channels)
        return ops.reshape(x, (-1, h * p, w * p, c))

    def compute_output_shape(self, input_shape):
        shape = input_shape[0]
        p = self.pool_size
        return (shape[0], _scaled(shape[1], p), _scaled(shape[2], p), shape[3])

    def get_config(self):
        config = super().get_config()
        config.update({"pool_size": self.pool_size})
        return config


def _resize_axis(x, size, axis, interpolation):
    """Resizes `x` along `axis` (1 or 2) to `size` with half-pixel centres, as `tf.image.resize` does.

    Source coordinate of output pixel j: (j + 0.5) * n_in / n_out - 0.5 (bilinear, neighbours clamped to the
    edge) or floor((j + 0.5) * n_in / n_out) (nearest). Gathers instead of `ops.image.resize`, which needs
    the target size as Python ints and so cannot follow an input of unknown (None) height or width.
    """
    n_in = ops.shape(x)[axis]
    scale = ops.cast(n_in, "float32") / ops.cast(size, "float32")
    centres = (ops.cast(ops.arange(size), "float32") + 0.5) * scale
    last = ops.cast(n_in, "float32") - 1.0
    if interpolation == "nearest":
        index = ops.cast(ops.clip(ops.floor(centres), 0.0, last), "int32")
        return ops.take(x, index, axis=axis)
    coords = centres - 0.5
    lower = ops.floor(coords)
    fraction = ops.cast(coords - lower, x.dtype)
    low = ops.take(x, ops.cast(ops.clip(lower, 0.0, last), "int32"), axis=axis)
    high = ops.take(x, ops.cast(ops.clip(lower + 1.0, 0.0, last), "int32"), axis=axis)
    fraction = ops.reshape(fraction, (1, -1, 1, 1) if axis == 1 else (1, 1, -1, 1))
    return low + fraction * (high - low)


@keras.saving.register_keras_serializable(package="ptx_keras")
class ResizeLike(keras.layers.Layer):
    """Resizes `x` to the height and width of `reference` (bilinear or nearest, half-pixel centres).

    The result equals `keras.ops.image.resize(x, size, interpolation, antialias=False)` (tested), but the
    size may be unknown until run time, so models built with `input_shape=(None, None, channels)` work.

    Args:
        interpolation: "bilinear" or "nearest".
        **kwargs: Base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `[x, reference]`: x `(batch, h, w, channels)`, reference `(batch, height, width, any)`.

    Returns:
        `(batch, height, width, channels)` in the layer's compute dtype.

    Raises:
        ValueError: if `interpolation` is not one of the supported names.
    """

    def __init__(self, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"`interpolation` must be one of {_INTERPOLATIONS}. Received: interpolation={interpolation!r}"
            )
        self.interpolation = interpolation

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(f"{self.name} expects two inputs [x, reference]. Received: input_shape={input_shape}")

    def call(self, inputs):
        x, reference = inputs
        x = ops.cast(x, self.compute_dtype)
        shape = ops.shape(reference)
        x = _resize_axis(x, shape[1], 1, self.interpolation)
        return _resize_axis(x, shape[2], 2, self.interpolation)

    def compute_output_shape(self, input_shape):
        x_shape, reference_shape = input_shape
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"interpolation": self.interpolation})
        return config
