"""The one definition of the `y_true` layout shared by the data pipeline, the losses and the metrics.

`y_true` has shape `(batch, height, width, 2)`:

* channel `MASK_CHANNEL` (0) holds the binary pneumothorax mask (0 or 1);
* channel `WEIGHT_CHANNEL` (1) holds the spatial weight map `w_map` of eq. 6 (all ones for plain CE).

Nothing else in the package indexes `y_true` channels directly.
"""

from keras import ops

__all__ = [
    "MASK_CHANNEL",
    "NUM_TARGET_CHANNELS",
    "WEIGHT_CHANNEL",
    "mask_of",
    "one_hot_mask",
    "pack_targets",
    "split_targets",
]


MASK_CHANNEL = 0
WEIGHT_CHANNEL = 1
NUM_TARGET_CHANNELS = 2


def pack_targets(mask, weight_map=None):
    """Packs a mask and a weight map into the `y_true` tensor.

    Args:
        mask: Binary mask, shape `(batch, height, width)` or `(batch, height, width, 1)` (or without the batch
            axis). Any numeric or boolean dtype.
        weight_map: Weight map of the same shape, or None for all ones.

    Returns:
        float32 tensor of shape `(..., height, width, 2)`.
    """
    mask = ops.cast(mask, "float32")
    if weight_map is None:
        weight_map = ops.ones_like(mask)
    weight_map = ops.cast(weight_map, "float32")
    if mask.shape[-1] == 1 and len(mask.shape) >= 3 and weight_map.shape[-1] == 1:
        return ops.concatenate([mask, weight_map], axis=-1)
    return ops.stack([mask, weight_map], axis=-1)


def split_targets(y_true):
    """Splits `y_true` into the mask and the weight map.

    Args:
        y_true: Tensor of shape `(batch, height, width, 2)`.

    Returns:
        `(mask, weight_map)`, each float32 of shape `(batch, height, width)`.

    Raises:
        ValueError: if the last axis is not of size 2.
    """
    if y_true.shape[-1] is not None and y_true.shape[-1] != NUM_TARGET_CHANNELS:
        raise ValueError(
            f"y_true must have {NUM_TARGET_CHANNELS} channels (mask, weight map) on its last axis. "
            f"Received: y_true.shape={tuple(y_true.shape)}"
        )
    y_true = ops.cast(y_true, "float32")
    return y_true[..., MASK_CHANNEL], y_true[..., WEIGHT_CHANNEL]


def mask_of(y_true):
    """Returns the mask channel of `y_true`, float32 `(batch, height, width)`."""
    return split_targets(y_true)[0]


def one_hot_mask(mask, num_classes=2):
    """One-hot encodes a binary mask: `(batch, H, W)` -> `(batch, H, W, 2)` (background, pneumothorax)."""
    if num_classes != 2:
        raise ValueError(f"Only binary masks are supported. Received: num_classes={num_classes}")
    mask = ops.cast(mask, "float32")
    return ops.stack([1.0 - mask, mask], axis=-1)
