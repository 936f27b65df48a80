"""Diagnostic scores of binary predictions (paper Table 3) and the ROC curve of continuous scores.

Diagnosis scores are fractions in [0, 1] (the paper's Table 3 shows percentages). A score whose denominator
is zero (e.g. PPV when nothing is predicted positive) is NaN and its name is listed in `undefined`.
"""

import numpy as np

__all__ = [
    "DIAGNOSIS_SCORES",
    "diagnosis_scores",
    "roc_auc",
    "roc_curve",
]


DIAGNOSIS_SCORES = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "youden")


def _binary_vector(values, name):
    v = np.asarray(values)
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D. Received: {name}.shape={v.shape}")
    if v.dtype != bool and not np.all((v == 0) | (v == 1)):
        raise ValueError(f"{name} must hold 0/1 values. Received values {np.unique(v)[:5].tolist()}")
    return v.astype(bool)


def _divide(num, den):
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den != 0)


def _scores_from_counts(tp, fp, tn, fn):
    sensitivity = _divide(tp, tp + fn)
    specificity = _divide(tn, tn + fp)
    return {
        "accuracy": _divide(tp + tn, tp + fp + tn + fn),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "ppv": _divide(tp, tp + fp),
        "npv": _divide(tn, tn + fn),
        "f1": _divide(2 * tp, 2 * tp + fp + fn),
        "youden": sensitivity + specificity - 1.0,
    }


def diagnosis_scores(labels, predictions):
    """Diagnostic scores of binary predictions (paper Table 3).

    Args:
        labels: Ground-truth labels, 1-D, 0/1 (1 = pneumothorax).
        predictions: Predicted labels, same length, 0/1 (e.g. `diagnose(...).label`).

    Returns:
        dict with int counts `tp`, `fp`, `tn`, `fn`, `n`; float fractions `accuracy`, `sensitivity`
        (TP/(TP+FN)), `specificity` (TN/(TN+FP)), `ppv` (TP/(TP+FP)), `npv` (TN/(TN+FN)), `f1`
        (2TP/(2TP+FP+FN)) and `youden` (sensitivity + specificity - 1); and `undefined`, the tuple of score
        names whose denominator was 0 (those scores are NaN).

    Raises:
        ValueError: if the inputs are not 1-D 0/1 sequences of equal length.
    """
    y = _binary_vector(labels, "labels")
    p = _binary_vector(predictions, "predictions")
    if y.shape != p.shape:
        raise ValueError(f"labels and predictions must have the same length. Received: {y.size} and {p.size}")
    counts = {
        "tp": int(np.count_nonzero(y & p)),
        "fp": int(np.count_nonzero(~y & p)),
        "tn": int(np.count_nonzero(~y & ~p)),
        "fn": int(np.count_nonzero(y & ~p)),
    }
    scores = {k: float(v) for k, v in _scores_from_counts(**counts).items()}
    undefined = tuple(k for k, v in scores.items() if np.isnan(v))
    return {**counts, "n": int(y.size), **scores, "undefined": undefined}


def roc_curve(labels, scores):
    """ROC curve points, one per distinct score (ties move TPR and FPR together: a diagonal segment).

    Args:
        labels: Ground-truth labels, 1-D, 0/1.
        scores: Continuous scores, higher = more likely pneumothorax (e.g. `diagnose(...).score`).

    Returns:
        `(fpr, tpr, thresholds)`: arrays starting at (0, 0) with threshold +inf; point i counts the images
        with `score >= thresholds[i]` as positive. FPR (TPR) is NaN throughout when there are no negatives
        (positives).

    Raises:
        ValueError: if the inputs are not 1-D of equal length, labels not 0/1, or scores not finite.
    """
    y = _binary_vector(labels, "labels")
    s = np.asarray(scores, dtype=float)
    if s.shape != y.shape:
        raise ValueError(f"labels and scores must have the same shape. Received: {y.shape} and {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # Last index of each run of equal scores: the curve only moves between distinct thresholds.
    ends = np.flatnonzero(np.append(np.diff(s) != 0, True))
    tps = np.cumsum(y)[ends]
    fps = (ends + 1) - tps
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    tpr = _divide(np.concatenate([[0], tps]), n_pos)
    fpr = _divide(np.concatenate([[0], fps]), n_neg)
    return fpr, tpr, np.concatenate([[np.inf], s[ends]])


def roc_auc(labels, scores):
    """Area under the ROC curve by the trapezoid rule over distinct thresholds.

    Ties count one half, so this equals the Mann-Whitney probability P(score_pos > score_neg) +
    P(score_pos = score_neg) / 2.

    Args:
        labels: Ground-truth labels, 1-D, 0/1.
        scores: Continuous scores, higher = more likely pneumothorax.

    Returns:
        float in [0, 1]; NaN when only one class is present.

    Raises:
        ValueError: as `roc_curve`.
    """
    fpr, tpr, _ = roc_curve(labels, scores)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return float("nan")
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
