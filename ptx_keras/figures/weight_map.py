"""The paper's Fig. 4: radiograph, ground-truth mask and its spatial weight map side by side."""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

__all__ = ["plot_weight_map"]


# Above this max/min ratio the weight map is drawn on a log colour scale: the three terms of eq. 6 span
# two to three orders of magnitude on small pneumothoraces, and a linear scale would show one colour.
_LOG_SCALE_RATIO = 20.0


def _as_2d(name, array, channels_ok=False):
    """Drops a trailing axis of 1; keeps `(height, width, 3)` where `channels_ok`; refuses anything else."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2 or (channels_ok and array.ndim == 3 and array.shape[-1] == 3):
        return array
    expected = "(height, width) or (height, width, 1|3)" if channels_ok else "(height, width)"
    raise ValueError(f"{name} must be {expected}. Received: {name}.shape={array.shape}")


def plot_weight_map(image, mask, weight_map, path=None, title=None, log_scale=None):
    """Draws image / mask / weight map side by side, with a colorbar on the weight map (the paper's Fig. 4).

    Args:
        image: Radiograph `(height, width)` or `(height, width, 1|3)`, any numeric range (drawn min to max).
        mask: Binary mask `(height, width)` (or with a trailing axis of 1).
        weight_map: Weight map `(height, width)` (or with a trailing axis of 1), e.g. from
            `ptx_keras.data.spatial_weight_map(mask)`.
        path: If given, the figure is written there as PNG.
        title: Optional figure title.
        log_scale: Colour scale of the weight map: True log, False linear, None (default) log when the
            weights span more than a factor of 20.

    Returns:
        The `matplotlib.figure.Figure` (Agg canvas, no pyplot state involved).

    Raises:
        ValueError: if the arrays have the wrong rank or different heights/widths, or the weights are not
            finite and positive (a log scale needs positive weights).
    """
    image = _as_2d("image", image, channels_ok=True)
    mask = _as_2d("mask", mask)
    weight_map = _as_2d("weight_map", weight_map).astype(np.float32)
    if not image.shape[:2] == mask.shape == weight_map.shape:
        raise ValueError(
            "image, mask and weight_map must have the same height and width. Received: "
            f"image.shape={image.shape}, mask.shape={mask.shape}, weight_map.shape={weight_map.shape}"
        )
    if not np.all(np.isfinite(weight_map)) or weight_map.min() <= 0:
        raise ValueError(
            "weight_map must hold finite, positive weights. "
            f"Received: min={weight_map.min()!r}, max={weight_map.max()!r}"
        )

    low, high = float(weight_map.min()), float(weight_map.max())
    if log_scale is None:
        log_scale = high / low > _LOG_SCALE_RATIO
    norm = LogNorm(vmin=low, vmax=high) if log_scale and high > low else Normalize(vmin=low, vmax=max(high, low + 1e-6))

    figure = Figure(figsize=(12, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    if image.ndim == 3:  # imshow clips RGB floats to [0, 1]: stretch min..max like the grayscale case
        image = image.astype(np.float32)
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-12)
    axes[0].imshow(image, cmap="gray" if image.ndim == 2 else None)
    axes[0].set_title("(a) image")
    axes[1].imshow(np.asarray(mask) > 0, cmap="gray", vmin=0, vmax=1)
    axes[1].set_title("(b) ground truth")
    shown = axes[2].imshow(weight_map, cmap="jet", norm=norm, interpolation="nearest")
    axes[2].set_title(f"(c) spatial weight map ({'log' if isinstance(norm, LogNorm) else 'linear'} scale)")
    colorbar = figure.colorbar(shown, ax=axes[2], fraction=0.046, pad=0.02)
    colorbar.set_label("w_map (eq. 6)")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        figure.suptitle(title)
    if path is not None:
        figure.savefig(path, format="png")
    return figure
