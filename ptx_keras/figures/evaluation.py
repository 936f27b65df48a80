"""Evaluation figures: training curves, case overlays (paper Fig. 5), DSC histograms (Fig. 6), ROC curves,
reliability diagrams.

Every function writes one PNG with the Agg backend and returns its path.
"""

import matplotlib

__all__ = [
    "PRED_COLOR",
    "TRUTH_COLOR",
    "plot_cases",
    "plot_history",
    "plot_reliability",
    "plot_roc",
    "plot_score_histograms",
]


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

TRUTH_COLOR = "#00e000"
PRED_COLOR = "#ff2020"
_PRED_CMAP = ListedColormap([PRED_COLOR])
_DPI = 110
_METRIC_TITLES = {"loss": "loss", "dsc1": "DSC1", "mpa": "MPA", "global_dsc1": "global DSC1"}


def _save(fig, path, dpi=_DPI):
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_history(history, path, monitor="val_dsc1"):
    """Training curves: the loss and each metric per epoch, train and validation, best epoch marked.

    Args:
        history: A `history.csv` path or a pandas DataFrame with an `epoch` column (0-based, as training writes
            it) and one column per logged value (`loss`, `dsc1`, ..., `val_loss`, ...).
        path: Output PNG.
        monitor: Column whose maximum marks the best epoch (a dotted line), when present.

    Returns:
        `path`.

    Raises:
        ValueError: if the history has no `epoch` column or no numeric values to plot.
    """
    import pandas as pd

    df = pd.read_csv(history) if isinstance(history, str) else history
    if "epoch" not in df.columns:
        raise ValueError(f"history needs an 'epoch' column. Columns: {list(df.columns)}")
    numeric = [c for c in df.columns if c != "epoch" and pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any()]
    names = [c for c in numeric if not c.startswith("val_") and c != "learning_rate"]
    names += [c[4:] for c in numeric if c.startswith("val_") and c[4:] not in names]
    names.sort(key=lambda n: (n != "loss", n))
    if not names:
        raise ValueError(f"history has nothing to plot. Columns: {list(df.columns)}")
    epochs = df["epoch"].to_numpy() + 1
    best = None
    if monitor in df.columns and df[monitor].notna().any():
        best = int(epochs[int(np.nanargmax(df[monitor].to_numpy(float)))])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False, layout="constrained")
    for ax, name in zip(axes[0], names):
        if name in df:
            ax.plot(epochs, df[name], marker=".", label="train")
        if f"val_{name}" in df:
            ax.plot(epochs, df[f"val_{name}"], marker=".", label="validation")
        if best is not None:
            ax.axvline(best, color="gray", linestyle=":", linewidth=1, label=f"best epoch ({best})")
        ax.set_title(_METRIC_TITLES.get(name, name))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def _contour(ax, mask, color, linewidth=1.4):
    if mask.any():
        # Pad so that masks touching the border still get a closed contour.
        padded = np.pad(mask.astype(float), 1)
        h, w = mask.shape
        ax.contour(
            np.arange(-1, w + 1), np.arange(-1, h + 1), padded, levels=[0.5], colors=[color], linewidths=linewidth
        )
        ax.set_xlim(-0.5, w - 0.5)  # the padded grid must not widen the image's axes
        ax.set_ylim(h - 0.5, -0.5)


def plot_cases(cases, path, title=None, show_image=False):
    """Image / truth / prediction for selected cases (the paper's Fig. 5), scores written on each case.

    Each case is the image with the ground truth (green contour) and the prediction (red, filled and outlined)
    drawn over it and the case's `caption` written in its bottom-left corner; with `show_image` the plain image
    stands beside it, so that what the overlay hides (e.g. a faint pleural line) stays visible.

    Args:
        cases: List of rows, each a list of dicts with `image` (H, W) floats in [0, 1], `true` and `pred`
            (H, W) bool masks, `title` (shown above the case) and `caption` (drawn on the overlay, e.g.
            "DSC1 0.84\nHD 12.5 px").
        path: Output PNG.
        title: Optional figure title.
        show_image: Draw the plain image left of each overlay.

    Returns:
        `path`.

    Raises:
        ValueError: if `cases` is empty.
    """
    if not cases or not any(cases):
        raise ValueError("cases is empty: nothing to draw")
    nrows = len(cases)
    ncols = max(len(r) for r in cases)
    panels = 2 if show_image else 1
    fig = plt.figure(figsize=(2.2 * panels * ncols, 2.45 * nrows + 0.9), layout="constrained")
    subfigs = np.atleast_2d(fig.subfigures(nrows, ncols, wspace=0.02, hspace=0.02)).reshape(nrows, ncols)
    for i in range(nrows):
        for j in range(ncols):
            if j >= len(cases[i]):
                continue
            case = cases[i][j]
            sub = subfigs[i, j]
            axes = np.atleast_1d(sub.subplots(1, panels))
            ax_ovl = axes[-1]
            image = np.asarray(case["image"], float)
            for ax in axes:
                ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
            pred = np.asarray(case["pred"], bool)
            if pred.any():
                ax_ovl.imshow(
                    np.ma.masked_where(~pred, pred.astype(float)),
                    cmap=_PRED_CMAP,
                    vmin=0,
                    vmax=1,
                    alpha=0.3,
                    interpolation="nearest",
                )
            _contour(ax_ovl, pred, PRED_COLOR, linewidth=1.0)
            # Truth last, so that it stays visible over a wrong prediction.
            _contour(ax_ovl, np.asarray(case["true"], bool), TRUTH_COLOR, linewidth=1.6)
            if show_image:
                axes[0].set_xlabel("image", fontsize=8)
                ax_ovl.set_xlabel("truth / prediction", fontsize=8)
            if case.get("caption"):
                # Bottom left: over the abdomen, away from the apical and lateral places of a pneumothorax.
                ax_ovl.text(
                    0.03,
                    0.03,
                    case["caption"],
                    transform=ax_ovl.transAxes,
                    ha="left",
                    va="bottom",
                    fontsize=8,
                    color="white",
                    bbox=dict(boxstyle="round,pad=0.25", fc="black", alpha=0.6, lw=0),
                )
            sub.suptitle(case.get("title", ""), fontsize=9)
    handles = [
        plt.Line2D([], [], color=TRUTH_COLOR, linewidth=2, label="ground truth"),
        plt.Line2D([], [], color=PRED_COLOR, linewidth=2, label="prediction"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_score_histograms(values_by_name, path, metric="DSC", bins=10, title=None):
    """Histogram of per-image scores over intervals of [0, 1] (the paper's Fig. 6), one bar series per run.

    Bars of several series stand side by side within each interval, as in the paper; the last interval
    includes 1.0.

    Args:
        values_by_name: dict `{label: 1-D array of scores in [0, 1]}` (NaN values are left out and counted in
            the legend).
        path: Output PNG.
        metric: x-axis label.
        bins: Number of equal intervals over [0, 1] (10: [0, 0.1), ..., [0.9, 1.0]).
        title: Optional title.

    Returns:
        `path`.

    Raises:
        ValueError: if `values_by_name` is empty or `bins` < 1.
    """
    if not values_by_name:
        raise ValueError("values_by_name is empty: nothing to plot")
    if int(bins) < 1:
        raise ValueError(f"bins must be >= 1. Received: bins={bins!r}")
    edges = np.linspace(0, 1, int(bins) + 1)
    k = len(values_by_name)
    width = (edges[1] - edges[0]) * 0.85 / k
    fig, ax = plt.subplots(figsize=(6.5 + 0.8 * max(0, k - 3), 4), layout="constrained")
    for s, (label, values) in enumerate(values_by_name.items()):
        v = np.asarray(values, float)
        valid = v[np.isfinite(v)]
        counts, _ = np.histogram(np.clip(valid, 0, 1), bins=edges)
        missing = v.size - valid.size
        extra = f", {missing} undefined" if missing else ""
        left = edges[:-1] + (edges[1] - edges[0]) * 0.075 + s * width
        ax.bar(left, counts, width=width, align="edge", label=f"{label} (n={valid.size}{extra})")
    ax.set_xticks(edges)
    ax.set_xticklabels([f"{e:.1f}" for e in edges], fontsize=8)
    ax.set_xlim(0, 1)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(metric)
    ax.set_ylabel("images")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_roc(fpr, tpr, auc, path, operating_point=None, operating_label=None, title=None):
    """ROC curve of the diagnosis score, with the operating point of the thresholds used.

    Args:
        fpr, tpr: Curve points (e.g. `ptx_keras.diagnosis.roc_curve`).
        auc: Area under the curve (shown in the legend).
        path: Output PNG.
        operating_point: Optional `(fpr, tpr)` of the diagnosis rule as applied.
        operating_label: Legend text of the operating point (e.g. the thresholds).
        title: Optional title.

    Returns:
        `path`.
    """
    fig, ax = plt.subplots(figsize=(4.8, 4.8), layout="constrained")
    ax.plot(fpr, tpr, label=f"ROC (AUC = {auc:.3f})", linewidth=1.6)
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=0.8, label="chance")
    if operating_point is not None and np.all(np.isfinite(operating_point)):
        label = "operating point" + (f"\n({operating_label})" if operating_label else "")
        ax.plot(*operating_point, "o", color=PRED_COLOR, markersize=7, label=label, clip_on=False, zorder=3)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_reliability(bins, ece, path, probability_name="image-level probability", title=None):
    """Reliability diagram: per bin, the fraction of images with pneumothorax against the mean predicted probability.

    Args:
        bins: Rows with `lower`, `upper`, `n`, `mean_probability`, `fraction_positive` (a DataFrame or a list of
            dicts, as `ptx_keras.diagnosis.calibration` returns them); empty bins are not drawn.
        ece: The expected calibration error (shown in the legend; None or NaN shows "n/a").
        path: Output PNG.
        probability_name: What the probability is (the x-axis label).
        title: Optional title.

    Returns:
        `path`.

    Raises:
        ValueError: if no bin holds an image.
    """
    import pandas as pd

    df = pd.DataFrame(list(bins) if not isinstance(bins, pd.DataFrame) else bins)
    df = df[df["n"] > 0]
    if df.empty:
        raise ValueError("plot_reliability needs at least one image")
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.8, 6.0), height_ratios=(3, 1), sharex=True, layout="constrained")
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=0.8, label="perfect calibration")
    width = (df["upper"] - df["lower"]).to_numpy()
    centres = ((df["lower"] + df["upper"]) / 2).to_numpy()
    ax.bar(
        centres,
        df["fraction_positive"],
        width=width * 0.9,
        color="#4c72b0",
        alpha=0.35,
        edgecolor="#4c72b0",
        label="fraction with pneumothorax",
    )
    shown = "n/a" if ece is None or not np.isfinite(ece) else f"{ece:.3f}"
    ax.plot(
        df["mean_probability"],
        df["fraction_positive"],
        "o-",
        color=PRED_COLOR,
        markersize=5,
        label=f"per bin (ECE = {shown})",
    )
    ax.set_ylabel("fraction of images with pneumothorax")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    if title:
        ax.set_title(title, fontsize=9)
    hist.bar(centres, df["n"], width=width * 0.9, color="gray")
    hist.set_ylabel("images")
    hist.set_xlabel(probability_name)
    hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)
