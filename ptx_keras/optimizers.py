"""The training optimizer: Adam with the paper's weight decay, coupled (L2) or decoupled (AdamW).

The paper trains with "Adam ... weight decay 1e-4". In the PyTorch of its era that is
`torch.optim.Adam(params, weight_decay=1e-4)`: an L2 term coupled into the gradient before Adam's moments,

    g_t <- g_t + wd * w_{t-1}
    m_t = b1 m_{t-1} + (1 - b1) g_t,   v_t = b2 v_{t-1} + (1 - b2) g_t^2
    w_t = w_{t-1} - lr * sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t) + eps)

applied to every trainable variable (kernels, biases, BatchNormalization gamma and beta), as `model.parameters()`
is in PyTorch. Adam normalises the gradient, so for a weight whose data gradient is small the decay term moves it
by up to about `lr` per step towards zero: the decay acts.

Keras' `AdamW` is the decoupled alternative (Loshchilov & Hutter): `w <- w - lr * wd * w` per step besides the
Adam step. At the paper's `lr = wd = 1e-4` that shrink is 1e-8 of the weight per step, below float32's
resolution (about 6e-8 relative): a no-op for typical weights. `make_optimizer` therefore defaults to the coupled
meaning (`train.weight_decay_mode: coupled`) and offers AdamW as `decoupled`.
"""

import math
import numbers

import keras
from keras import ops

from ptx_keras.constants import BETA_1, BETA_2, LEARNING_RATE, WEIGHT_DECAY, WEIGHT_DECAY_MODE, WEIGHT_DECAY_MODES

__all__ = ["ADAM_EPSILON", "AdamL2", "make_optimizer"]


ADAM_EPSILON = 1e-7  # Keras' Adam default ("epsilon hat" of Kingma & Ba), kept from the earlier AdamW setup


def _check_number(name, value, low, high=None, low_inclusive=True):
    """Returns `value` as a float if it is a finite real number in the range, else raises `ValueError`."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= low if low_inclusive else value > low) and (high is None or value < high)
    if not ok:
        bounds = f"{'[' if low_inclusive else '('}{low}, {'inf' if high is None else high})"
        raise ValueError(f"`{name}` must be a finite number in {bounds}. Received: {name}={value!r}")
    return float(value)


def _check_adam_args(learning_rate, beta_1, beta_2, epsilon):
    # A schedule or a callable learning rate is Keras' to check; a plain number must be positive.
    if isinstance(learning_rate, numbers.Real):
        _check_number("learning_rate", learning_rate, 0.0, low_inclusive=False)
    _check_number("beta_1", beta_1, 0.0, 1.0)
    _check_number("beta_2", beta_2, 0.0, 1.0)
    _check_number("epsilon", epsilon, 0.0, low_inclusive=False)


@keras.saving.register_keras_serializable(package="ptx_keras")
class AdamL2(keras.optimizers.Adam):
    """Adam with L2 weight decay coupled into the gradient (`torch.optim.Adam(weight_decay=...)` semantics).

    Every step replaces the gradient `g` of each trainable variable `w` by `g + weight_decay * w` before
    Adam's moment updates (after any gradient clipping, as PyTorch applies clipping before `step()`).
    With `weight_decay=0` it is exactly `keras.optimizers.Adam`. Computed with `keras.ops` only, so it runs
    under the TensorFlow, JAX and PyTorch backends.

    Args:
        learning_rate: Step size (paper: 1e-4), or a `keras.optimizers.schedules.LearningRateSchedule`.
        beta_1: Decay of the first-moment estimate, in [0, 1) (paper: 0.9).
        beta_2: Decay of the second-moment estimate, in [0, 1) (paper: 0.999).
        epsilon: Added to `sqrt(v)` (Keras' "epsilon hat"), > 0.
        amsgrad: Use the AMSGrad variant.
        weight_decay: The L2 coefficient `wd` added as `wd * w` to every gradient, >= 0 (paper: 1e-4).
            This is *not* Keras' decoupled `weight_decay` of the base optimizer (see `make_optimizer`).
        **kwargs: Other `keras.optimizers.Optimizer` arguments (`clipnorm`, `use_ema`, `name`, ...).

    Raises:
        ValueError: for a non-positive learning rate or epsilon, betas outside [0, 1) or a negative or
            non-finite `weight_decay`.
    """

    def __init__(
        self,
        learning_rate=LEARNING_RATE,
        beta_1=BETA_1,
        beta_2=BETA_2,
        epsilon=ADAM_EPSILON,
        amsgrad=False,
        weight_decay=WEIGHT_DECAY,
        **kwargs,
    ):
        _check_adam_args(learning_rate, beta_1, beta_2, epsilon)
        l2 = _check_number("weight_decay", weight_decay, 0.0)
        # The base class' `weight_decay` is the decoupled shrink; it must stay off here.
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            weight_decay=None,
            **kwargs,
        )
        self.l2_weight_decay = l2

    def update_step(self, gradient, variable, learning_rate):
        """Adam's update of `variable` with the gradient `gradient + weight_decay * variable`."""
        if self.l2_weight_decay:
            gradient = ops.add(
                ops.cast(gradient, variable.dtype),
                ops.multiply(ops.cast(self.l2_weight_decay, variable.dtype), variable),
            )
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["weight_decay"] = self.l2_weight_decay
        return config


def make_optimizer(
    learning_rate=LEARNING_RATE,
    weight_decay=WEIGHT_DECAY,
    weight_decay_mode=WEIGHT_DECAY_MODE,
    beta_1=BETA_1,
    beta_2=BETA_2,
    loss_scale=None,
):
    """The optimizer training uses (`train.learning_rate`, `train.weight_decay`, `train.weight_decay_mode`).

    * `weight_decay_mode="coupled"` (default, the paper's meaning): `AdamL2`, L2 added to the gradient before
      Adam's moments (`g <- g + wd * w`, PyTorch `Adam(weight_decay=wd)`), on every trainable variable.
    * `weight_decay_mode="decoupled"`: `keras.optimizers.AdamW`, which shrinks every weight by `lr * wd` of its
      value per step besides the Adam step. At `lr = wd = 1e-4` that is 1e-8 per step, below float32's
      resolution: it changes nothing (docs/training.md, "Weight decay").
    * `weight_decay=0`: plain `keras.optimizers.Adam` in either mode.

    Args:
        learning_rate: Adam's step size (paper: 1e-4), or a learning-rate schedule.
        weight_decay: Decay coefficient, >= 0 (paper: 1e-4).
        weight_decay_mode: `"coupled"` or `"decoupled"`.
        beta_1: Adam's first-moment decay (paper: 0.9).
        beta_2: Adam's second-moment decay (paper: 0.999).
        loss_scale: Wrap the optimizer in `keras.optimizers.LossScaleOptimizer` (needed for float16
            gradients). None: wrap when the global dtype policy is `mixed_float16`.

    Returns:
        A `keras.optimizers.Optimizer`.

    Raises:
        ValueError: for an unknown `weight_decay_mode` or an invalid number (naming the value).
    """
    if weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise ValueError(
            f"`weight_decay_mode` must be one of {list(WEIGHT_DECAY_MODES)}. Received: "
            f"weight_decay_mode={weight_decay_mode!r}"
        )
    weight_decay = _check_number("weight_decay", weight_decay, 0.0)
    _check_adam_args(learning_rate, beta_1, beta_2, ADAM_EPSILON)
    adam = dict(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=ADAM_EPSILON)
    if weight_decay == 0.0:
        optimizer = keras.optimizers.Adam(**adam)
    elif weight_decay_mode == "coupled":
        optimizer = AdamL2(weight_decay=weight_decay, **adam)
    else:
        optimizer = keras.optimizers.AdamW(weight_decay=weight_decay, **adam)
    if loss_scale is None:
        loss_scale = keras.mixed_precision.global_policy().name == "mixed_float16"
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
