"""Calibration of image-level probabilities: the reliability diagram's bins, ECE, MCE and the Brier score."""

import numbers

import numpy as np
import pandas as pd

from ptx_keras.diagnosis.rule import _aux_vector
from ptx_keras.diagnosis.scores import _binary_vector, _divide

__all__ = [
    "CALIBRATION_BINS",
    "calibration",
]


CALIBRATION_BINS = 10  # equal-width bins of the reliability diagram and the ECE


def calibration(labels, probabilities, n_bins=CALIBRATION_BINS):
    """Reliability of image-level probabilities: the reliability diagram's bins and the expected calibration error.

    The probabilities are put into `n_bins` equal-width bins on [0, 1] (bin b holds `b / n_bins <= p <
    (b + 1) / n_bins`; the last bin includes 1). In each bin the mean predicted probability (confidence) is
    compared with the fraction of images that truly have a pneumothorax. ECE = sum over bins of
    `(n_b / n) * |fraction_positive_b - mean_probability_b|` (Naeini et al. 2015; Guo et al. 2017, eq. 3, with
    the positive class's probability); MCE is the largest such gap; the Brier score is the mean of
    `(p - label)^2`.

    Args:
        labels: Ground-truth labels `(n,)`, 0/1.
        probabilities: Image-level pneumothorax probabilities `(n,)` in [0, 1].
        n_bins: Number of equal-width bins (positive int).

    Returns:
        dict with `ece`, `mce`, `brier` (floats; NaN for no images), `n` and `bins`: a DataFrame with one row
        per bin and columns `lower`, `upper`, `n`, `mean_probability`, `fraction_positive` (NaN for an empty
        bin, which adds nothing to the ECE).

    Raises:
        ValueError: on mismatched lengths, labels not 0/1, probabilities outside [0, 1] or a bad `n_bins`.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int. Received: n_bins={n_bins!r}")
    y = _binary_vector(labels, "labels").astype(float)
    p = _aux_vector(probabilities, y.size, "probabilities")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.minimum((p * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    mean_p = _divide(np.bincount(index, weights=p, minlength=n_bins), counts)
    frac = _divide(np.bincount(index, weights=y, minlength=n_bins), counts)
    gaps = np.abs(frac - mean_p)
    n = y.size
    ece = float(np.nansum(counts / n * gaps)) if n else float("nan")
    mce = float(np.nanmax(gaps)) if n else float("nan")
    brier = float(np.mean((p - y) ** 2)) if n else float("nan")
    bins = pd.DataFrame(
        {"lower": edges[:-1], "upper": edges[1:], "n": counts, "mean_probability": mean_p, "fraction_positive": frac}
    )
    return {"ece": ece, "mce": mce, "brier": brier, "n": int(n), "bins": bins}
