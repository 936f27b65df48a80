"""The paper's diagnosis rule (predicted mask -> pneumothorax yes/no) and its numbers (`Thresholds`).

Rule (paper, "Automated classification for pneumothorax diagnosis"): an image is diagnosed pneumothorax when
its predicted mask has **more than** `min_area` pixels (50 in the paper). A pixel belongs to the predicted
mask when its PTX probability is strictly above `mask_threshold` (0.5: the softmax argmax, ties to the
background, as `ptx_keras.metrics.DSC1`). `min_area` is expressed at `reference_size` x `reference_size`
(256, the paper's training size) and scaled by area for other prediction sizes:
`threshold_area = min_area * H * W / reference_size**2` (docs/evaluation.md, "Metric definitions", Diagnosis).

Two extensions (`Thresholds`): the triplet rule of the SIIM-ACR winners (a higher `top_threshold` decides the
diagnosis, the mask of a positive image is drawn at `mask_threshold`), and a gate by the model's image-level
probability (`gate`: `area`, `aux` or `both`). Both are chosen on the validation split
(`ptx_keras.diagnosis.search`).
"""

import dataclasses
import numbers
import typing

import numpy as np

from ptx_keras.constants import (
    DIAGNOSIS_MIN_AREA,
    DIAGNOSIS_REFERENCE_SIZE,
    MASK_THRESHOLD,
    NUM_CLASSES,
    PTX_CLASS,
)

__all__ = [
    "AUX_THRESHOLD",
    "FORMS",
    "GATES",
    "Diagnosis",
    "Thresholds",
    "diagnose",
    "gate_labels",
    "ptx_probabilities",
]


FORMS = ("pair", "triplet")  # the two-number rule, or the triplet rule (Thresholds.top_threshold)
GATES = ("area", "aux", "both")  # what diagnoses an image (Thresholds.gate)
AUX_THRESHOLD = 0.5  # default image-level probability threshold of the aux gate


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
        raise ValueError(f"prob_map must hold probabilities in [0, 1]. Received values between {p.min()} and {p.max()}")
    return p, batched


def _aux_vector(aux_probability, n, name="aux_probability"):
    a = np.asarray(aux_probability, dtype=np.float64).reshape(-1)
    if a.size != n:
        raise ValueError(
            f"{name} must hold one probability per image ({n}). Received shape {np.shape(aux_probability)}"
        )
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


def diagnose(
    prob_map, min_area=None, mask_threshold=None, reference_size=None, *, thresholds=None, aux_probability=None
):
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
    return Diagnosis(
        int(label[0]),
        int(area[0]),
        float(score[0]),
        threshold_area,
        float(max_prob[0]),
        int(decision_area[0]),
        None if aux is None else float(aux[0]),
    )
