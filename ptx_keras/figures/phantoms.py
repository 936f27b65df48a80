"""A page of synthetic phantoms: each radiograph with its pneumothorax contour and a caption."""

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_phantom_page", "plot_phantom_styles"]


_CONTOUR_COLOUR = "#ff3b30"


def _caption(sample_id, info):
    style = info.get("style")
    head = sample_id if style in (None, "classic") else f"{sample_id} ({style})"
    if not info.get("positive"):
        return f"{head}\nno pneumothorax"
    sides = "+".join(info.get("sides", ()))
    return f"{head}\n{info.get('kind', '?')}, {info.get('size_class', '?')} ({sides})"


def plot_phantom_page(samples, path=None, ncols=4, panel_size=2.4):
    """Draws phantoms in a grid, the true pneumothorax outlined, each captioned with its label and kind.

    Args:
        samples: Iterable of `(sample_id, image, mask, info)` as yielded by
            `ptx_keras.data.phantoms.generate_phantoms` (`info` needs `positive`; `kind`, `size_class`,
            `sides` and a randomised `style` are shown when present). Images are drawn in their full integer
            range (uint8 0..255, uint16 0..65535) so exposure differences stay visible.
        path: If given, the page is written there as PNG (parent folders are created).
        ncols: Panels per row (>= 1).
        panel_size: Inches per panel side.

    Returns:
        The `matplotlib.figure.Figure` (Agg canvas, no pyplot state involved).

    Raises:
        ValueError: If `ncols` < 1, `samples` is empty, or an image and its mask differ in shape.
    """
    if isinstance(ncols, bool) or not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer. Received: ncols={ncols!r}")
    samples = list(samples)
    if not samples:
        raise ValueError("samples must hold at least one (sample_id, image, mask, info). Received: samples=[]")
    ncols = min(int(ncols), len(samples))
    nrows = -(-len(samples) // ncols)
    figure = Figure(figsize=(panel_size * ncols, (panel_size + 0.45) * nrows))
    FigureCanvasAgg(figure)
    for index, (sample_id, image, mask, info) in enumerate(samples):
        image, mask = np.asarray(image), np.asarray(mask).astype(bool)
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"image and mask of {sample_id!r} differ in shape. Received: image.shape={image.shape}, "
                f"mask.shape={mask.shape}"
            )
        axis = figure.add_subplot(nrows, ncols, index + 1)
        top = np.iinfo(image.dtype).max if np.issubdtype(image.dtype, np.integer) else 1.0
        axis.imshow(image, cmap="gray", vmin=0, vmax=top, interpolation="nearest")
        if mask.any():
            axis.contour(mask.astype(np.float32), levels=[0.5], colors=_CONTOUR_COLOUR, linewidths=0.8)
        axis.set_title(_caption(sample_id, info), fontsize=8)
        axis.set_axis_off()
    figure.tight_layout()
    if path is not None:
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        figure.savefig(path, dpi=100)
    return figure


def plot_phantom_styles(path=None, styles=("varied", "heldout"), per_style=8, size=256, seed=0, ncols=4):
    """The docs' phantom figure: the first `per_style` phantoms of a set of each style, contours in red.

    Args:
        path: If given, the page is written there as PNG (docs/img/phantoms.png in the docs).
        styles: Phantom styles, one block of rows each, in this order.
        per_style: Phantoms per style (the first of a balanced set of that many, half positive).
        size: Image side in pixels.
        seed: The sets' seed.
        ncols: Panels per row.

    Returns:
        The `matplotlib.figure.Figure`.

    Raises:
        ValueError: If a style or another argument is invalid.
    """
    from ptx_keras.data.phantoms import generate_phantoms

    samples = []
    for style in styles:
        samples.extend(generate_phantoms(per_style, size=size, seed=seed, style=style))
    return plot_phantom_page(samples, path, ncols=ncols, panel_size=3.0)
