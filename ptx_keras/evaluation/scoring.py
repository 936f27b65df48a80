"""Per-image scores of a split and their summary (paper Tables 2-3).

Which mask is scored: the framework's output by default (`diagnosis.gate_masks: true`: the mask of an image
diagnosed negative is emptied, as the paper's segmentation -> area classifier and SIIM-ACR submissions do),
else the raw mask (`probability > mask_threshold`). The raw mask's DSC1 is always kept as `dsc1_raw`, so every
summary gives DSC1 both ways. `MASKS` names the two.
"""

import numpy as np
import pandas as pd

from ptx_keras import constants as C

SIZE_CLASSES = ("small", "moderate", "large")
# How summaries name the scored masks (docs/evaluation.md uses the same words).
MASKS = {
    "gated": "framework output: mask emptied when the image is diagnosed negative",
    "raw": "raw mask: probability > mask_threshold, whatever the diagnosis",
}


def size_classes(true_area):
    """Pneumothorax size classes of Fig. 5: tertiles of the true area among the positive images.

    Args:
        true_area: `(n,)` true pneumothorax pixels per image.

    Returns:
        `(classes, bounds)`: object array `(n,)` with "small" (area <= first tertile), "moderate" (<= second
        tertile), "large" or "" for negatives; and `bounds`, the two tertiles in pixels (None with fewer than 3
        positives, when every positive is "moderate").
    """
    area = np.asarray(true_area, dtype=float)
    out = np.array([""] * len(area), dtype=object)
    pos = area > 0
    if pos.sum() < 3:
        out[pos] = "moderate"
        return out, None
    lo, hi = np.quantile(area[pos], [1 / 3, 2 / 3])
    out[pos] = np.where(area[pos] <= lo, "small", np.where(area[pos] <= hi, "moderate", "large"))
    return out, (float(lo), float(hi))


def _batch_spacings(ids, spacings):
    if spacings is None:
        return None
    if isinstance(spacings, dict):
        return [spacings.get(str(i)) for i in ids]
    if len(spacings) != len(ids):
        raise ValueError(f"spacings must have one entry per image ({len(ids)}). Received {len(spacings)} entries")
    return list(spacings)


def score_predictions(predictions, thresholds, spacings=None, gate_masks=True):
    """Per-image segmentation and diagnosis scores.

    The raw mask is `prob > thresholds.mask_threshold` and the diagnosis is the paper's area rule
    (`ptx_keras.diagnosis.diagnose`) on the same probabilities. With `gate_masks` (the framework's final output,
    `diagnosis.gate_masks` in the configuration) the segmentation metrics score the mask emptied when the image
    is diagnosed negative; otherwise the raw mask. The raw mask's Dice is always kept in `dsc1_raw`. The
    segmentation metrics follow eqs. 7-12 with the SIIM-ACR empty policy (`ptx_keras.metrics.segmentation_scores`).

    Args:
        predictions: One dict with `sample_id` (n,), `true` (n, H, W) bool and `prob` (n, H, W) probabilities
            (the output of `predict_split`), or an iterable of such dicts (the batches of `iter_predictions`).
        thresholds: A `ptx_keras.diagnosis.Thresholds`.
        spacings: None, a dict `{sample_id: (row_mm, col_mm) or None}` (see `spacing_lookup`), or with a single
            dict of predictions a sequence of n spacings. Adds `hd_mm` and `hd95_mm`.
        gate_masks: Score the framework's output (True) or the raw mask (False).

    Returns:
        pandas.DataFrame with one row per image: `sample_id`, `label` (1 = pneumothorax in the truth),
        `true_area`, `pred_area` (pixels of the scored mask), `mpa`, `pa0`, `pa1`, `dsc`, `dsc0`, `dsc1`, `hd`,
        `hd95` (pixels; `hd_mm`, `hd95_mm` with spacings), `dsc1_raw`, `diagnosis` (0/1), `score` (the ROC score
        of `diagnose`), `max_prob` and `size_class`.

    Raises:
        ValueError: on malformed predictions or thresholds.
    """
    from ptx_keras.diagnosis import Thresholds, diagnose
    from ptx_keras.metrics import batch_segmentation_scores

    if not isinstance(thresholds, Thresholds):
        raise ValueError(f"thresholds must be a Thresholds. Received: thresholds={thresholds!r}")
    if isinstance(predictions, dict):
        predictions = [predictions]
    frames = []
    for batch in predictions:
        ids = [str(s) for s in batch["sample_id"]]
        prob = np.asarray(batch["prob"], dtype=np.float32)
        true = np.asarray(batch["true"]).astype(bool)
        if prob.shape != true.shape or prob.ndim != 3:
            raise ValueError(
                f"prob and true must both be (n, H, W). Received: prob.shape={prob.shape}, true.shape={true.shape}"
            )
        dx = diagnose(prob, thresholds=thresholds)
        raw = prob > thresholds.mask_threshold
        pred = raw & (np.asarray(dx.label) == 1)[:, None, None] if gate_masks else raw
        df = batch_segmentation_scores(true, pred, spacings=_batch_spacings(ids, spacings), sample_ids=ids)
        inter = np.count_nonzero(true & raw, axis=(1, 2))
        total = np.count_nonzero(true, axis=(1, 2)) + np.count_nonzero(raw, axis=(1, 2))
        df["dsc1_raw"] = np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))
        df.insert(1, "label", (df["true_area"].to_numpy() > 0).astype(int))
        df["diagnosis"] = np.asarray(dx.label, int)
        df["score"] = np.asarray(dx.score, float)
        df["max_prob"] = np.asarray(dx.max_prob, float)
        frames.append(df)
    if not frames:
        raise ValueError("predictions is empty: there is nothing to score")
    df = pd.concat(frames, ignore_index=True)
    df["size_class"] = size_classes(df["true_area"].to_numpy())[0]
    return df


def num(v):
    """A JSON-ready float: None for None, NaN or infinity."""
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else None


def _describe_all(df):
    from ptx_keras.metrics import DISTANCE_METRICS, SEGMENTATION_METRICS, summarize_scores

    metrics = [m for m in dict.fromkeys((*SEGMENTATION_METRICS, *DISTANCE_METRICS, "dsc1_raw")) if m in df]
    out = {}
    for row in summarize_scores(df, positive=df["label"].to_numpy() == 1, metrics=metrics).itertuples():
        out.setdefault(row.subset, {})[row.metric] = {
            "mean": num(row.mean),
            "std": num(row.std),
            "n_valid": int(row.n_valid),
            "n_missing": int(row.n_missing),
        }
    return out


def summarize(df, thresholds, split, gate_masks=True):
    """The numbers of `summary.json`.

    Args:
        df: Per-image scores from `score_predictions`.
        thresholds: The thresholds used, as a JSON-ready dict (`SavedThresholds.describe()`: the three numbers
            and where they came from), recorded as they are.
        split: Name of the evaluated split.
        gate_masks: Whether `df` scores the framework's gated output (as `score_predictions` was called).

    Returns:
        dict with `split`, `n_images`, `n_positive`; `masks` (which mask the segmentation metrics score, and
        that `dsc1_raw` scores the raw one); `segmentation`: `{"all"|"positive": {metric: {mean, std, n_valid,
        n_missing}}}` (plus `all.siim_acr_dice`); `siim_acr_dice` (the mean of DSC1 over all images with empty =
        1); `diagnosis`: counts, the Table 3 scores as fractions (None where undefined, named in `undefined`),
        `youden` and `roc_auc`; `size_classes` (the tertile bounds and counts); `thresholds`; and the paper's
        values under `paper`. Missing values are None (JSON null).
    """
    from ptx_keras.diagnosis import diagnosis_scores, roc_auc

    labels = df["label"].to_numpy()
    dx = diagnosis_scores(labels, df["diagnosis"].to_numpy())
    has_both = 0 < labels.sum() < len(labels)
    auc = roc_auc(labels, df["score"].to_numpy()) if has_both else None
    seg = _describe_all(df)
    bounds = size_classes(df["true_area"].to_numpy())[1]
    diagnosis = {k: (v if isinstance(v, int) else num(v)) for k, v in dx.items() if k != "undefined"}
    scored = "gated" if gate_masks else "raw"
    return {
        "split": split,
        "n_images": int(len(df)),
        "n_positive": int(labels.sum()),
        "masks": {"scored": scored, "scored_description": MASKS[scored], "dsc1_raw": MASKS["raw"]},
        "segmentation": seg,
        "siim_acr_dice": seg["all"].get("siim_acr_dice", {}).get("mean"),
        "diagnosis": {**diagnosis, "undefined": list(dx["undefined"]), "roc_auc": num(auc)},
        "size_classes": {
            "definition": "tertiles of the true area (pixels) among the positive images of this split",
            "bounds_pixels": None if bounds is None else list(bounds),
            "counts": {s: int((df["size_class"] == s).sum()) for s in SIZE_CLASSES},
        },
        "thresholds": dict(thresholds),
        "paper": {
            "segmentation": {k: {"mean": m, "std": s} for k, (m, s) in C.PAPER_SEGMENTATION.items()},
            "diagnosis": dict(C.PAPER_DIAGNOSIS),
        },
    }
