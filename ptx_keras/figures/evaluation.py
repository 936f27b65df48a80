"""Evaluation figures: training curves, case overlays (paper Fig. 5), DSC histograms (Fig. 6), ROC curves."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TRUTH_COLOR = "#00d000"
PRED_COLOR = "#ff3030"


def _save(fig, path, dpi=110):
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_history(history, path):
    """Training curves: loss and each metric per epoch, train and validation.

    Args:
        history: A `history.csv` path or a pandas DataFrame with an `epoch` column.
        path: Output PNG.

    Returns:
        `path`.
    """
    import pandas as pd

    df = pd.read_csv(history) if isinstance(history, str) else history
    names = [c for c in df.columns if c != "epoch" and not c.startswith("val_") and c != "learning_rate"]
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.plot(df["epoch"] + 1, df[name], marker=".", label="train")
        if f"val_{name}" in df:
            ax.plot(df["epoch"] + 1, df[f"val_{name}"], marker=".", label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def _contour(ax, mask, color):
    if mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=1.2)


def plot_cases(cases, path, title=None):
    """Overlays of image / truth / prediction for selected cases (the paper's Fig. 5).

    Args:
        cases: List of rows, each a list of dicts with `image` (H, W) floats in [0, 1], `true` and `pred`
            (H, W) bool masks, and `caption` (text drawn under the panel, e.g. DSC1 and HD).
        path: Output PNG.
        title: Optional figure title.

    Returns:
        `path`.
    """
    nrows = len(cases)
    ncols = max(len(r) for r in cases) if cases else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 3.3 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, row in enumerate(cases):
        for j, case in enumerate(row):
            ax = axes[i, j]
            ax.imshow(case["image"], cmap="gray", vmin=0, vmax=1)
            if case["pred"].any():
                ax.imshow(np.ma.masked_where(~case["pred"], case["pred"]), cmap="autumn", alpha=0.3)
            _contour(ax, case["true"], TRUTH_COLOR)
            _contour(ax, case["pred"], PRED_COLOR)
            ax.set_title(case.get("title", ""), fontsize=9)
            ax.text(0.5, -0.04, case.get("caption", ""), transform=ax.transAxes, ha="center", va="top", fontsize=8)
    handles = [plt.Line2D([], [], color=TRUTH_COLOR, label="truth"), plt.Line2D([], [], color=PRED_COLOR,
                                                                                 label="prediction")]
    fig.legend(handles=handles, loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_score_histograms(values_by_name, path, metric="DSC", bins=20):
    """Histogram of per-image scores (the paper's Fig. 6), one series per run or subset.

    Args:
        values_by_name: dict `{label: 1-D array of scores in [0, 1]}` (NaN values are left out).
        path: Output PNG.
        metric: x-axis label.
        bins: Number of bins over [0, 1].

    Returns:
        `path`.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    edges = np.linspace(0, 1, bins + 1)
    for label, values in values_by_name.items():
        v = np.asarray(values, float)
        v = v[np.isfinite(v)]
        ax.hist(v, bins=edges, alpha=0.55, label=f"{label} (n={v.size})")
    ax.set_xlabel(metric)
    ax.set_ylabel("images")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_roc(fpr, tpr, auc, path, operating_point=None):
    """ROC curve of the diagnosis score, with the chosen operating point.

    Args:
        fpr, tpr: Curve points.
        auc: Area under the curve (shown in the legend).
        path: Output PNG.
        operating_point: Optional `(fpr, tpr)` of the thresholds used.

    Returns:
        `path`.
    """
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=0.8)
    if operating_point is not None:
        ax.plot(*operating_point, "o", color=PRED_COLOR, label="operating point")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)
