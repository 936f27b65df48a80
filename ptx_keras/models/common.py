"""Pieces every segmentation model builder shares: input validation, the softmax head, the optional image-level
(aux) head, the output structure, preset overrides.

Output structure (the one definition training, inference, serving and export read): a model without an aux head
returns the softmax tensor `(batch, H, W, num_classes)`, as it always has; a model built with `aux_head=True`
returns a dict `{MASK_OUTPUT: softmax, AUX_OUTPUT: (batch, 1) image-level pneumothorax probability}`.
`split_outputs` reads either.

Every builder returns a `SegmentationModel`: a functional `keras.Model` whose `predict` and
`predict_on_batch` run single images XLA-compiled where that is faster (`ptx_keras.ops.small_batch_xla_enabled`).
"""

import contextlib
import inspect
import numbers
import weakref

import keras
import numpy as np

from ptx_keras.constants import AUX_OUTPUT, MASK_OUTPUT
from ptx_keras.errors import ModelError
from ptx_keras.layers import InputSizeCheck, check_spatial_size
from ptx_keras.layers._validation import check_positive_int
from ptx_keras.ops import small_batch_xla_enabled
from ptx_keras.runtime import keras_array_datasets_without_autotune

__all__ = [
    "AUX_OUTPUT",
    "MASK_OUTPUT",
    "SegmentationModel",
    "build_with_overrides",
    "check_num_classes",
    "has_aux_output",
    "image_input",
    "image_level_head",
    "segmentation_outputs",
    "softmax_head",
    "split_outputs",
]


# `fit`/`evaluate`/`predict` on arrays: Keras' datasets without tf.data's autotuning thread, whose lost wake-up
# makes the end of a pass wait up to its sleep period (`ptx_keras.runtime`). Here because Keras is imported now.
keras_array_datasets_without_autotune()

# Each model's XLA-compiled predict function, kept apart from Keras' own (weak keys: dies with the model).
_xla_predict_functions = weakref.WeakKeyDictionary()


@keras.saving.register_keras_serializable(package="ptx_keras")
class SegmentationModel(keras.Model):
    """The package's segmentation models: a functional `keras.Model` (built as `SegmentationModel(inputs,
    outputs, name=...)`) whose predictions of single images are fast in a training process.

    TensorFlow's oneDNN kernels, on in a process that trains (`ptx_keras.runtime`), have no fast convolution
    for a batch of one image. When `ptx_keras.ops.small_batch_xla_enabled(batch)` says so (TensorFlow on a CPU
    with oneDNN on, fewer than `ONEDNN_MIN_BATCH` images per step), `predict` and `predict_on_batch` run a
    second, XLA-compiled predict function instead of Keras' own (compiled once per input shape, on its first
    call); every other call, every other backend, `run_eagerly` and `PTX_KERAS_SMALL_BATCH_XLA=0` run Keras'
    path unchanged. Outputs agree to float32 rounding. Calling the model directly (`model(x)`) is not
    affected. One model should not predict from two threads at once with different batch sizes.

    Saved `.keras` files name this class; files saved as a plain functional model load as one (without the
    XLA path).
    """

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Keras' `Model.predict`; single-image steps XLA-compiled where faster (see the class).

        Arrays that fit in one batch (no `steps`, no `callbacks`) are predicted as `predict_on_batch` does: the
        same predict function on the same batch, without building a `tf.data` pipeline, callbacks and a
        progress bar for a single step (a fixed cost that is a large part of a single image's prediction).
        """
        batch = _prediction_batch(x, batch_size)
        if steps is None and callbacks is None and batch and batch == _images_in(x):
            return self.predict_on_batch(x)
        with self._predict_function_for(batch):
            return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)

    def predict_on_batch(self, x):
        """Keras' `Model.predict_on_batch`; a single image XLA-compiled where faster (see the class)."""
        with self._predict_function_for(_prediction_batch(x, None)):
            return super().predict_on_batch(x)

    @contextlib.contextmanager
    def _predict_function_for(self, batch):
        # Keras builds its predict function once, with `jit_compile` as it is then, and caches it in
        # `predict_function`: the XLA one is built the same way and swapped in for the call.
        if self.run_eagerly or not small_batch_xla_enabled(batch):
            yield
            return
        plain_function, plain_jit = self.predict_function, self.jit_compile
        self.predict_function = _xla_predict_functions.get(self)
        self.jit_compile = True
        try:
            yield
        finally:
            if self.predict_function is not None:
                _xla_predict_functions[self] = self.predict_function
            self.predict_function, self.jit_compile = plain_function, plain_jit


def _images_in(x):
    """The number of images in `x` when it is an array or tensor (or a list/dict of them), else None."""
    first = x
    while isinstance(first, (list, tuple, dict)) and first:
        first = next(iter(first.values())) if isinstance(first, dict) else first[0]
    if not (isinstance(first, np.ndarray) or keras.ops.is_tensor(first)) or not first.shape:
        return None
    return None if first.shape[0] is None else int(first.shape[0])


def _prediction_batch(x, batch_size):
    """Images per prediction step for `predict(x, batch_size)` (Keras' default 32), None when `x` is not arrays."""
    images = _images_in(x)
    return None if images is None else min(images, 32 if batch_size is None else int(batch_size))


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
