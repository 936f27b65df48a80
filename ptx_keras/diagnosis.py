"""The paper's diagnosis rule (predicted mask -> pneumothorax yes/no), its scores, ROC and threshold search.

Rule (paper, "Automated classification for pneumothorax diagnosis"): an image is diagnosed pneumothorax when
its predicted mask has **more than** `min_area` pixels (50 in the paper). A pixel belongs to the predicted
mask when its PTX probability is strictly above `mask_threshold` (0.5: the softmax argmax, ties to the
background, as `ptx_keras.metrics.DSC1`). `min_area` is expressed at `reference_size` x `reference_size`
(256, the paper's training size) and scaled by area for other prediction sizes:
`threshold_area = min_area * H * W / reference_size**2` (DESIGN.md §1).

Diagnosis scores are fractions in [0, 1] (the paper's Table 3 shows percentages). A score whose denominator
is zero (e.g. PPV when nothing is predicted positive) is NaN and its name is listed in `undefined`.
"""

import dataclasses
import numbers

import numpy as np
import pandas as pd

from ptx_keras.constants import (
    DIAGNOSIS_MIN_AREA,
    DIAGNOSIS_REFERENCE_SIZE,
    MASK_THRESHOLD,
    NUM_CLASSES,
    PTX_CLASS,
    SEARCH_MASK_THRESHOLDS,
    SEARCH_MIN_AREAS,
)

DIAGNOSIS_SCORES = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "youden")
OBJECTIVES = ("f1", "youden")
_AREA_CHUNK = 64  # images thresholded at once: bounds the temporary boolean arrays


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """Result of `diagnose`: scalars for one image, arrays `(batch,)` for a batch.

    Attributes:
        label: 1 (pneumothorax) when `area > threshold_area`, else 0 (int, or int array).
        area: Predicted pneumothorax pixels at the prediction resolution.
        score: Continuous pneumothorax score for ROC analysis: `(area + max_prob / 2) * reference_size**2 /
            (H * W)`, i.e. the predicted area in reference pixels, with half a prediction pixel of the
            maximum PTX probability added so that images with equal areas (notably the many with none) are
            ranked by their most confident pixel rather than tied. The order it induces is (area, max_prob)
            lexicographic within one image size.
        threshold_area: `min_area` scaled to the prediction size, `min_area * H * W / reference_size**2`.
        max_prob: Largest PTX probability in the image.
    """

    label: object
    area: object
    score: object
    threshold_area: float
    max_prob: object


def _check_number(value, name, low, high=None, high_inclusive=False):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value) and value >= low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        bound = "" if high is None else (f" and <= {high}" if high_inclusive else f" and < {high}")
        raise ValueError(f"{name} must be a number >= {low}{bound}. Received: {name}={value!r}")
    return float(value)


def _check_reference_size(reference_size):
    if not isinstance(reference_size, numbers.Integral) or isinstance(reference_size, bool) or reference_size < 1:
        raise ValueError(f"reference_size must be a positive int. Received: reference_size={reference_size!r}")
    return int(reference_size)


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """The diagnosis rule's numbers: the one definition that configuration, evaluation and every export read.

    A pixel is predicted pneumothorax when its probability is strictly above `mask_threshold`; an image is
    diagnosed pneumothorax when more than `min_area` such pixels are predicted, `min_area` being expressed at
    `reference_size` x `reference_size` and scaled by area to the prediction size (`min_pixels`).

    Attributes:
        mask_threshold: In [0, 1) (paper: 0.5, the softmax argmax).
        min_area: Pixels at `reference_size`^2, >= 0 (paper: 50 at 256 x 256).
        reference_size: Side of the square image at which `min_area` is expressed (positive int).

    Raises:
        ValueError: naming the first invalid value.
    """

    mask_threshold: float = MASK_THRESHOLD
    min_area: float = DIAGNOSIS_MIN_AREA
    reference_size: int = DIAGNOSIS_REFERENCE_SIZE

    KEYS = ("mask_threshold", "min_area", "reference_size")

    def __post_init__(self):
        object.__setattr__(self, "mask_threshold", _check_number(self.mask_threshold, "mask_threshold", 0, 1))
        object.__setattr__(self, "min_area", _check_number(self.min_area, "min_area", 0))
        object.__setattr__(self, "reference_size", _check_reference_size(self.reference_size))

    def min_pixels(self, height, width=None):
        """`min_area` scaled to a `height x width` prediction (`width` defaults to `height`):
        `min_area * height * width / reference_size**2`."""
        width = height if width is None else width
        return self.min_area * (height * width) / self.reference_size**2

    def to_dict(self):
        """`{"mask_threshold", "min_area", "reference_size"}` as float, float, int (JSON-ready)."""
        return {k: getattr(self, k) for k in self.KEYS}

    def replace(self, **changes):
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, mapping, where="thresholds"):
        """Reads thresholds from a mapping (a JSON file, export metadata, a config section).

        Args:
            mapping: Has the keys of `KEYS` (others are ignored: files also record how they were chosen).
            where: What the mapping came from (a file path, a config key), named in errors.

        Returns:
            `Thresholds`.

        Raises:
            ValueError: naming `where`, for a non-mapping, a missing key or an invalid value.
        """
        if not isinstance(mapping, dict):
            raise ValueError(f"{where}: expected a mapping with {list(cls.KEYS)}. Received: {mapping!r}")
        missing = [k for k in cls.KEYS if k not in mapping]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}; expected {list(cls.KEYS)}")
        try:
            return cls(**{k: mapping[k] for k in cls.KEYS})
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None


def ptx_probabilities(prob_map):
    """Brings probability maps to `(batch, height, width)` PTX probabilities.

    Args:
        prob_map: `(H, W)` PTX probabilities or a binary mask; `(H, W, 2)` softmax or `(H, W, 1)`; or batched
            `(batch, H, W)`, `(batch, H, W, 2)`, `(batch, H, W, 1)`. A 3-D array whose last axis has size 1 or
            2 is read as one image with channels, any other 3-D array as a batch.

    Returns:
        `(probs, batched)`: float array `(batch, H, W)` and whether the input was batched.

    Raises:
        ValueError: on other shapes or values outside [0, 1].
    """
    p = np.asarray(prob_map)
    if p.ndim == 2:
        p, batched = p[None, ..., None], False
    elif p.ndim == 3 and p.shape[-1] in (1, NUM_CLASSES):
        p, batched = p[None], False
    elif p.ndim == 3:
        p, batched = p[..., None], True
    elif p.ndim == 4 and p.shape[-1] in (1, NUM_CLASSES):
        batched = True
    else:
        raise ValueError(
            "prob_map must be (H, W), (H, W, 2), (H, W, 1), (batch, H, W), (batch, H, W, 2) or (batch, H, W, 1). "
            f"Received: prob_map.shape={np.shape(prob_map)}"
        )
    p = p[..., PTX_CLASS] if p.shape[-1] == NUM_CLASSES else p[..., 0]
    if p.dtype == bool:
        p = p.astype(np.float32)
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError(
            f"prob_map must hold probabilities in [0, 1]. Received values between {p.min()} and {p.max()}"
        )
    return p, batched


def diagnose(prob_map, min_area=None, mask_threshold=None, reference_size=None, *, thresholds=None):
    """Diagnoses pneumothorax from predicted probabilities with the paper's area rule.

    Args:
        prob_map: PTX probabilities or binary masks, `(H, W)`, `(H, W, 2)` softmax, or batched
            `(batch, H, W)` / `(batch, H, W, 2)` (see `ptx_probabilities`).
        min_area: Pneumothorax when the predicted area is strictly larger than this many pixels at
            `reference_size` x `reference_size` (paper: 50).
        mask_threshold: A pixel is predicted pneumothorax when its probability is strictly above this, in [0, 1).
        reference_size: Side of the square image at which `min_area` is expressed.
        thresholds: A `Thresholds` holding all three (default: the paper's); the individual arguments, when
            given, override its fields.

    Returns:
        `Diagnosis` with scalar fields for one image, `(batch,)` arrays for a batch.

    Raises:
        ValueError: on invalid shapes, probabilities or arguments.
    """
    if thresholds is None:
        thresholds = Thresholds()
    elif not isinstance(thresholds, Thresholds):
        raise ValueError(f"thresholds must be a Thresholds. Received: thresholds={thresholds!r}")
    given = {"min_area": min_area, "mask_threshold": mask_threshold, "reference_size": reference_size}
    given = {k: v for k, v in given.items() if v is not None}
    if given:
        thresholds = thresholds.replace(**given)
    probs, batched = ptx_probabilities(prob_map)
    _, h, w = probs.shape
    area = np.count_nonzero(probs > thresholds.mask_threshold, axis=(1, 2))
    max_prob = probs.reshape(len(probs), -1).max(axis=1) if probs.size else np.zeros(len(probs))
    threshold_area = thresholds.min_pixels(h, w)
    label = (area > threshold_area).astype(int)
    score = (area + 0.5 * max_prob) * (thresholds.reference_size**2 / (h * w))
    if batched:
        return Diagnosis(label, area, score, threshold_area, max_prob)
    return Diagnosis(int(label[0]), int(area[0]), float(score[0]), threshold_area, float(max_prob[0]))


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


def areas_at_thresholds(prob_maps, mask_thresholds=SEARCH_MASK_THRESHOLDS):
    """Predicted areas of every image at every mask threshold (one pass over each image per threshold).

    Args:
        prob_maps: A batch array accepted by `ptx_probabilities` (`(batch, H, W)` or `(batch, H, W, 2)`), or
            an iterable of single-image maps (`(H, W)` or `(H, W, 2)`; sizes may differ), e.g. a generator
            over a large validation set.
        mask_thresholds: Probabilities strictly above which a pixel counts, each in [0, 1).

    Returns:
        `(areas, pixels)`: int array `(n, len(mask_thresholds))` of predicted pixels and int array `(n,)` of
        H*W per image.

    Raises:
        ValueError: on invalid maps or thresholds.
    """
    thresholds = [_check_number(t, "mask_threshold", 0, 1) for t in mask_thresholds]
    if not thresholds:
        raise ValueError("mask_thresholds is empty")
    if isinstance(prob_maps, np.ndarray):
        probs, batched = ptx_probabilities(prob_maps)
        if not batched:
            raise ValueError(
                "prob_maps must be a batch (batch, H, W[, 2]) or an iterable of maps. "
                f"Received one image of shape {prob_maps.shape}"
            )
        chunks = (probs[i : i + _AREA_CHUNK] for i in range(0, len(probs), _AREA_CHUNK))
    else:
        chunks = (ptx_probabilities(p)[0] for p in prob_maps)
    areas, pixels = [], []
    for chunk in chunks:
        areas.append(np.stack([np.count_nonzero(chunk > t, axis=(1, 2)) for t in thresholds], axis=1))
        pixels.append(np.full(len(chunk), chunk.shape[1] * chunk.shape[2]))
    if not areas:
        return np.zeros((0, len(thresholds)), dtype=int), np.zeros(0, dtype=int)
    return np.concatenate(areas), np.concatenate(pixels)


def search_thresholds(
    labels,
    prob_maps=None,
    *,
    areas=None,
    pixels=None,
    mask_thresholds=SEARCH_MASK_THRESHOLDS,
    min_areas=SEARCH_MIN_AREAS,
    objective="f1",
    reference_size=DIAGNOSIS_REFERENCE_SIZE,
):
    """Grid search of the diagnosis rule's `(mask_threshold, min_area)` on the VALIDATION split.

    Use it on validation predictions only and apply the chosen pair unchanged to the test split; tuning on
    test would inflate the reported diagnosis scores. The areas are computed once per image and mask
    threshold; all `min_area` values are then compared at once.

    Ties in the objective go to the pair closest to the paper's (0.5, 50): smallest |mask_threshold - 0.5|,
    then smallest |min_area - 50|, then the smaller values. Undefined objective values (NaN) never win.

    Args:
        labels: Ground-truth labels `(n,)`, 0/1.
        prob_maps: Probability maps, as `areas_at_thresholds` accepts; or None when `areas` is given.
        areas: Precomputed `(n, len(mask_thresholds))` predicted pixel counts (from `areas_at_thresholds`).
        pixels: With `areas`: H*W, an int or `(n,)` array.
        mask_thresholds: Candidate mask thresholds, in [0, 1).
        min_areas: Candidate minimum areas in pixels at `reference_size` (non-negative).
        objective: "f1" or "youden" (sensitivity + specificity - 1).
        reference_size: Side of the square image at which `min_areas` are expressed.

    Returns:
        dict with `mask_threshold`, `min_area`, `objective` (its name), `value` (the best objective value)
        and `grid`: a DataFrame with one row per pair and columns `mask_threshold`, `min_area`, `tp`, `fp`,
        `tn`, `fn` and the `DIAGNOSIS_SCORES`.

    Raises:
        ValueError: on an unknown objective, empty or invalid grids, mismatched lengths, or when neither or
            both of `prob_maps` and `areas` are given.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}. Received: objective={objective!r}")
    reference_size = _check_reference_size(reference_size)
    y = _binary_vector(labels, "labels")
    mask_thresholds = [_check_number(t, "mask_threshold", 0, 1) for t in mask_thresholds]
    min_areas = np.array([_check_number(a, "min_area", 0) for a in min_areas])
    if not mask_thresholds or not min_areas.size:
        raise ValueError("mask_thresholds and min_areas must not be empty")
    if (prob_maps is None) == (areas is None):
        raise ValueError("Pass exactly one of prob_maps and areas")
    if prob_maps is not None:
        areas, pixels = areas_at_thresholds(prob_maps, mask_thresholds)
    elif pixels is None:
        raise ValueError("pixels (H*W per image) is required with areas")
    areas = np.asarray(areas)
    if areas.shape != (y.size, len(mask_thresholds)):
        raise ValueError(
            f"areas must have shape (n, len(mask_thresholds)) = {(y.size, len(mask_thresholds))}. "
            f"Received: {areas.shape}"
        )
    pixels = np.broadcast_to(np.asarray(pixels, dtype=float), (y.size,))
    # Same expression as `diagnose`'s threshold_area so that the chosen pair reproduces exactly.
    threshold_area = min_areas[:, None] * pixels[None, :] / reference_size**2  # (M, n)
    predicted = areas[None, :, :] > threshold_area[:, :, None]  # (M, n, T)
    pos = y[None, :, None]
    tp = np.count_nonzero(predicted & pos, axis=1)  # (M, T)
    fp = np.count_nonzero(predicted & ~pos, axis=1)
    fn = int(y.sum()) - tp
    tn = int((~y).sum()) - fp
    scores = _scores_from_counts(tp, fp, tn, fn)
    mt_grid, ma_grid = np.meshgrid(mask_thresholds, min_areas)  # (M, T)
    grid = pd.DataFrame(
        {
            "mask_threshold": mt_grid.ravel(),
            "min_area": ma_grid.ravel(),
            "tp": tp.ravel(),
            "fp": fp.ravel(),
            "tn": tn.ravel(),
            "fn": fn.ravel(),
            **{k: v.ravel() for k, v in scores.items()},
        }
    )
    value = np.nan_to_num(grid[objective].to_numpy(), nan=-np.inf)
    # np.lexsort sorts by the last key first.
    order = np.lexsort(
        (
            grid["min_area"],
            grid["mask_threshold"],
            np.abs(grid["min_area"] - DIAGNOSIS_MIN_AREA),
            np.abs(grid["mask_threshold"] - MASK_THRESHOLD),
            -value,
        )
    )
    best = grid.iloc[order[0]]
    return {
        "mask_threshold": float(best["mask_threshold"]),
        "min_area": float(best["min_area"]),
        "objective": objective,
        "value": float(best[objective]),
        "grid": grid.sort_values(["mask_threshold", "min_area"], ignore_index=True),
    }
