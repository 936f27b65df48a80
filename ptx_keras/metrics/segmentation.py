"""Per-image segmentation metrics of the paper (eqs. 7-12), in NumPy/SciPy, for evaluation outside the graph.

Definitions (per image; the paper then averages over the N images, eqs. 7-10):

* **PA_c** = correctly classified pixels of class c / pixels of class c in the ground truth. ``pa1`` is the
  pneumothorax class (eq. 8), ``pa0`` the background; ``mpa`` = (pa0 + pa1) / 2 (eq. 7).
* **Dice_c** = 2 |A_c ∩ B_c| / (|A_c| + |B_c|) with A the prediction and B the truth. ``dsc1`` is the
  pneumothorax class (eq. 10), ``dsc0`` the background; ``dsc`` = (dsc0 + dsc1) / 2 (eq. 9).
* **Empty classes** (the SIIM-ACR convention, docs/evaluation.md "Metric definitions"): a class absent from both the truth and the
  prediction scores 1 for both PA and Dice; a class absent from only one of them scores 0. For PA this
  means: truth empty and prediction empty -> 1, truth empty and prediction not -> 0 (the ratio itself is
  0/0 there). The mean of ``dsc1`` over all images is therefore the SIIM-ACR leaderboard Dice.
* **Contour** of a mask = its boundary pixels: foreground pixels with at least one background pixel among
  their 4 neighbours (mask minus its binary erosion by the 3x3 cross, ``scipy.ndimage.binary_erosion``; the
  resulting contour is 8-connected). Pixels outside the image count as background, so a mask touching the
  image border has its border pixels on the contour. This matches ``medpy.metric.hd``/``hd95``.
* **HD** (eqs. 11-12) = max(h(P, G), h(G, P)) with h(P, G) = max over predicted contour pixels of the
  distance to the nearest true contour pixel; distances between pixel centres, in pixels.
* **HD95** = the 95th percentile (``numpy.percentile``, linear interpolation) of the pooled distances
  {d(p, G) : p in P} ∪ {d(g, P) : g in G} (both directed distance sets concatenated, as ``medpy.hd95``).
* ``hd_mm``/``hd95_mm``: the same with distances in millimetres when ``spacing=(row_mm, col_mm)`` is given;
  anisotropic spacing enters the Euclidean distance transform through its ``sampling`` argument, so the
  millimetre HD is not simply the pixel HD times a factor.
* HD and HD95 are undefined (NaN) when either contour is missing (an empty truth or prediction); summaries
  count such values as missing (`summarize_scores`) instead of averaging them.

Speed: PA and Dice come from four ``np.count_nonzero`` counts; the distances come from two Euclidean distance
transforms restricted to the bounding box of the union of both masks (plus a 1-pixel margin for the
erosion) - exact, because every contour pixel lies in that box. The cost grows with that box (a prediction
with scattered false-positive pixels over the whole image is the worst case); timings from
``python benchmarks/metrics.py`` are in docs/benchmarks.md.
"""

import numpy as np
import pandas as pd
from scipy import ndimage

__all__ = [
    "DISTANCE_METRICS",
    "HD_PERCENTILE",
    "SEGMENTATION_METRICS",
    "as_binary_mask",
    "batch_segmentation_scores",
    "describe",
    "segmentation_scores",
    "summarize_scores",
    "surface_distances",
]


SEGMENTATION_METRICS = ("mpa", "pa0", "pa1", "dsc", "dsc0", "dsc1", "hd", "hd95")
DISTANCE_METRICS = ("hd", "hd95", "hd_mm", "hd95_mm")
HD_PERCENTILE = 95.0

# 3x3 cross: a pixel is on the contour when one of its 4 neighbours is background.
_CONTOUR_STRUCTURE = ndimage.generate_binary_structure(2, 1)


def as_binary_mask(mask, name="mask"):
    """Converts a mask to a boolean array, checking that it is 2-D and binary.

    Args:
        mask: Array of shape `(height, width)`: bool, or numeric with one nonzero value (0/1, 0/255).
        name: Name used in error messages.

    Returns:
        bool array of shape `(height, width)`.

    Raises:
        ValueError: if the array is not 2-D or holds more than one nonzero value (e.g. a probability map,
            which must be thresholded first).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (height, width). Received: {name}.shape={mask.shape}")
    if mask.dtype == bool:
        return mask
    binary = mask != 0
    n_fg = np.count_nonzero(binary)
    if n_fg:
        top = mask.max()
        # Binary means every nonzero pixel holds the same value (1 or 255 in practice).
        if top <= 0 or np.count_nonzero(mask == top) != n_fg:
            raise ValueError(
                f"{name} must be binary (bool, 0/1 or 0/255); threshold probability maps first. "
                f"Received values between {mask.min()} and {top}"
            )
    return binary


def _check_spacing(spacing):
    if spacing is None:
        return None
    try:
        row_mm, col_mm = (float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be (row_mm, col_mm) or None. Received: spacing={spacing!r}") from None
    if not (np.isfinite(row_mm) and np.isfinite(col_mm) and row_mm > 0 and col_mm > 0):
        raise ValueError(f"spacing must hold two positive finite numbers. Received: spacing={spacing!r}")
    return row_mm, col_mm


def dice_from_counts(intersection, pred_area, true_area):
    """The Dice `2 |A ∩ B| / (|A| + |B|)` from pixel counts, with the empty-mask policy: both empty -> 1.

    The package's one Dice (as MONAI's `DiceHelper` serves its metric class and function alike): the per-image
    scores here, the evaluation's raw and gated masks (`batch_dice`) and the threshold search's tables
    (`ptx_keras.diagnosis`) all call it, so the SIIM-ACR convention (docs/evaluation.md) is decided once.

    Args:
        intersection: Pixels in both the prediction A and the truth B (any shape broadcastable with the others).
        pred_area: |A|.
        true_area: |B|.

    Returns:
        float64 array of the broadcast shape (0-d for scalars): 1 where `pred_area + true_area == 0`.
    """
    inter = np.asarray(intersection, dtype=float)
    total = np.asarray(pred_area, dtype=float) + np.asarray(true_area, dtype=float)
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1.0))


def batch_dice(true_masks, pred_masks):
    """Per-image Dice of two boolean stacks `(n, height, width)` -> float64 `(n,)` (`dice_from_counts`)."""
    inter = np.count_nonzero(true_masks & pred_masks, axis=(1, 2))
    return dice_from_counts(inter, np.count_nonzero(pred_masks, axis=(1, 2)), np.count_nonzero(true_masks, axis=(1, 2)))


def _ratio(num, den, pred_count):
    """num / den with the empty policy: den == 0 -> 1 if pred_count == 0 else 0."""
    if den == 0:
        return 1.0 if pred_count == 0 else 0.0
    return num / den


def _contour(mask):
    return mask & ~ndimage.binary_erosion(mask, structure=_CONTOUR_STRUCTURE, border_value=0)


def _union_box(true_mask, pred_mask):
    """Slices of the union bounding box widened by 1 pixel (clipped to the image)."""
    union = true_mask | pred_mask
    rows = np.flatnonzero(union.any(axis=1))
    cols = np.flatnonzero(union.any(axis=0))
    h, w = union.shape
    return (
        slice(max(rows[0] - 1, 0), min(rows[-1] + 2, h)),
        slice(max(cols[0] - 1, 0), min(cols[-1] + 2, w)),
    )


def surface_distances(true_mask, pred_mask, sampling=None):
    """Directed contour-to-contour distances in both directions.

    Args:
        true_mask: bool array `(height, width)`, not empty.
        pred_mask: bool array `(height, width)`, not empty.
        sampling: None (pixels) or `(row_mm, col_mm)`.

    Returns:
        `(d_pred_to_true, d_true_to_pred)`: 1-D float arrays, the distance from each predicted contour
        pixel to the nearest true contour pixel, and the reverse.
    """
    box = _union_box(true_mask, pred_mask)
    true_c = _contour(true_mask[box])
    pred_c = _contour(pred_mask[box])
    # EDT of the complement: distance from every pixel to the nearest contour pixel. All contour pixels are
    # inside the box, so the cropped transform is exact.
    dist_to_true = ndimage.distance_transform_edt(~true_c, sampling=sampling)
    dist_to_pred = ndimage.distance_transform_edt(~pred_c, sampling=sampling)
    return dist_to_true[pred_c], dist_to_pred[true_c]


def _hausdorff(d_pred_to_true, d_true_to_pred):
    pooled = np.concatenate([d_pred_to_true, d_true_to_pred])
    return float(pooled.max()), float(np.percentile(pooled, HD_PERCENTILE))


def segmentation_scores(true_mask, pred_mask, spacing=None):
    """Scores one predicted mask against its ground truth (eqs. 7-12 before averaging over images).

    Args:
        true_mask: Ground-truth mask `(height, width)`: bool, 0/1 or 0/255.
        pred_mask: Predicted mask of the same shape and kind (threshold probabilities first).
        spacing: Optional pixel spacing `(row_mm, col_mm)`; adds `hd_mm` and `hd95_mm`.

    Returns:
        dict with floats `mpa`, `pa0`, `pa1`, `dsc`, `dsc0`, `dsc1`, `hd`, `hd95` (pixels; NaN when either
        mask is empty), `hd_mm`, `hd95_mm` (only with `spacing`), and ints `true_area`, `pred_area` (pixels).
        See the module docstring for the exact definitions and the empty-mask policy.

    Raises:
        ValueError: if the masks are not 2-D, not binary, differ in shape, or `spacing` is invalid.
    """
    spacing = _check_spacing(spacing)
    t = as_binary_mask(true_mask, "true_mask")
    p = as_binary_mask(pred_mask, "pred_mask")
    if t.shape != p.shape:
        raise ValueError(
            f"true_mask and pred_mask must have the same shape. Received: true_mask.shape={t.shape}, "
            f"pred_mask.shape={p.shape}"
        )
    n = t.size
    n_true = np.count_nonzero(t)
    n_pred = np.count_nonzero(p)
    n_inter = np.count_nonzero(t & p) if n_true and n_pred else 0
    # Background counts follow from the foreground ones: no second pass over the image.
    b_true, b_pred = n - n_true, n - n_pred
    b_inter = n - n_true - n_pred + n_inter

    pa1 = _ratio(n_inter, n_true, n_pred)
    pa0 = _ratio(b_inter, b_true, b_pred)
    dsc1 = float(dice_from_counts(n_inter, n_pred, n_true))
    dsc0 = float(dice_from_counts(b_inter, b_pred, b_true))
    scores = {
        "mpa": (pa0 + pa1) / 2.0,
        "pa0": pa0,
        "pa1": pa1,
        "dsc": (dsc0 + dsc1) / 2.0,
        "dsc0": dsc0,
        "dsc1": dsc1,
        "hd": np.nan,
        "hd95": np.nan,
    }
    if spacing is not None:
        scores["hd_mm"] = scores["hd95_mm"] = np.nan
    if n_true and n_pred:
        scores["hd"], scores["hd95"] = _hausdorff(*surface_distances(t, p))
        if spacing is not None:
            if spacing[0] == spacing[1]:
                scores["hd_mm"], scores["hd95_mm"] = scores["hd"] * spacing[0], scores["hd95"] * spacing[0]
            else:
                scores["hd_mm"], scores["hd95_mm"] = _hausdorff(*surface_distances(t, p, sampling=spacing))
    scores["true_area"] = int(n_true)
    scores["pred_area"] = int(n_pred)
    return scores


def batch_segmentation_scores(true_masks, pred_masks, spacings=None, sample_ids=None, progress=False):
    """Scores many images; one row per image.

    Args:
        true_masks: Array `(n, height, width)` or a sequence of n 2-D masks (sizes may differ per image).
        pred_masks: The predictions, same length and per-image shapes.
        spacings: None, one `(row_mm, col_mm)` pair for all images, or a sequence of n pairs (entries may be
            None for images without known spacing).
        sample_ids: Optional sequence of n identifiers, stored in a `sample_id` column (needed by
            `ptx_keras.metrics.compare_runs`). Defaults to 0..n-1.
        progress: Show a tqdm progress bar.

    Returns:
        pandas.DataFrame with a `sample_id` column and the columns of `segmentation_scores` (`hd_mm` and
        `hd95_mm` present whenever `spacings` is given).

    Raises:
        ValueError: if the lengths differ or any pair is invalid (the message names the image index).
    """
    n = len(true_masks)
    if len(pred_masks) != n:
        raise ValueError(f"true_masks and pred_masks must have the same length. Received: {n} and {len(pred_masks)}")
    if sample_ids is None:
        sample_ids = list(range(n))
    elif len(sample_ids) != n:
        raise ValueError(f"sample_ids must have {n} entries. Received: {len(sample_ids)}")
    if spacings is None or (len(spacings) == 2 and np.isscalar(spacings[0])):
        per_image = [spacings] * n
    elif len(spacings) == n:
        per_image = list(spacings)
    else:
        raise ValueError(
            f"spacings must be None, one (row_mm, col_mm) pair or {n} pairs. Received {len(spacings)} entries"
        )
    iterator = range(n)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="segmentation metrics", unit="image")
    rows = []
    for i in iterator:
        try:
            row = segmentation_scores(true_masks[i], pred_masks[i], spacing=per_image[i])
        except ValueError as err:
            raise ValueError(f"image {i} (sample_id={sample_ids[i]!r}): {err}") from err
        row["sample_id"] = sample_ids[i]
        rows.append(row)
    columns = ["sample_id", *SEGMENTATION_METRICS]
    if spacings is not None:
        columns += ["hd_mm", "hd95_mm"]
    columns += ["true_area", "pred_area"]
    return pd.DataFrame(rows, columns=columns)


def summarize_scores(df, positive=None, metrics=None):
    """Mean and standard deviation of per-image scores, over all images and over PTX-positive ones.

    Missing values (NaN HD/HD95 when a mask is empty) are never averaged silently: each row reports
    `n_valid` and `n_missing`, and the mean/std are over the valid values only.

    Args:
        df: Per-image scores as returned by `batch_segmentation_scores`.
        positive: Boolean sequence marking the pneumothorax-positive images (ground truth). Defaults to
            `df["true_area"] > 0`.
        metrics: Metric columns to summarise; defaults to those of `SEGMENTATION_METRICS` and
            `DISTANCE_METRICS` present in `df`.

    Returns:
        pandas.DataFrame with columns `subset` ("all" or "positive"), `metric`, `mean`, `std` (sample
        standard deviation, ddof=1; NaN with fewer than 2 valid values), `n_valid`, `n_missing`; plus one
        row `subset="all", metric="siim_acr_dice"`: the mean of `dsc1` over all images with empty = 1, the
        SIIM-ACR challenge score.

    Raises:
        ValueError: if `positive` has the wrong length, or it is None and `df` has no `true_area` column, or a
            metric column is missing.
    """
    if positive is None:
        if "true_area" not in df.columns:
            raise ValueError("summarize_scores needs `positive` or a `true_area` column in df")
        positive = df["true_area"].to_numpy() > 0
    positive = np.asarray(positive, dtype=bool)
    if positive.shape != (len(df),):
        raise ValueError(f"positive must have {len(df)} entries. Received shape {positive.shape}")
    if metrics is None:
        metrics = [m for m in dict.fromkeys((*SEGMENTATION_METRICS, *DISTANCE_METRICS)) if m in df.columns]
    missing = [m for m in metrics if m not in df.columns]
    if missing:
        raise ValueError(f"df has no column(s) {missing}. Columns: {list(df.columns)}")
    rows = []
    for subset, selection in (("all", np.ones(len(df), dtype=bool)), ("positive", positive)):
        for metric in metrics:
            rows.append({"subset": subset, "metric": metric, **describe(df[metric].to_numpy()[selection])})
    if "dsc1" in df.columns:
        rows.append({"subset": "all", "metric": "siim_acr_dice", **describe(df["dsc1"].to_numpy())})
    return pd.DataFrame(rows, columns=["subset", "metric", "mean", "std", "n_valid", "n_missing"])


def describe(values):
    """Mean, sample std (ddof=1) and counts of the finite values of a 1-D array.

    Returns:
        dict with `mean`, `std` (NaN when fewer than 1 or 2 valid values), `n_valid`, `n_missing`.
    """
    values = np.asarray(values, dtype=float)
    valid = values[np.isfinite(values)]
    return {
        "mean": float(valid.mean()) if valid.size else np.nan,
        "std": float(valid.std(ddof=1)) if valid.size > 1 else np.nan,
        "n_valid": int(valid.size),
        "n_missing": int(values.size - valid.size),
    }
