"""The grid search of the diagnosis rule on the validation split (`search_thresholds`) and the per-image counts it
runs on (predicted areas and Dice intersections at every probability level)."""

import dataclasses

import numpy as np
import pandas as pd

from ptx_keras.constants import (
    DIAGNOSIS_MIN_AREA,
    DIAGNOSIS_REFERENCE_SIZE,
    MASK_THRESHOLD,
    SEARCH_MASK_THRESHOLDS,
    SEARCH_MIN_AREAS,
)
from ptx_keras.diagnosis.rule import (
    AUX_THRESHOLD,
    FORMS,
    GATES,
    Thresholds,
    _aux_vector,
    _check_number,
    _check_reference_size,
    ptx_probabilities,
)
from ptx_keras.diagnosis.scores import _binary_vector, _scores_from_counts
from ptx_keras.metrics.segmentation import dice_from_counts

__all__ = [
    "AUX_QUANTILES",
    "OBJECTIVES",
    "SEARCH_AUX_THRESHOLDS",
    "ThresholdSearch",
    "areas_at_thresholds",
    "aux_threshold_candidates",
    "check_search_options",
    "dice_counts_at_thresholds",
    "search_thresholds",
]


# What a threshold search maximises: a diagnosis score, or the SIIM-ACR mean Dice (empty = 1) of the final masks.
OBJECTIVES = ("f1", "youden", "siim_dice")
SEARCH_AUX_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
AUX_QUANTILES = 40  # the search also tries the 2.5 %, 5 %, ... 97.5 % quantiles of the validation aux probabilities
_AREA_CHUNK = 64  # images thresholded at once: bounds the temporary boolean arrays
_AUX_CHUNK = 8  # aux thresholds whose mean Dice is computed at once (bounds a float copy of the verdicts)


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
    true = np.asarray(true_areas, dtype=float)
    return dice_from_counts(intersections, areas, true[:, None]), (true == 0).astype(float)


@dataclasses.dataclass(frozen=True, eq=False)
class ThresholdSearch:
    """What `search_thresholds` chose.

    Attributes:
        form: `"pair"` or `"triplet"`.
        mask_threshold: The chosen mask threshold.
        min_area: The chosen minimum area (pixels at `thresholds.reference_size`).
        top_threshold: The triplet's decision threshold; None for the pair, and for a triplet whose best
            candidate has top == mask, which is the pair rule.
        aux_threshold: The aux gate's threshold; None for the area gate.
        gate: `"area"`, `"aux"` or `"both"`.
        objective: The objective's name.
        value: The best objective value (NaN when every candidate's is undefined).
        siim_dice: That candidate's SIIM-ACR mean Dice, None without truths.
        thresholds: The chosen `Thresholds`.
        grid: A DataFrame with one row per candidate and columns `mask_threshold`, `min_area` (`top_threshold`
            first for the triplet, `aux_threshold` for an aux gate), `tp`, `fp`, `tn`, `fn`, the
            `DIAGNOSIS_SCORES` and, with truths, `siim_dice`.
    """

    form: str
    mask_threshold: float
    min_area: float
    top_threshold: object
    aux_threshold: object
    gate: str
    objective: str
    value: float
    siim_dice: object
    thresholds: Thresholds
    grid: pd.DataFrame

    def __getitem__(self, key):
        """`result[key]` for a field: the dict interface of earlier versions."""
        if key not in _SEARCH_FIELDS:
            raise KeyError(key)
        return getattr(self, key)


_SEARCH_FIELDS = tuple(f.name for f in dataclasses.fields(ThresholdSearch))


@dataclasses.dataclass(frozen=True)
class _Candidates:
    """The validated search space: the labels, the candidate axes and the probability levels counted."""

    y: np.ndarray  # (n,) bool labels
    objective: str
    form: str
    gate: str
    reference_size: int
    mask_thresholds: list  # K mask thresholds
    min_areas: np.ndarray  # (M,)
    decision: list  # D decision thresholds: the triplet's top thresholds, else the mask thresholds
    levels: list  # the probability levels of the area / intersection columns
    aux: object  # (n,) image-level probabilities, or None for the area gate
    aux_grid: object  # (A,) aux thresholds, or None for the area gate

    @property
    def triplet(self):
        return self.form == "triplet"

    def column(self, thresholds):
        """The area columns of `thresholds` (each one of `levels`)."""
        index = {t: j for j, t in enumerate(self.levels)}
        return [index[t] for t in thresholds]


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
        `ThresholdSearch` (its fields can also be read as `result["value"]`, the dict this function returned
        before).

    Raises:
        ValueError: on an unknown objective, form or gate, empty or invalid grids, mismatched lengths, a missing
            input the form, objective or gate needs, or when neither or both of `prob_maps` and `areas` are
            given.
    """
    space = _candidates(
        labels,
        mask_thresholds,
        min_areas,
        objective,
        reference_size,
        form,
        top_thresholds,
        levels,
        aux,
        gate,
        aux_thresholds,
    )
    areas, pixels, dice_tables = _counts(space, prob_maps, areas, pixels, true_masks, intersections, true_areas)
    predicted = _verdicts(space, areas, pixels)
    grid = _grid_frame(
        space,
        _confusion(predicted, space.y),
        None if dice_tables is None else _mean_dice(space, predicted, *dice_tables),
    )
    return _result(space, grid, _best(space, grid))


def _candidates(
    labels,
    mask_thresholds,
    min_areas,
    objective,
    reference_size,
    form,
    top_thresholds,
    levels,
    aux,
    gate,
    aux_thresholds,
):
    """Validates the search's options into `_Candidates` (step 1 of `search_thresholds`)."""
    check_search_options(objective, form, gate)
    reference_size = _check_reference_size(reference_size)
    y = _binary_vector(labels, "labels")
    mask_thresholds = [_check_number(t, "mask_threshold", 0, 1) for t in mask_thresholds]
    min_areas = np.array([_check_number(a, "min_area", 0) for a in min_areas])
    if not mask_thresholds or not min_areas.size:
        raise ValueError("mask_thresholds and min_areas must not be empty")
    decision = _decision_thresholds(form, mask_thresholds, top_thresholds)
    levels = _levels(levels, form, mask_thresholds, decision)
    aux, aux_grid = _aux_candidates(gate, aux, aux_thresholds, y.size)
    return _Candidates(
        y, objective, form, gate, reference_size, mask_thresholds, min_areas, decision, levels, aux, aux_grid
    )


def check_search_options(objective, form, gate):
    """Checks a threshold search's objective (`OBJECTIVES`), form (`FORMS`) and gate (`GATES`).

    Raises:
        ValueError: naming the first unknown one.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}. Received: objective={objective!r}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}. Received: form={form!r}")
    if gate not in GATES:
        raise ValueError(f"gate must be one of {GATES}. Received: gate={gate!r}")


def _decision_thresholds(form, mask_thresholds, top_thresholds):
    """The thresholds the diagnosis decides with: the top thresholds of a triplet (default
    `SEARCH_MASK_THRESHOLDS`), else the mask thresholds themselves."""
    if form == "triplet":
        tops = SEARCH_MASK_THRESHOLDS if top_thresholds is None else top_thresholds
        decision = [_check_number(t, "top_threshold", 0, 1) for t in tops]
        if not decision:
            raise ValueError("top_thresholds must not be empty")
        return decision
    if top_thresholds is not None:
        raise ValueError("top_thresholds only apply to form='triplet'")
    return mask_thresholds


def _levels(levels, form, mask_thresholds, decision):
    """The probability levels areas are counted at (default: every candidate threshold); each candidate needs one."""
    if levels is None:
        levels = sorted(set(mask_thresholds) | set(decision)) if form == "triplet" else mask_thresholds
    levels = [_check_number(t, "level", 0, 1) for t in levels]
    missing = sorted(set(mask_thresholds + decision) - set(levels))
    if missing:
        raise ValueError(f"levels must hold every candidate threshold; missing {missing}")
    return levels


def _aux_candidates(gate, aux, aux_thresholds, n):
    """`(aux (n,), aux threshold grid)` for an aux gate (default grid `aux_threshold_candidates(aux)`);
    `(None, None)` for the area gate."""
    if gate == "area":
        return None, None
    if aux is None:
        raise ValueError(f"gate={gate!r} needs aux, the image-level probabilities")
    aux = _aux_vector(aux, n, "aux")
    if aux_thresholds is None:
        aux_thresholds = aux_threshold_candidates(aux)
    aux_grid = np.array([_check_number(t, "aux_threshold", 0, 1) for t in aux_thresholds])
    if not aux_grid.size:
        raise ValueError("aux_thresholds must not be empty")
    return aux, aux_grid


def _counts(space, prob_maps, areas, pixels, true_masks, intersections, true_areas):
    """`(areas (n, L), pixels (n,), dice_tables)`: the per-image counts at every level, from the maps or as given,
    and the Dice tables (`_dice_tables`, None without truths) (step 2)."""
    n, n_levels = space.y.size, len(space.levels)
    if (prob_maps is None) == (areas is None):
        raise ValueError("Pass exactly one of prob_maps and areas")
    if prob_maps is not None:
        if true_masks is not None:
            counts = dice_counts_at_thresholds(prob_maps, true_masks, space.levels)
            areas, pixels = counts["areas"], counts["pixels"]
            intersections, true_areas = counts["intersections"], counts["true_areas"]
        else:
            areas, pixels = areas_at_thresholds(prob_maps, space.levels)
    elif pixels is None:
        raise ValueError("pixels (H*W per image) is required with areas")
    areas = np.asarray(areas)
    if areas.shape != (n, n_levels):
        raise ValueError(
            f"areas must have shape (n, len(levels)) = {(n, n_levels)} (levels: the mask thresholds, plus the "
            f"top thresholds of a triplet search). Received: {areas.shape}"
        )
    dice_tables = None
    if intersections is not None or true_areas is not None:
        if intersections is None or true_areas is None:
            raise ValueError("intersections and true_areas go together")
        intersections = np.asarray(intersections)
        if intersections.shape != areas.shape or np.shape(true_areas) != (n,):
            raise ValueError(
                f"intersections must have the shape of areas {areas.shape} and true_areas (n,) = ({n},). Received: "
                f"{intersections.shape} and {np.shape(true_areas)}"
            )
        dice_tables = _dice_tables(areas, intersections, true_areas)
    if dice_tables is None and (space.triplet or space.objective == "siim_dice"):
        raise ValueError(
            "the triplet form and the siim_dice objective need the truths: true_masks with prob_maps, or "
            "intersections and true_areas with areas"
        )
    return areas, np.broadcast_to(np.asarray(pixels, dtype=float), (n,)), dice_tables


def _verdicts(space, areas, pixels):
    """Boolean `(A, M, n, D)`: every image's diagnosis under every candidate (A = 1 for the area gate) (step 3)."""
    n, n_min = space.y.size, len(space.min_areas)
    # Same expression as `diagnose`'s threshold_area so that the chosen rule reproduces exactly.
    threshold_area = space.min_areas[:, None] * pixels[None, :] / space.reference_size**2  # (M, n)
    decision_areas = areas[:, space.column(space.decision)]  # (n, D)
    predicted = decision_areas[None, :, :] > threshold_area[:, :, None]  # (M, n, D)
    if space.aux_grid is None:
        return predicted[None]  # (1, M, n, D): one (absent) aux threshold
    aux_positive = (space.aux[None, :] > space.aux_grid[:, None])[:, None, :, None]  # (A, 1, n, 1)
    predicted = aux_positive if space.gate == "aux" else (predicted[None] & aux_positive)
    return np.broadcast_to(predicted, (len(space.aux_grid), n_min, n, len(space.decision)))


def _confusion(predicted, y):
    """The confusion counts and `DIAGNOSIS_SCORES` of every candidate, each `(A, M, D)` (step 4)."""
    pos = y[None, None, :, None]
    tp = np.count_nonzero(predicted & pos, axis=2)  # (A, M, D)
    fp = np.count_nonzero(predicted & ~pos, axis=2)
    fn = int(y.sum()) - tp
    tn = int((~y).sum()) - fp
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, **_scores_from_counts(tp, fp, tn, fn)}


def _mean_dice(space, predicted, dice_kept, dice_emptied):
    """The SIIM-ACR mean Dice of every candidate: `(A, M, D, K)` for the triplet, `(A, M, D)` for the pair (step 5).

    Per image: the Dice of the mask kept at the mask threshold when diagnosed positive, else of the emptied mask
    (1 if the truth is empty, else 0); a few aux thresholds at a time to bound the float copy of `predicted`.
    """
    kept = dice_kept[:, space.column(space.mask_thresholds)]  # (n, K)
    n = space.y.size
    parts = []
    for a in range(0, len(predicted), _AUX_CHUNK):
        p = predicted[a : a + _AUX_CHUNK].astype(float)
        parts.append(
            (np.einsum("amnd,nk->amdk", p, kept) + np.einsum("amnd,n->amd", 1.0 - p, dice_emptied)[..., None]) / n
        )
    dice = np.concatenate(parts)
    if not space.triplet:  # the pair draws its mask at its own threshold: the diagonal
        dice = np.diagonal(dice, axis1=2, axis2=3)  # (A, M, D)
    return dice


def _grid_frame(space, counts, dice):
    """One row per candidate: its thresholds, counts, scores and (with truths) `siim_dice` (step 6). A triplet
    keeps only the candidates with `mask_threshold <= top_threshold`."""
    n_aux = 1 if space.aux_grid is None else len(space.aux_grid)
    decision, masks = np.asarray(space.decision), np.asarray(space.mask_thresholds)
    axes = [np.arange(n_aux), np.arange(len(space.min_areas)), np.arange(len(decision))]
    if space.triplet:
        a_i, m_i, d_i, k_i = np.meshgrid(*axes, np.arange(len(masks)), indexing="ij")
        keep = masks[k_i] <= decision[d_i]
        a_i, m_i, d_i, k_i = a_i[keep], m_i[keep], d_i[keep], k_i[keep]
        columns = {"top_threshold": decision[d_i], "min_area": space.min_areas[m_i], "mask_threshold": masks[k_i]}
    else:
        a_i, m_i, d_i = (g.ravel() for g in np.meshgrid(*axes, indexing="ij"))
        columns = {"mask_threshold": decision[d_i], "min_area": space.min_areas[m_i]}
    if space.aux_grid is not None:
        columns["aux_threshold"] = space.aux_grid[a_i]
    columns.update({k: v[a_i, m_i, d_i] for k, v in counts.items()})
    if dice is not None:
        columns["siim_dice"] = dice[a_i, m_i, d_i, k_i] if space.triplet else dice[a_i, m_i, d_i]
    return pd.DataFrame(columns)


def _best(space, grid):
    """The winning row (step 7): the best objective (NaN never wins; a triplet first by the SIIM-ACR Dice), then
    the candidate closest to the paper's rule (aux 0.5, mask 0.5, top 0.5, area 50), then the smaller values."""
    value = np.nan_to_num(grid[space.objective].to_numpy(), nan=-np.inf)
    # np.lexsort sorts by the last key first.
    keys = [grid["min_area"], grid["mask_threshold"]]
    closeness = [np.abs(grid["min_area"] - DIAGNOSIS_MIN_AREA), np.abs(grid["mask_threshold"] - MASK_THRESHOLD)]
    primary = [-value]
    if space.triplet:
        keys.insert(1, grid["top_threshold"])
        closeness.insert(1, np.abs(grid["top_threshold"] - MASK_THRESHOLD))
        primary.insert(0, -grid["siim_dice"].to_numpy())
    if space.aux_grid is not None:
        keys.insert(0, grid["aux_threshold"])
        closeness.insert(0, np.abs(grid["aux_threshold"] - AUX_THRESHOLD))
    return grid.iloc[np.lexsort((*keys, *closeness, *primary))[0]]


def _result(space, grid, best):
    """The `ThresholdSearch` of the winning row, with the grid sorted by the candidate axes (step 8)."""
    order = ["top_threshold", "min_area", "mask_threshold"] if space.triplet else ["mask_threshold", "min_area"]
    aux_threshold = None
    if space.aux_grid is not None:
        order.append("aux_threshold")
        aux_threshold = float(best["aux_threshold"])
    chosen = Thresholds(
        float(best["mask_threshold"]),
        float(best["min_area"]),
        space.reference_size,
        top_threshold=float(best["top_threshold"]) if space.triplet else None,
        gate=space.gate,
        **({} if aux_threshold is None else {"aux_threshold": aux_threshold}),
    )
    return ThresholdSearch(
        form=space.form,
        mask_threshold=float(best["mask_threshold"]),
        min_area=float(best["min_area"]),
        top_threshold=chosen.top_threshold,
        aux_threshold=aux_threshold,
        gate=space.gate,
        objective=space.objective,
        value=float(best[space.objective]),
        siim_dice=float(best["siim_dice"]) if "siim_dice" in grid else None,
        thresholds=chosen,
        grid=grid.sort_values(order, ignore_index=True),
    )
