"""The loss family of the paper's Table 5: SW-CEL (eq. 5), W-CEL, plain CE, and a soft Dice loss.

All losses take `y_true` in the layout of `ptx_keras.targets` — shape `(batch, height, width, 2)`, channel 0
the binary pneumothorax mask, channel 1 the spatial weight map of eq. 6 (prepared before training by
`ptx_keras.data.spatial_weight_map`) — and `y_pred` of shape `(batch, height, width, 2)`: softmax
probabilities over (background, pneumothorax), or logits with `from_logits=True`.

Reduction. Eq. 5 sums `-w(x_i) log p(t_i | x_i)` over the pixels. To keep the scale independent of the image
size, each loss returns one value per image — the MEAN over its pixels of `w * CE` — and the Keras
reduction (default `"sum_over_batch_size"`) then averages the images of the batch. With an all-ones weight
map this equals `keras.losses.CategoricalCrossentropy` on the one-hot mask.

Numerics. `y_pred` is cast to float32 first (float16 sums over a 512x512 image overflow), logits go through
a float32 log-softmax, and probabilities are clipped to `[epsilon, 1 - epsilon]` so that the loss and its
gradient stay finite for probabilities of exactly 0 and 1.

Image-level (aux) output. A model built with `aux_head=True` also returns an image-level pneumothorax
probability; training adds a binary cross-entropy on it against `image_labels(y_true)` (1 when the mask has any
pneumothorax pixel), weighted by `loss.aux_weight` (`aux_loss`, `ptx_keras.training`).

Every loss is registered as Keras-serializable (package `ptx_keras`): a compiled `.keras` model reloads
without `custom_objects` once `ptx_keras.losses` has been imported.
"""

import inspect

import keras
from keras import ops

from ptx_keras.constants import DICE_SMOOTH, LOSS_EPSILON, NUM_CLASSES, PTX_CLASS
from ptx_keras.errors import ConfigError
from ptx_keras.targets import mask_of, one_hot_mask, split_targets

__all__ = [
    "CE",
    "LOSSES",
    "CompoundLoss",
    "DiceLoss",
    "SpatialWeightedCE",
    "WeightedCE",
    "aux_loss",
    "get_loss",
    "image_labels",
]


_PIXEL_AXES = (1, 2)  # height, width of (batch, height, width)


def _check_from_logits(from_logits):
    if not isinstance(from_logits, bool):
        raise ValueError(f"from_logits must be True or False. Received: from_logits={from_logits!r}")


def _check_y_pred(y_pred):
    if len(y_pred.shape) != 4 or (y_pred.shape[-1] is not None and y_pred.shape[-1] != NUM_CLASSES):
        raise ValueError(
            f"y_pred must have shape (batch, height, width, {NUM_CLASSES}) (background, pneumothorax). "
            f"Received: y_pred.shape={tuple(y_pred.shape)}"
        )
    return ops.cast(y_pred, "float32")


class _PixelCrossEntropy(keras.losses.Loss):
    """Per-image mean of `w * CE` over the pixels; subclasses choose the weights `w`."""

    default_name = None

    def __init__(self, from_logits=False, epsilon=LOSS_EPSILON, reduction="sum_over_batch_size", name=None):
        _check_from_logits(from_logits)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 < epsilon < 0.5:
            raise ValueError(f"epsilon must be a number in (0, 0.5). Received: epsilon={epsilon!r}")
        # Always float32, whatever the global policy: the per-pixel sums must not run in float16.
        super().__init__(name=name or self.default_name, reduction=reduction, dtype="float32")
        self.from_logits = from_logits
        self.epsilon = float(epsilon)

    def pixel_weights(self, mask, weight_map):
        """Returns the per-pixel weights `(batch, height, width)` from the two `y_true` channels."""
        raise NotImplementedError

    def call(self, y_true, y_pred):
        """Per-image loss `(batch,)`: mean over pixels of `-w(x_i) log p(t_i | x_i)`."""
        y_pred = _check_y_pred(y_pred)
        mask, weight_map = split_targets(y_true)
        if self.from_logits:
            log_probs = ops.log_softmax(y_pred, axis=-1)
        else:
            log_probs = ops.log(ops.clip(y_pred, self.epsilon, 1.0 - self.epsilon))
        cross_entropy = -ops.sum(one_hot_mask(mask) * log_probs, axis=-1)
        weights = self.pixel_weights(mask, weight_map)
        return ops.mean(weights * cross_entropy, axis=_PIXEL_AXES)

    def get_config(self):
        config = super().get_config()
        config.update({"from_logits": self.from_logits, "epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="ptx_keras")
class SpatialWeightedCE(_PixelCrossEntropy):
    """SW-CEL, the paper's eq. 5: cross-entropy weighted by the spatial weight map of eq. 6.

    `L = -1/|N| sum_i w_map(x_i) log p(t_i | x_i)` per image (the mean over the `|N|` pixels), then the
    Keras reduction over the batch. `w_map` is read from the weight channel of `y_true`.

    Args:
        from_logits: Whether `y_pred` holds logits (a float32 log-softmax is applied) instead of
            probabilities.
        epsilon: Probabilities are clipped to `[epsilon, 1 - epsilon]` before the log.
        reduction: Keras reduction over the per-image losses (default `"sum_over_batch_size"`, the mean).
        name: Loss name (default `"sw_cel"`).

    Call arguments:
        y_true: `(batch, height, width, 2)`: mask and weight map (`ptx_keras.targets.pack_targets`).
        y_pred: `(batch, height, width, 2)` probabilities or logits, any float dtype.

    Raises:
        ValueError: for an invalid argument, or tensors of the wrong shape.
    """

    default_name = "sw_cel"

    def pixel_weights(self, mask, weight_map):
        return weight_map


@keras.saving.register_keras_serializable(package="ptx_keras")
class WeightedCE(_PixelCrossEntropy):
    """W-CEL: cross-entropy with class-frequency weights, eq. 6 without the boundary term.

    The weights `|N| / |T_c|` are computed in the graph per image from the mask channel of `y_true` (the
    weight channel is ignored); an absent class contributes nothing. Same as `SpatialWeightedCE` fed
    `ptx_keras.data.class_weight_map(mask)`.

    Args, call arguments and errors: as `SpatialWeightedCE` (default name `"wce"`).
    """

    default_name = "wce"

    def pixel_weights(self, mask, weight_map):
        pixels = ops.sum(ops.ones_like(mask), axis=_PIXEL_AXES, keepdims=True)
        ptx = ops.sum(mask, axis=_PIXEL_AXES, keepdims=True)
        background = pixels - ptx
        # max(n, 1): a class with no pixels has no pixels to weight, so its (unused) term must only be finite.
        w_ptx = pixels / ops.maximum(ptx, 1.0)
        w_background = pixels / ops.maximum(background, 1.0)
        return mask * w_ptx + (1.0 - mask) * w_background


@keras.saving.register_keras_serializable(package="ptx_keras")
class CE(_PixelCrossEntropy):
    """Plain pixel-wise cross-entropy (the paper's CEL); the weight channel of `y_true` is ignored.

    Args, call arguments and errors: as `SpatialWeightedCE` (default name `"ce"`).
    """

    default_name = "ce"

    def pixel_weights(self, mask, weight_map):
        return ops.ones_like(mask)


@keras.saving.register_keras_serializable(package="ptx_keras")
class DiceLoss(keras.losses.Loss):
    """Soft Dice loss on the pneumothorax channel: `1 - (2 sum(p g) + s) / (sum(p) + sum(g) + s)`.

    `p` is the predicted pneumothorax probability, `g` the mask channel of `y_true` (the weight channel is
    ignored), `s` the smooth term. With `s > 0` an image with no pneumothorax and an all-background prediction
    has loss 0 instead of 0/0, and the loss of a near-empty image stays bounded.

    Args:
        from_logits: Whether `y_pred` holds logits (softmax over the 2 classes is applied).
        smooth: Non-negative smooth term `s` (default `constants.DICE_SMOOTH`).
        per_image: True: one Dice per image, averaged by the Keras reduction. False: one Dice over all the
            pixels of the batch (each image then reports that batch value).
        reduction: Keras reduction over the per-image losses.
        name: Loss name.

    Raises:
        ValueError: for an invalid argument, or tensors of the wrong shape.
    """

    def __init__(
        self, from_logits=False, smooth=DICE_SMOOTH, per_image=True, reduction="sum_over_batch_size", name="dice"
    ):
        _check_from_logits(from_logits)
        if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or not smooth >= 0:
            raise ValueError(f"smooth must be a non-negative number. Received: smooth={smooth!r}")
        if not isinstance(per_image, bool):
            raise ValueError(f"per_image must be True or False. Received: per_image={per_image!r}")
        super().__init__(name=name, reduction=reduction, dtype="float32")
        self.from_logits = from_logits
        self.smooth = float(smooth)
        self.per_image = per_image

    def call(self, y_true, y_pred):
        """Per-image loss `(batch,)`."""
        y_pred = _check_y_pred(y_pred)
        mask, _ = split_targets(y_true)
        if self.from_logits:
            y_pred = ops.softmax(y_pred, axis=-1)
        probs = y_pred[..., PTX_CLASS]
        axes = _PIXEL_AXES if self.per_image else (0,) + _PIXEL_AXES
        intersection = ops.sum(probs * mask, axis=axes)
        total = ops.sum(probs, axis=axes) + ops.sum(mask, axis=axes)
        loss = 1.0 - (2.0 * intersection + self.smooth) / (total + self.smooth)
        if not self.per_image:
            loss = ops.broadcast_to(loss, ops.shape(probs)[:1])
        return loss

    def get_config(self):
        config = super().get_config()
        config.update({"from_logits": self.from_logits, "smooth": self.smooth, "per_image": self.per_image})
        return config


@keras.saving.register_keras_serializable(package="ptx_keras")
class CompoundLoss(keras.losses.Loss):
    """A weighted sum of losses from this module, e.g. SW-CEL + Dice (`get_loss("sw_cel+dice")`).

    The per-image values of the components are summed with `weights` before the Keras reduction; the
    components' own `reduction` settings are not used.

    Args:
        losses: Non-empty list of loss instances from this module (or their serialized configs).
        weights: One non-negative number per loss, or None for all ones.
        reduction: Keras reduction over the per-image losses.
        name: Loss name (default: the components' names joined by "_plus_"; Keras uses it as a name scope,
            which may not contain "+").

    Raises:
        ValueError: if `losses` is empty, holds something else, or `weights` does not match it.
    """

    def __init__(self, losses, weights=None, reduction="sum_over_batch_size", name=None):
        losses = [
            keras.saving.deserialize_keras_object(item) if isinstance(item, dict) else item for item in losses or []
        ]
        if not losses or not all(isinstance(item, keras.losses.Loss) for item in losses):
            raise ValueError(f"losses must be a non-empty list of keras Loss instances. Received: losses={losses!r}")
        weights = [1.0] * len(losses) if weights is None else [float(w) for w in weights]
        if len(weights) != len(losses) or any(not w >= 0 for w in weights):
            raise ValueError(
                f"weights must hold one non-negative number per loss ({len(losses)}). Received: weights={weights!r}"
            )
        super().__init__(name=name or "_plus_".join(item.name for item in losses), reduction=reduction, dtype="float32")
        self.losses = losses
        self.weights = weights

    def call(self, y_true, y_pred):
        total = 0.0
        for weight, loss in zip(self.weights, self.losses):
            total = total + weight * loss.call(y_true, y_pred)
        return total

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "losses": [keras.saving.serialize_keras_object(item) for item in self.losses],
                "weights": list(self.weights),
            }
        )
        return config


def image_labels(y_true):
    """The image-level label of each `y_true`: 1 when its mask has any pneumothorax pixel, else 0.

    Args:
        y_true: `(batch, height, width, 2)` (`ptx_keras.targets`).

    Returns:
        float32 tensor `(batch, 1)`, the target of the aux output.
    """
    return ops.cast(ops.max(mask_of(y_true), axis=_PIXEL_AXES) > 0.5, "float32")[:, None]


def aux_loss():
    """The loss of the image-level (aux) output: binary cross-entropy of its probability against
    `image_labels(y_true)`, computed in float32 (`keras.losses.BinaryCrossentropy`, name `aux_bce`)."""
    return keras.losses.BinaryCrossentropy(name="aux_bce", dtype="float32")


LOSSES = {"sw_cel": SpatialWeightedCE, "wce": WeightedCE, "ce": CE, "dice": DiceLoss}


def _parameters(cls):
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def get_loss(name, **kwargs):
    """Builds a loss from its configuration name.

    Args:
        name: `"sw_cel"` (the paper's SW-CEL), `"wce"` (W-CEL), `"ce"`, `"dice"`, or several joined by "+"
            (e.g. `"sw_cel+dice"`), which gives a `CompoundLoss`. Case and surrounding spaces are ignored.
        **kwargs: Arguments of the loss class (`from_logits`, `epsilon`, `smooth`, `per_image`, ...). For a
            compound name each argument goes to every component that takes it; `weights` (one per component)
            weights the sum.

    Returns:
        A `keras.losses.Loss` instance.

    Raises:
        ConfigError: for an unknown name (the message lists the valid ones) or an argument no component takes.
        ValueError: for an invalid argument value.
    """
    if not isinstance(name, str):
        raise ConfigError(f"loss name must be a string, one of {sorted(LOSSES)}. Received: name={name!r}")
    parts = [part.strip().lower() for part in name.split("+")]
    unknown = [part for part in parts if part not in LOSSES]
    if unknown:
        raise ConfigError(
            f"unknown loss {unknown[0]!r} in {name!r}; valid names: {', '.join(sorted(LOSSES))} "
            f"(or several joined by '+', e.g. 'sw_cel+dice')"
        )
    classes = [LOSSES[part] for part in parts]
    weights = kwargs.pop("weights", None) if len(classes) > 1 else None
    accepted = set().union(*(_parameters(cls) for cls in classes)) - {"name"}
    extra = sorted(set(kwargs) - accepted)
    if extra:
        raise ConfigError(f"loss {name!r} takes no option {extra[0]!r}; options: {', '.join(sorted(accepted))}")
    if len(classes) == 1:
        return classes[0](**kwargs)
    components = [
        cls(**{k: v for k, v in kwargs.items() if k in _parameters(cls) and k != "reduction"}) for cls in classes
    ]
    return CompoundLoss(components, weights=weights, reduction=kwargs.get("reduction", "sum_over_batch_size"))
