"""The paper's diagnosis rule (predicted mask -> pneumothorax yes/no), its scores, ROC and threshold search.

Rule (paper, "Automated classification for pneumothorax diagnosis"): an image is diagnosed pneumothorax when
its predicted mask has **more than** `min_area` pixels (50 in the paper). A pixel belongs to the predicted
mask when its PTX probability is strictly above `mask_threshold` (0.5: the softmax argmax, ties to the
background, as `ptx_keras.metrics.DSC1`). `min_area` is expressed at `reference_size` x `reference_size`
(256, the paper's training size) and scaled by area for other prediction sizes:
`threshold_area = min_area * H * W / reference_size**2` (DESIGN.md §1).

Two extensions (`Thresholds`): the triplet rule of the SIIM-ACR winners (a higher `top_threshold` decides the
diagnosis, the mask of a positive image is drawn at `mask_threshold`), and a gate by the model's image-level
probability (`gate`: `area`, `aux` or `both`). Both are chosen on the validation split by `search_thresholds`.
`calibration` scores image-level probabilities (reliability diagram, expected calibration error).

Diagnosis scores are fractions in [0, 1] (the paper's Table 3 shows percentages). A score whose denominator
is zero (e.g. PPV when nothing is predicted positive) is NaN and its name is listed in `undefined`.
"""

import dataclasses
import numbers
import typing

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

__all__ = [
    "AUX_QUANTILES",
    "AUX_THRESHOLD",
    "CALIBRATION_BINS",
    "DIAGNOSIS_SCORES",
    "FORMS",
    "GATES",
    "OBJECTIVES",
    "SEARCH_AUX_THRESHOLDS",
    "Diagnosis",
    "Thresholds",
    "areas_at_thresholds",
    "aux_threshold_candidates",
    "calibration",
    "diagnose",
    "diagnosis_scores",
    "dice_counts_at_thresholds",
    "gate_labels",
    "ptx_probabilities",
    "roc_auc",
    "roc_curve",
    "search_thresholds",
]


DIAGNOSIS_SCORES = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "youden")
# What a threshold search maximises: a diagnosis score, or the SIIM-ACR mean Dice (empty = 1) of the final masks.
OBJECTIVES = ("f1", "youden", "siim_dice")
FORMS = ("pair", "triplet")  # the two-number rule, or the triplet rule (Thresholds.top_threshold)
GATES = ("area", "aux", "both")  # what diagnoses an image (Thresholds.gate)
AUX_THRESHOLD = 0.5  # default image-level probability threshold of the aux gate
CALIBRATION_BINS = 10  # equal-width bins of the reliability diagram and the ECE
SEARCH_AUX_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
AUX_QUANTILES = 40  # the search also tries the 2.5 %, 5 %, ... 97.5 % quantiles of the validation aux probabilities
_AREA_CHUNK = 64  # images thresholded at once: bounds the temporary boolean arrays
_AUX_CHUNK = 8  # aux thresholds whose mean Dice is computed at once (bounds a float copy of the verdicts)


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """Result of `diagnose`: scalars for one image, arrays `(batch,)` for a batch.

    Attributes:
        label: 1 (pneumothorax) when the rule in force says so (`Thresholds`), else 0 (int, or int array).
        area: Predicted pneumothorax pixels (probability > `mask_threshold`) at the prediction resolution: the
            raw mask's area.
        score: Continuous pneumothorax score for ROC analysis: `(decision_area + max_prob / 2) *
            reference_size**2 / (H * W)`, i.e. the area deciding the diagnosis in reference pixels, with half a
            prediction pixel of the maximum PTX probability added so that images with equal areas (notably the
            many with none) are ranked by their most confident pixel rather than tied. The order it induces is
            (decision_area, max_prob) lexicographic within one image size.
        threshold_area: `min_area` scaled to the prediction size, `min_area * H * W / reference_size**2`.
        max_prob: Largest PTX probability in the image.
        decision_area: Pixels with probability > `Thresholds.decision_threshold` (the `top_threshold` of the
            triplet rule; equal to `area` under the two-number rule).
        aux_probability: The model's image-level probability when given, else None.
    """

    label: object
    area: object
    score: object
    threshold_area: float
    max_prob: object
    decision_area: object = None
    aux_probability: object = None


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

    The paper's two-number rule (the default): a pixel is predicted pneumothorax when its probability is
    strictly above `mask_threshold`; an image is diagnosed pneumothorax when more than `min_area` such pixels
    are predicted, `min_area` being expressed at `reference_size` x `reference_size` and scaled by area to the
    prediction size (`min_pixels`).

    The triplet rule (`top_threshold` set; the SIIM-ACR winners'): an image is diagnosed pneumothorax when more
    than `min_area` pixels have a probability strictly above `top_threshold`; its mask is then drawn at the
    lower `mask_threshold` (the mask of an image diagnosed negative is empty). `top_threshold ==
    mask_threshold` is the two-number rule, so it is stored as None.

    The gate (`gate`): `"area"` diagnoses with the area rule above; `"aux"` with the model's image-level
    pneumothorax probability instead (positive when it is strictly above `aux_threshold`; a model with an
    auxiliary head, `model.options.aux_head`); `"both"` needs both to say pneumothorax.

    Attributes:
        mask_threshold: In [0, 1) (paper: 0.5, the softmax argmax).
        min_area: Pixels at `reference_size`^2, >= 0 (paper: 50 at 256 x 256).
        reference_size: Side of the square image at which `min_area` is expressed (positive int).
        top_threshold: None (the two-number rule), or the decision threshold of the triplet rule, in
            [mask_threshold, 1).
        gate: `"area"`, `"aux"` or `"both"` (`GATES`).
        aux_threshold: In [0, 1): the image-level probability above which the aux gate says pneumothorax.

    Raises:
        ValueError: naming the first invalid value.
    """

    mask_threshold: float = MASK_THRESHOLD
    min_area: float = DIAGNOSIS_MIN_AREA
    reference_size: int = DIAGNOSIS_REFERENCE_SIZE
    top_threshold: typing.Optional[float] = None
    gate: str = "area"
    aux_threshold: float = AUX_THRESHOLD

    KEYS = ("mask_threshold", "min_area", "reference_size")  # required in every mapping
    OPTIONAL_KEYS = ("top_threshold", "gate", "aux_threshold")  # written only when not at their defaults
    ALL_KEYS = KEYS + OPTIONAL_KEYS

    def __post_init__(self):
        object.__setattr__(self, "mask_threshold", _check_number(self.mask_threshold, "mask_threshold", 0, 1))
        object.__setattr__(self, "min_area", _check_number(self.min_area, "min_area", 0))
        object.__setattr__(self, "reference_size", _check_reference_size(self.reference_size))
        top = self.top_threshold
        if top is not None:
            top = _check_number(top, "top_threshold", 0, 1)
            if top < self.mask_threshold:
                raise ValueError(
                    "top_threshold decides the diagnosis and must be >= mask_threshold, which draws the mask. "
                    f"Received: top_threshold={top!r}, mask_threshold={self.mask_threshold!r}"
                )
            top = None if top == self.mask_threshold else top  # the two-number rule, written one way
        object.__setattr__(self, "top_threshold", top)
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}. Received: gate={self.gate!r}")
        object.__setattr__(self, "aux_threshold", _check_number(self.aux_threshold, "aux_threshold", 0, 1))

    @property
    def form(self):
        """`"triplet"` when a `top_threshold` decides the diagnosis, else `"pair"`."""
        return "pair" if self.top_threshold is None else "triplet"

    @property
    def decision_threshold(self):
        """The probability above which pixels count towards the diagnosis: `top_threshold` or `mask_threshold`."""
        return self.mask_threshold if self.top_threshold is None else self.top_threshold

    @property
    def uses_aux(self):
        """Whether the diagnosis needs the model's image-level (aux) probability."""
        return self.gate != "area"

    def min_pixels(self, height, width=None):
        """`min_area` scaled to a `height x width` prediction (`width` defaults to `height`):
        `min_area * height * width / reference_size**2`."""
        width = height if width is None else width
        return self.min_area * (height * width) / self.reference_size**2

    def to_dict(self):
        """JSON-ready: `mask_threshold`, `min_area`, `reference_size`, and each of `OPTIONAL_KEYS` that is not at
        its default (so the paper's rule writes the same three numbers as before the triplet rule existed)."""
        out = {k: getattr(self, k) for k in self.KEYS}
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        out.update({k: getattr(self, k) for k in self.OPTIONAL_KEYS if getattr(self, k) != defaults[k]})
        return out

    def describe(self):
        """The rule in words, e.g. `more than 50 px at 256x256 above 0.5`."""
        area = f"more than {self.min_area:g} px at {self.reference_size}x{self.reference_size} above"
        if self.top_threshold is None:
            rule = f"{area} {self.mask_threshold:g}"
        else:
            rule = f"{area} {self.top_threshold:g} (mask drawn above {self.mask_threshold:g})"
        aux = f"aux probability > {self.aux_threshold:g}"
        if self.gate == "aux":  # the areas do not decide; the mask threshold still draws the mask
            return f"{aux} (mask drawn above {self.mask_threshold:g})"
        return rule if self.gate == "area" else f"{rule}, and {aux}"

    def replace(self, **changes):
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, mapping, where="thresholds"):
        """Reads thresholds from a mapping (a JSON file, export metadata, a config section).

        Args:
            mapping: Has the keys of `KEYS`, optionally those of `OPTIONAL_KEYS` (others are ignored: files also
                record how they were chosen).
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
            return cls(**{k: mapping[k] for k in cls.ALL_KEYS if k in mapping})
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


def _aux_vector(aux_probability, n, name="aux_probability"):
    a = np.asarray(aux_probability, dtype=np.float64).reshape(-1)
    if a.size != n:
        raise ValueError(f"{name} must hold one probability per image ({n}). Received shape {np.shape(aux_probability)}")
    if a.size and not (np.all(np.isfinite(a)) and a.min() >= 0 and a.max() <= 1):
        raise ValueError(f"{name} must hold probabilities in [0, 1]. Received values between {a.min()} and {a.max()}")
    return a


def gate_labels(area_positive, thresholds, aux_probability=None):
    """Combines the area rule's verdicts with the aux gate, as `thresholds.gate` says.

    Args:
        area_positive: Boolean array: the area rule's verdict per image (any shape ending in the image axis).
        thresholds: The `Thresholds`.
        aux_probability: `(n,)` image-level probabilities (needed unless `thresholds.gate == "area"`).

    Returns:
        Boolean array like `area_positive`.

    Raises:
        ValueError: when the gate needs `aux_probability` and it is missing.
    """
    if thresholds.gate == "area":
        return area_positive
    if aux_probability is None:
        raise ValueError(
            f"thresholds.gate={thresholds.gate!r} needs the model's image-level probability (aux_probability): "
            "a model built with model.options.aux_head: true"
        )
    aux_positive = np.asarray(aux_probability) > thresholds.aux_threshold
    return aux_positive if thresholds.gate == "aux" else (area_positive & aux_positive)


def diagnose(prob_map, min_area=None, mask_threshold=None, reference_size=None, *, thresholds=None,
             aux_probability=None):
    """Diagnoses pneumothorax from predicted probabilities with the rule of `thresholds`.

    The paper's rule by default (more than `min_area` pixels above `mask_threshold`); the triplet rule when
    `thresholds.top_threshold` is set (more than `min_area` pixels above `top_threshold`); gated by the
    image-level probability when `thresholds.gate` says so (see `Thresholds`).

    Args:
        prob_map: PTX probabilities or binary masks, `(H, W)`, `(H, W, 2)` softmax, or batched
            `(batch, H, W)` / `(batch, H, W, 2)` (see `ptx_probabilities`).
        min_area: Pneumothorax when the predicted area is strictly larger than this many pixels at
            `reference_size` x `reference_size` (paper: 50).
        mask_threshold: A pixel is predicted pneumothorax when its probability is strictly above this, in [0, 1).
        reference_size: Side of the square image at which `min_area` is expressed.
        thresholds: A `Thresholds` holding the rule (default: the paper's); the individual arguments, when
            given, override its fields.
        aux_probability: The model's image-level probability: a number for one image, `(batch,)` or
            `(batch, 1)` for a batch; required when `thresholds.gate` is `"aux"` or `"both"`.

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
    n, h, w = probs.shape
    aux = None if aux_probability is None else _aux_vector(aux_probability, n)
    area = np.count_nonzero(probs > thresholds.mask_threshold, axis=(1, 2))
    decision_area = area
    if thresholds.top_threshold is not None:
        decision_area = np.count_nonzero(probs > thresholds.top_threshold, axis=(1, 2))
    max_prob = probs.reshape(len(probs), -1).max(axis=1) if probs.size else np.zeros(len(probs))
    threshold_area = thresholds.min_pixels(h, w)
    label = gate_labels(decision_area > threshold_area, thresholds, aux).astype(int)
    score = (decision_area + 0.5 * max_prob) * (thresholds.reference_size**2 / (h * w))
    if batched:
        return Diagnosis(label, area, score, threshold_area, max_prob, decision_area, aux)
    return Diagnosis(int(label[0]), int(area[0]), float(score[0]), threshold_area, float(max_prob[0]),
                     int(decision_area[0]), None if aux is None else float(aux[0]))


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
    bins = pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "n": counts, "mean_probability": mean_p,
                         "fraction_positive": frac})
    return {"ece": ece, "mce": mce, "brier": brier, "n": int(n), "bins": bins}


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


def aux_threshold_candidates(aux, quantiles=AUX_QUANTILES):
    """Candidate aux thresholds for a search: `SEARCH_AUX_THRESHOLDS` and the `k / quantiles` quantiles
    (k = 1 .. quantiles - 1) of the given image-level probabilities (validation images), sorted, distinct, in
    [0, 1).

    A head trained briefly or on imbalanced data can rank images well (high ROC AUC) with every probability far
    below 0.1; the quantiles keep the search able to find its operating point.
    """
    a = np.asarray(aux, dtype=float).reshape(-1)
    grid = list(SEARCH_AUX_THRESHOLDS)
    if a.size:
        grid += np.quantile(a, np.arange(1, quantiles) / quantiles).tolist()
    return sorted({float(t) for t in grid if 0 <= t < 1})


def dice_counts_at_thresholds(prob_maps, true_masks, mask_thresholds=SEARCH_MASK_THRESHOLDS):
    """What the SIIM-ACR Dice of every image needs at every mask threshold, in one pass per threshold.

    Args:
        prob_maps: A batch `(n, H, W)` or `(n, H, W, 2)` accepted by `ptx_probabilities`.
        true_masks: `(n, H, W)` ground-truth masks (nonzero = pneumothorax).
        mask_thresholds: Probabilities strictly above which a pixel counts, each in [0, 1).

    Returns:
        dict of int arrays: `areas` `(n, T)` predicted pixels, `intersections` `(n, T)` predicted pixels that
        are true, `true_areas` `(n,)` and `pixels` `(n,)` (H*W).

    Raises:
        ValueError: on invalid maps, masks or thresholds.
    """
    thresholds = [_check_number(t, "mask_threshold", 0, 1) for t in mask_thresholds]
    if not thresholds:
        raise ValueError("mask_thresholds is empty")
    probs, batched = ptx_probabilities(prob_maps)
    true = np.asarray(true_masks)
    if not batched or true.shape != probs.shape:
        raise ValueError(
            "prob_maps must be a batch (n, H, W[, 2]) and true_masks (n, H, W) of the same size. Received: "
            f"{np.shape(prob_maps)} and {true.shape}"
        )
    true = true != 0
    areas, inter = [], []
    for i in range(0, len(probs), _AREA_CHUNK):
        chunk, t = probs[i : i + _AREA_CHUNK], true[i : i + _AREA_CHUNK]
        above = [chunk > th for th in thresholds]
        areas.append(np.stack([np.count_nonzero(a, axis=(1, 2)) for a in above], axis=1))
        inter.append(np.stack([np.count_nonzero(a & t, axis=(1, 2)) for a in above], axis=1))
    n = len(probs)
    empty = np.zeros((0, len(thresholds)), dtype=int)
    return {
        "areas": np.concatenate(areas) if areas else empty,
        "intersections": np.concatenate(inter) if inter else empty,
        "true_areas": np.count_nonzero(true, axis=(1, 2)),
        "pixels": np.full(n, probs.shape[1] * probs.shape[2]),
    }


def _dice_tables(areas, intersections, true_areas):
    """Per-image Dice if the mask is kept `(n, T)` and if it is emptied `(n,)` (empty = 1, as SIIM-ACR)."""
    areas, inter = np.asarray(areas, dtype=float), np.asarray(intersections, dtype=float)
    true = np.asarray(true_areas, dtype=float)
    total = areas + true[:, None]
    kept = np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1.0))
    return kept, (true == 0).astype(float)


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
    form="pair",
    top_thresholds=None,
    levels=None,
    true_masks=None,
    intersections=None,
    true_areas=None,
    aux=None,
    gate="area",
    aux_thresholds=None,
):
    """Grid search of the diagnosis rule on the VALIDATION split: the paper's pair or the triplet rule.

    Use it on validation predictions only and apply the chosen rule unchanged to the test split; tuning on
    test would inflate the reported scores. The areas are computed once per image and probability level; all
    candidates are then compared at once (NumPy broadcasting, no loop over the grid).

    * `form="pair"`: `(mask_threshold, min_area)`, the paper's rule. Ties in the objective go to the pair
      closest to the paper's (0.5, 50): smallest |mask_threshold - 0.5|, then smallest |min_area - 50|, then
      the smaller values.
    * `form="triplet"`: `(top_threshold, min_area, mask_threshold)` with `mask_threshold <= top_threshold`: the
      diagnosis is decided by `top_threshold` and `min_area`, the mask of a positive image is drawn at
      `mask_threshold`. Ties in the objective go to the higher SIIM-ACR mean Dice (so an F1 or Youden search
      still chooses the mask threshold, which does not change the diagnosis), then towards the paper's
      values as above (|mask_threshold - 0.5|, |top_threshold - 0.5|, |min_area - 50|), then the smaller
      values. Its rows with `top_threshold == mask_threshold` are the pair grid's.
    * `gate="aux"` or `"both"` adds an `aux_threshold` axis (`aux_thresholds`, by default
      `aux_threshold_candidates(aux)`: the fixed grid and the quantiles of the given probabilities, so that an
      uncalibrated head whose probabilities all lie below 0.1 still gets usable candidates): the image-level
      probability decides (aux), or must agree with the area rule (both); ties go towards 0.5.

    Undefined objective values (NaN) never win.

    Args:
        labels: Ground-truth labels `(n,)`, 0/1.
        prob_maps: Probability maps, as `areas_at_thresholds` accepts (a batch array when `true_masks` is
            given); or None when `areas` is given.
        areas: Precomputed `(n, len(levels))` predicted pixel counts (from `areas_at_thresholds` or
            `dice_counts_at_thresholds`).
        pixels: With `areas`: H*W, an int or `(n,)` array.
        mask_thresholds: Candidate mask thresholds, in [0, 1).
        min_areas: Candidate minimum areas in pixels at `reference_size` (non-negative).
        objective: "f1", "youden" (sensitivity + specificity - 1) or "siim_dice" (the SIIM-ACR mean Dice of the
            final masks, empty = 1; needs the truths).
        reference_size: Side of the square image at which `min_areas` are expressed.
        form: "pair" or "triplet".
        top_thresholds: The triplet's candidate decision thresholds (default: `SEARCH_MASK_THRESHOLDS`).
        levels: The probability levels at which `areas` / `intersections` were counted (default:
            `mask_thresholds`, plus `top_thresholds` for the triplet, sorted); must hold every candidate.
        true_masks: With `prob_maps`: `(n, H, W)` truths, for the Dice (required by the triplet form and the
            siim_dice objective).
        intersections: With `areas`: `(n, len(levels))` predicted pixels that are true.
        true_areas: With `areas`: `(n,)` true pixels per image.
        aux: `(n,)` image-level probabilities (required unless `gate == "area"`).
        gate: "area", "aux" or "both" (`Thresholds.gate`).
        aux_thresholds: Candidate aux thresholds, in [0, 1) (default: `aux_threshold_candidates(aux)`).

    Returns:
        dict with `form`, `mask_threshold`, `min_area`, `top_threshold` (None for the pair, and for a triplet
        whose best candidate has top == mask, which is the pair rule),
        `aux_threshold` (None for the area gate), `gate`, `objective` (its name), `value` (the best objective
        value), `siim_dice` (that candidate's SIIM-ACR mean Dice, None without truths), `thresholds` (the
        chosen `Thresholds`) and `grid`: a DataFrame with one row per candidate and columns `mask_threshold`,
        `min_area` (`top_threshold` first for the triplet, `aux_threshold` for an aux gate), `tp`, `fp`,
        `tn`, `fn`, the `DIAGNOSIS_SCORES` and, with truths, `siim_dice`.

    Raises:
        ValueError: on an unknown objective, form or gate, empty or invalid grids, mismatched lengths, a missing
            input the form, objective or gate needs, or when neither or both of `prob_maps` and `areas` are
            given.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}. Received: objective={objective!r}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}. Received: form={form!r}")
    if gate not in GATES:
        raise ValueError(f"gate must be one of {GATES}. Received: gate={gate!r}")
    reference_size = _check_reference_size(reference_size)
    y = _binary_vector(labels, "labels")
    n = y.size
    mask_thresholds = [_check_number(t, "mask_threshold", 0, 1) for t in mask_thresholds]
    min_areas = np.array([_check_number(a, "min_area", 0) for a in min_areas])
    if not mask_thresholds or not min_areas.size:
        raise ValueError("mask_thresholds and min_areas must not be empty")
    triplet = form == "triplet"
    if triplet:
        tops = SEARCH_MASK_THRESHOLDS if top_thresholds is None else top_thresholds
        decision = [_check_number(t, "top_threshold", 0, 1) for t in tops]
        if not decision:
            raise ValueError("top_thresholds must not be empty")
    elif top_thresholds is not None:
        raise ValueError("top_thresholds only apply to form='triplet'")
    else:
        decision = mask_thresholds
    if levels is None:
        levels = sorted(set(mask_thresholds) | set(decision)) if triplet else mask_thresholds
    levels = [_check_number(t, "level", 0, 1) for t in levels]
    if (prob_maps is None) == (areas is None):
        raise ValueError("Pass exactly one of prob_maps and areas")
    if prob_maps is not None:
        if true_masks is not None:
            counts = dice_counts_at_thresholds(prob_maps, true_masks, levels)
            areas, pixels = counts["areas"], counts["pixels"]
            intersections, true_areas = counts["intersections"], counts["true_areas"]
        else:
            areas, pixels = areas_at_thresholds(prob_maps, levels)
    elif pixels is None:
        raise ValueError("pixels (H*W per image) is required with areas")
    areas = np.asarray(areas)
    if areas.shape != (n, len(levels)):
        raise ValueError(
            f"areas must have shape (n, len(levels)) = {(n, len(levels))} (levels: the mask thresholds, plus the "
            f"top thresholds of a triplet search). Received: {areas.shape}"
        )
    missing = sorted(set(mask_thresholds + decision) - set(levels))
    if missing:
        raise ValueError(f"levels must hold every candidate threshold; missing {missing}")
    column = {t: j for j, t in enumerate(levels)}
    dice_kept = None
    if intersections is not None or true_areas is not None:
        if intersections is None or true_areas is None:
            raise ValueError("intersections and true_areas go together")
        intersections = np.asarray(intersections)
        if intersections.shape != areas.shape or np.shape(true_areas) != (n,):
            raise ValueError(
                f"intersections must have the shape of areas {areas.shape} and true_areas (n,) = ({n},). Received: "
                f"{intersections.shape} and {np.shape(true_areas)}"
            )
        dice_kept, dice_emptied = _dice_tables(areas, intersections, true_areas)
    if dice_kept is None and (triplet or objective == "siim_dice"):
        raise ValueError(
            "the triplet form and the siim_dice objective need the truths: true_masks with prob_maps, or "
            "intersections and true_areas with areas"
        )
    aux_grid = None
    if gate != "area":
        if aux is None:
            raise ValueError(f"gate={gate!r} needs aux, the image-level probabilities")
        aux = _aux_vector(aux, n, "aux")
        if aux_thresholds is None:
            aux_thresholds = aux_threshold_candidates(aux)
        aux_grid = np.array([_check_number(t, "aux_threshold", 0, 1) for t in aux_thresholds])
        if not aux_grid.size:
            raise ValueError("aux_thresholds must not be empty")

    pixels = np.broadcast_to(np.asarray(pixels, dtype=float), (n,))
    # Same expression as `diagnose`'s threshold_area so that the chosen rule reproduces exactly.
    threshold_area = min_areas[:, None] * pixels[None, :] / reference_size**2  # (M, n)
    decision_areas = areas[:, [column[t] for t in decision]]  # (n, D)
    predicted = decision_areas[None, :, :] > threshold_area[:, :, None]  # (M, n, D)
    if aux_grid is not None:
        aux_positive = aux[None, :] > aux_grid[:, None]  # (A, n)
        aux_positive = aux_positive[:, None, :, None]
        predicted = aux_positive if gate == "aux" else (predicted[None] & aux_positive)
        predicted = np.broadcast_to(predicted, (len(aux_grid), len(min_areas), n, len(decision)))
    else:
        predicted = predicted[None]  # (1, M, n, D): one (absent) aux threshold
    pos = y[None, None, :, None]
    tp = np.count_nonzero(predicted & pos, axis=2)  # (A, M, D)
    fp = np.count_nonzero(predicted & ~pos, axis=2)
    fn = int(y.sum()) - tp
    tn = int((~y).sum()) - fp
    scores = _scores_from_counts(tp, fp, tn, fn)
    counts = {"tp": tp, "fp": fp, "tn": tn, "fn": fn, **scores}
    dice = None
    if dice_kept is not None:
        mask_columns = [column[t] for t in mask_thresholds]
        kept = dice_kept[:, mask_columns]  # (n, K)
        # Mean over images of (positive: Dice of the kept mask, negative: 1 if the truth is empty else 0), a few
        # aux thresholds at a time to bound the float copy of `predicted`.
        parts = []
        for a in range(0, len(predicted), _AUX_CHUNK):
            p = predicted[a : a + _AUX_CHUNK].astype(float)
            parts.append((np.einsum("amnd,nk->amdk", p, kept)
                          + np.einsum("amnd,n->amd", 1.0 - p, dice_emptied)[..., None]) / n)
        dice = np.concatenate(parts)
        if not triplet:  # the pair draws its mask at its own threshold: the diagonal
            dice = np.diagonal(dice, axis1=2, axis2=3)  # (A, M, D)

    n_aux = 1 if aux_grid is None else len(aux_grid)
    if triplet:
        a_i, m_i, d_i, k_i = np.meshgrid(
            np.arange(n_aux), np.arange(len(min_areas)), np.arange(len(decision)), np.arange(len(mask_thresholds)),
            indexing="ij",
        )
        keep = np.asarray(mask_thresholds)[k_i] <= np.asarray(decision)[d_i]
        a_i, m_i, d_i, k_i = a_i[keep], m_i[keep], d_i[keep], k_i[keep]
        columns = {
            "top_threshold": np.asarray(decision)[d_i],
            "min_area": min_areas[m_i],
            "mask_threshold": np.asarray(mask_thresholds)[k_i],
        }
    else:
        a_i, m_i, d_i = (g.ravel() for g in np.meshgrid(
            np.arange(n_aux), np.arange(len(min_areas)), np.arange(len(decision)), indexing="ij"))
        columns = {"mask_threshold": np.asarray(mask_thresholds)[d_i], "min_area": min_areas[m_i]}
    if aux_grid is not None:
        columns["aux_threshold"] = aux_grid[a_i]
    columns.update({k: v[a_i, m_i, d_i] for k, v in counts.items()})
    if dice is not None:
        columns["siim_dice"] = dice[a_i, m_i, d_i, k_i] if triplet else dice[a_i, m_i, d_i]
    grid = pd.DataFrame(columns)

    value = np.nan_to_num(grid[objective].to_numpy(), nan=-np.inf)
    # np.lexsort sorts by the last key first.
    keys = [grid["min_area"], grid["mask_threshold"]]
    closeness = [np.abs(grid["min_area"] - DIAGNOSIS_MIN_AREA), np.abs(grid["mask_threshold"] - MASK_THRESHOLD)]
    if triplet:
        keys.insert(1, grid["top_threshold"])
        closeness.insert(1, np.abs(grid["top_threshold"] - MASK_THRESHOLD))
    if aux_grid is not None:
        keys.insert(0, grid["aux_threshold"])
        closeness.insert(0, np.abs(grid["aux_threshold"] - AUX_THRESHOLD))
    primary = [-value]
    if triplet:
        primary.insert(0, -grid["siim_dice"].to_numpy())
    best = grid.iloc[np.lexsort((*keys, *closeness, *primary))[0]]
    order = ["top_threshold", "min_area", "mask_threshold"] if triplet else ["mask_threshold", "min_area"]
    if aux_grid is not None:
        order.append("aux_threshold")
    top = float(best["top_threshold"]) if triplet else None
    aux_threshold = float(best["aux_threshold"]) if aux_grid is not None else None
    chosen = Thresholds(
        float(best["mask_threshold"]), float(best["min_area"]), reference_size, top_threshold=top, gate=gate,
        **({} if aux_threshold is None else {"aux_threshold": aux_threshold}),
    )
    return {
        "form": form,
        "mask_threshold": float(best["mask_threshold"]),
        "min_area": float(best["min_area"]),
        "top_threshold": chosen.top_threshold,
        "aux_threshold": aux_threshold,
        "gate": gate,
        "objective": objective,
        "value": float(best[objective]),
        "siim_dice": float(best["siim_dice"]) if "siim_dice" in grid else None,
        "thresholds": chosen,
        "grid": grid.sort_values(order, ignore_index=True),
    }
