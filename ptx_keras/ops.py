"""Backend-dispatching kernels where `keras.ops` has no fused equivalent (the package's one such module).

`batch_normalization` computes a training-mode batch normalization in one fused kernel on the TensorFlow
backend (`FusedBatchNormV3`: one pass for the batch statistics and the normalization, and one fused op for the
whole backward pass, where Keras' BatchNormalization runs about ten separate reductions and broadcasts: BN +
ELU forward and backward measured cheaper on the CPU, docs/benchmarks.md) and with `keras.ops` on every
other backend. Inference (the moving statistics) stays on `keras.ops` everywhere: it is one multiply and one
add, which measured cheaper than the fused kernel on the CPU (docs/benchmarks.md). Layers stay backend-agnostic: they keep their
`keras.layers.BatchNormalization` sublayers (same weights, same `.keras` files) and pass its variables here
(`ptx_keras.layers.dense_block`).

The fused path is on by default. Turn it off for a process with the environment variable
`PTX_KERAS_FUSED_OPS=0`, or from Python with `set_fused_ops(False)` / `with fused_ops(False): ...`; the choice
is read when a layer is called (traced), so set it before building or tracing the functions that should use it.
Layers then call their Keras BatchNormalization as before (outputs equal within float32 rounding:
tests/test_ops.py).

`small_batch_xla_enabled` decides whether a prediction of fewer than `ONEDNN_MIN_BATCH` images runs as one
XLA-compiled function: on the TensorFlow backend, on a CPU, in a process whose oneDNN kernels are on. oneDNN
has no fast convolution for a batch of one NHWC image (its fallback is slower than Eigen's kernel), and
oneDNN is a process-wide choice made when TensorFlow starts (on for training, `ptx_keras.runtime`); XLA's CPU
convolutions do not go through it, so a batch-1 prediction in a training process gets Eigen's speed back
after a one-time compilation (docs/benchmarks.md). `ptx_keras.models.SegmentationModel.predict` and
`predict_on_batch` use it; `PTX_KERAS_SMALL_BATCH_XLA=0` (or `set_small_batch_xla(False)`) turns it off,
and then the plain Keras path runs (outputs equal within float32 rounding: tests/test_ops.py).
"""

import contextlib
import os

import keras
from keras import ops

from ptx_keras.runtime import ONEDNN_MIN_BATCH

__all__ = [
    "FUSED_MIN_EPSILON",
    "FUSED_OPS_VARIABLE",
    "ONEDNN_MIN_BATCH",
    "SMALL_BATCH_XLA_VARIABLE",
    "batch_normalization",
    "fused_ops",
    "fused_ops_enabled",
    "keras_batch_normalization",
    "set_fused_ops",
    "set_small_batch_xla",
    "small_batch_xla_enabled",
]


FUSED_OPS_VARIABLE = "PTX_KERAS_FUSED_OPS"
# The smallest epsilon TensorFlow's fused kernel accepts (cuDNN's limit); Keras' default is 1e-3.
FUSED_MIN_EPSILON = 1.001e-5

SMALL_BATCH_XLA_VARIABLE = "PTX_KERAS_SMALL_BATCH_XLA"

_state = {"fused": None, "small_batch_xla": None}  # None: follow the environment variable


def _switch(variable):
    return os.environ.get(variable, "1").strip().lower() not in ("0", "false", "off", "no")


def _check_switch(enabled):
    if enabled is not None and not isinstance(enabled, bool):
        raise ValueError(f"`enabled` must be True, False or None. Received: enabled={enabled!r}")


def fused_ops_enabled():
    """Whether layers use the fused kernels: `set_fused_ops`'s choice, else `PTX_KERAS_FUSED_OPS` (default on)."""
    if _state["fused"] is not None:
        return _state["fused"]
    return _switch(FUSED_OPS_VARIABLE)


def set_fused_ops(enabled):
    """Turns the fused kernels on or off for this process (None: back to `PTX_KERAS_FUSED_OPS`).

    Raises:
        ValueError: for anything but True, False or None.
    """
    _check_switch(enabled)
    _state["fused"] = enabled


@contextlib.contextmanager
def fused_ops(enabled):
    """Context manager: `set_fused_ops(enabled)` inside the block, the previous choice after it."""
    previous = _state["fused"]
    set_fused_ops(enabled)
    try:
        yield
    finally:
        _state["fused"] = previous


def set_small_batch_xla(enabled):
    """Turns the XLA path for small prediction batches on or off (None: back to `PTX_KERAS_SMALL_BATCH_XLA`).

    Raises:
        ValueError: for anything but True, False or None.
    """
    _check_switch(enabled)
    _state["small_batch_xla"] = enabled


def small_batch_xla_enabled(batch_size):
    """Whether a prediction at `batch_size` images per step should run XLA-compiled.

    True when the switch is on (`set_small_batch_xla`, else `PTX_KERAS_SMALL_BATCH_XLA`, default on),
    `batch_size` is below `ONEDNN_MIN_BATCH`, Keras runs on TensorFlow, no GPU is visible and TensorFlow's oneDNN
    kernels are on in this process. Never starts TensorFlow on another backend.

    Args:
        batch_size: Images per prediction step (None: unknown, never small).
    """
    choice = _state["small_batch_xla"]
    if not (_switch(SMALL_BATCH_XLA_VARIABLE) if choice is None else choice):
        return False
    if batch_size is None or batch_size >= ONEDNN_MIN_BATCH or keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        return False
    return _onednn_enabled()


def _onednn_enabled():
    # TensorFlow's own answer (it reads TF_ENABLE_ONEDNN_OPTS once, and turns oneDNN on by itself on CPUs
    # with AVX-512 VNNI or newer); a private module, hence the fallback to the variable.
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return _switch("TF_ENABLE_ONEDNN_OPTS") and "TF_ENABLE_ONEDNN_OPTS" in os.environ


def batch_normalization(x, scale, offset, mean, variance, training, epsilon):
    """Batch normalization over the last axis of a 4-D tensor, with the batch statistics it used.

    Same definition as `keras.layers.BatchNormalization` (Ioffe & Szegedy 2015):
    `y = scale * (x - m) / sqrt(v + epsilon) + offset`, with `(m, v)` the batch's mean and biased variance
    over (batch, height, width) when `training`, else `(mean, variance)`. Statistics are computed in float32
    whatever the input dtype (mixed precision); the output has the input's dtype.

    Args:
        x: `(batch, height, width, channels)` tensor, float32, float16 or bfloat16.
        scale, offset: `(channels,)` float32 gamma and beta (tensors or Keras variables).
        mean, variance: `(channels,)` float32 moving statistics, used when not `training`.
        training: Python bool: normalize with the batch's statistics.
        epsilon: Added to the variance.

    Returns:
        `(y, batch_mean, batch_variance)`: `y` shaped and typed like `x`; the batch's float32 mean and biased
        variance (what Keras' BatchNormalization folds into its moving statistics), or None when not
        `training`.
    """
    if training and keras.backend.backend() == "tensorflow" and len(x.shape) == 4 and epsilon >= FUSED_MIN_EPSILON:
        return _tensorflow_fused_training(x, scale, offset, epsilon)
    return keras_batch_normalization(x, scale, offset, mean, variance, training, epsilon)


def keras_batch_normalization(x, scale, offset, mean, variance, training, epsilon):
    """`batch_normalization` with `keras.ops` only: Keras BatchNormalization's own computation."""
    dtype = x.dtype
    x = ops.cast(x, keras.backend.result_type(x.dtype, "float32"))
    batch_mean = batch_variance = None
    if training:
        batch_mean, batch_variance = ops.moments(x, axes=list(range(len(x.shape) - 1)))
        mean, variance = batch_mean, batch_variance
    y = ops.batch_normalization(
        x,
        ops.cast(mean, x.dtype),
        ops.cast(variance, x.dtype),
        axis=-1,
        offset=ops.cast(offset, x.dtype),
        scale=ops.cast(scale, x.dtype),
        epsilon=epsilon,
    )
    return ops.cast(y, dtype), batch_mean, batch_variance


def _tensorflow_fused_training(x, scale, offset, epsilon):
    import tensorflow as tf

    # In training mode the kernel takes no moving statistics (empty tensors are its documented "none").
    empty = tf.constant([], tf.float32)
    y, batch_mean, batch_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=tf.convert_to_tensor(scale, tf.float32),
        offset=tf.convert_to_tensor(offset, tf.float32),
        mean=empty,
        variance=empty,
        epsilon=epsilon,
        data_format="NHWC",
        is_training=True,
    )
    # The kernel returns the Bessel-corrected variance (n / (n - 1)); Keras keeps the biased one.
    shape = tf.shape(x)
    n = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
    batch_variance = batch_variance * ((n - 1.0) / tf.maximum(n, 1.0))
    return y, tf.stop_gradient(batch_mean), tf.stop_gradient(batch_variance)
