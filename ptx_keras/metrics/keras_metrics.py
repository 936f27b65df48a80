"""Streaming in-graph metrics: DSC1 (early-stopping monitor) and MPA, computed per image with `keras.ops`.

They agree with `ptx_keras.metrics.segmentation_scores` (same definitions and empty-mask policy): each
image's score is computed, then the metric accumulates the sum of the scores and the number of images, so
the value is the mean over all images seen since the last `reset_state()` whatever the batch size.

`y_true` is the packed target `(batch, height, width, 2)` of `ptx_keras.targets` (its mask channel is read
through `mask_of`); `y_pred` is the softmax output `(batch, height, width, 2)` (or a single sigmoid channel
`(batch, height, width, 1)`). A pixel is predicted pneumothorax when its PTX probability is strictly above
`threshold` (default 0.5): for a 2-class softmax that is the argmax, ties going to the background.
Computation is float32 even when `y_pred` is float16 (mixed precision).
"""

import numbers

import keras
from keras import ops

from ptx_keras.constants import MASK_THRESHOLD, NUM_CLASSES, PTX_CLASS
from ptx_keras.targets import mask_of

__all__ = ["DSC1", "MPA", "GlobalDSC1", "per_image_dsc1", "per_image_mpa"]


def _check_threshold(threshold):
    if not isinstance(threshold, numbers.Real) or isinstance(threshold, bool) or not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be a number in [0, 1). Received: threshold={threshold!r}")
    return float(threshold)


def _ptx_probability(y_pred):
    channels = y_pred.shape[-1]
    if channels == NUM_CLASSES:
        return ops.cast(y_pred[..., PTX_CLASS], "float32")
    if channels == 1:
        return ops.cast(y_pred[..., 0], "float32")
    raise ValueError(
        f"y_pred must have {NUM_CLASSES} (softmax) or 1 (sigmoid) channels on its last axis. "
        f"Received: y_pred.shape={tuple(y_pred.shape)}"
    )


def _per_image_counts(y_true, y_pred, threshold):
    """Returns float32 `(true, pred, intersection, pixels)` counts, each of shape `(batch,)`."""
    truth = ops.cast(mask_of(y_true) > 0.5, "float32")
    pred = ops.cast(_ptx_probability(y_pred) > threshold, "float32")
    if len(truth.shape) != 3 or len(pred.shape) != 3:
        raise ValueError(
            "y_true and y_pred must be 4-D (batch, height, width, channels). "
            f"Received: y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}"
        )
    n_true = ops.sum(truth, axis=(1, 2))
    n_pred = ops.sum(pred, axis=(1, 2))
    n_inter = ops.sum(truth * pred, axis=(1, 2))
    n_pixels = ops.cast(ops.shape(truth)[1] * ops.shape(truth)[2], "float32")
    return n_true, n_pred, n_inter, n_pixels


def _ratio(num, den, pred_count):
    """num / den with the empty policy: den == 0 -> 1 if pred_count == 0 else 0 (keras.ops, per image)."""
    empty_score = ops.cast(ops.equal(pred_count, 0.0), "float32")
    return ops.where(ops.equal(den, 0.0), empty_score, num / ops.maximum(den, 1.0))


def per_image_dsc1(y_true, y_pred, threshold=MASK_THRESHOLD):
    """Dice of the pneumothorax class per image (eq. 10 before averaging); both empty -> 1.

    Args:
        y_true: Packed targets `(batch, height, width, 2)`.
        y_pred: Probabilities `(batch, height, width, 2)` or `(batch, height, width, 1)`.
        threshold: PTX probability above which a pixel is predicted pneumothorax.

    Returns:
        float32 tensor `(batch,)`.
    """
    n_true, n_pred, n_inter, _ = _per_image_counts(y_true, y_pred, threshold)
    return _ratio(2.0 * n_inter, n_true + n_pred, ops.zeros_like(n_true))


def per_image_mpa(y_true, y_pred, threshold=MASK_THRESHOLD):
    """Mean pixel accuracy over the 2 classes per image (eq. 7 before averaging), with the empty policy.

    Args:
        y_true: Packed targets `(batch, height, width, 2)`.
        y_pred: Probabilities `(batch, height, width, 2)` or `(batch, height, width, 1)`.
        threshold: PTX probability above which a pixel is predicted pneumothorax.

    Returns:
        float32 tensor `(batch,)`.
    """
    n_true, n_pred, n_inter, n = _per_image_counts(y_true, y_pred, threshold)
    pa1 = _ratio(n_inter, n_true, n_pred)
    pa0 = _ratio(n - n_true - n_pred + n_inter, n - n_true, n - n_pred)
    return 0.5 * (pa0 + pa1)


class _PerImageMean(keras.metrics.Metric):
    """Mean of a per-image score over all images seen (sum of scores / number of images)."""

    def __init__(self, threshold=MASK_THRESHOLD, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.threshold = _check_threshold(threshold)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="count")

    def _scores(self, y_true, y_pred):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds the per-image scores of a batch.

        Args:
            y_true: Packed targets `(batch, height, width, 2)`.
            y_pred: Probabilities `(batch, height, width, 2)` (or 1 channel).
            sample_weight: Optional per-image weights `(batch,)` (or `(batch, 1)`); a weighted mean results.
        """
        scores = self._scores(y_true, y_pred)
        if sample_weight is None:
            weights = ops.ones_like(scores)
        else:
            weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            weights = ops.broadcast_to(weights, ops.shape(scores))
        self.total.assign_add(ops.sum(scores * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        config = super().get_config()
        config["threshold"] = self.threshold
        return config


@keras.saving.register_keras_serializable(package="ptx_keras")
class DSC1(_PerImageMean):
    """Streaming DSC1 (eq. 10): per-image Dice of the pneumothorax class, averaged over images.

    An image whose truth and prediction are both empty scores 1, one with exactly one of them empty scores 0.
    This is the early-stopping monitor (`val_dsc1`).

    Args:
        threshold: PTX probability strictly above which a pixel is predicted pneumothorax, in [0, 1).
        name: Metric name, default "dsc1".
        dtype: Result dtype (the state is float32 regardless).

    Raises:
        ValueError: if `threshold` is not in [0, 1).
    """

    def __init__(self, threshold=MASK_THRESHOLD, name="dsc1", dtype=None):
        super().__init__(threshold=threshold, name=name, dtype=dtype)

    def _scores(self, y_true, y_pred):
        return per_image_dsc1(y_true, y_pred, self.threshold)


@keras.saving.register_keras_serializable(package="ptx_keras")
class MPA(_PerImageMean):
    """Streaming MPA (eq. 7): per-image mean pixel accuracy over background and pneumothorax, averaged.

    A class absent from the truth scores 1 if it is also absent from the prediction, else 0.

    Args:
        threshold: PTX probability strictly above which a pixel is predicted pneumothorax, in [0, 1).
        name: Metric name, default "mpa".
        dtype: Result dtype (the state is float32 regardless).

    Raises:
        ValueError: if `threshold` is not in [0, 1).
    """

    def __init__(self, threshold=MASK_THRESHOLD, name="mpa", dtype=None):
        super().__init__(threshold=threshold, name=name, dtype=dtype)

    def _scores(self, y_true, y_pred):
        return per_image_mpa(y_true, y_pred, self.threshold)


@keras.saving.register_keras_serializable(package="ptx_keras")
class GlobalDSC1(keras.metrics.Metric):
    """Pooled Dice of the pneumothorax class: 2 Σ|A∩B| / (Σ|A| + Σ|B|) over all pixels of all images seen.

    Unlike `DSC1` it weights images by their pneumothorax size and ignores negatives with empty predictions;
    it is 1 when no pneumothorax was predicted nor present at all.

    Args:
        threshold: PTX probability strictly above which a pixel is predicted pneumothorax, in [0, 1).
        name: Metric name, default "global_dsc1".
        dtype: Result dtype (the state is float32 regardless).

    Raises:
        ValueError: if `threshold` is not in [0, 1).
    """

    def __init__(self, threshold=MASK_THRESHOLD, name="global_dsc1", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.threshold = _check_threshold(threshold)
        self.intersection = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="intersection")
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds a batch's pixel counts. `sample_weight` is not supported (pixels are pooled)."""
        if sample_weight is not None:
            raise ValueError("GlobalDSC1 does not support sample_weight. Received a sample_weight tensor")
        n_true, n_pred, n_inter, _ = _per_image_counts(y_true, y_pred, self.threshold)
        self.intersection.assign_add(ops.sum(n_inter))
        self.total.assign_add(ops.sum(n_true + n_pred))

    def result(self):
        return ops.where(ops.equal(self.total, 0.0), 1.0, 2.0 * self.intersection / ops.maximum(self.total, 1.0))

    def reset_state(self):
        self.intersection.assign(0.0)
        self.total.assign(0.0)

    def get_config(self):
        config = super().get_config()
        config["threshold"] = self.threshold
        return config
