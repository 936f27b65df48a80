"""Per-image scores of a split and their summary (paper Tables 2-3).

Which mask is scored: the framework's output by default (`diagnosis.gate_masks: true`: the mask of an image
diagnosed negative by the rule in force is emptied, as the paper's segmentation -> area classifier and SIIM-ACR
submissions do), else the raw mask (`probability > mask_threshold`). Every image also gets the DSC1 of the raw
mask (`dsc1_raw`), of the mask gated by the two-number rule (`dsc1_pair`: `min_area` pixels above
`mask_threshold`, the aux gate kept) and, when a triplet rule is in force, of the triplet's mask (`dsc1_triplet`),
so that every summary gives the SIIM-ACR mean Dice (empty = 1) of each. `MASKS` names them.

The image-level probability (`image_probability`) is the aux head's when the model has one, else the largest
pixel probability; summaries report its ROC AUC and calibration (reliability bins, ECE).
"""

import numpy as np
import pandas as pd

from ptx_keras import constants as C

__all__ = [
    "IMAGE_PROBABILITIES",
    "MASKS",
    "SIIM_MASKS",
    "SIZE_CLASSES",
    "image_probability",
    "num",
    "score_predictions",
    "size_classes",
    "summarize",
]


SIZE_CLASSES = ("small", "moderate", "large")
# How summaries name the scored masks (docs/evaluation.md uses the same words).
MASKS = {
    "gated": "framework output: mask emptied when the image is diagnosed negative",
    "raw": "raw mask: probability > mask_threshold, whatever the diagnosis",
    "pair": "gated by the two-number rule: mask emptied unless more than min_area pixels exceed mask_threshold",
    "triplet": "triplet: mask (probability > mask_threshold) emptied unless more than min_area pixels exceed "
    "top_threshold",
}
# The SIIM-ACR mean Dice reported per mask: (summary key, per-image column, MASKS key).
SIIM_MASKS = (("raw", "dsc1_raw", "raw"), ("gated", "dsc1_pair", "pair"), ("triplet", "dsc1_triplet", "triplet"))
IMAGE_PROBABILITIES = {
    "aux_prob": "the aux head's image-level probability (a sigmoid output; no calibration step applied)",
    "max_prob": "the largest pixel probability of the image (no aux head; not calibrated as an image-level "
    "probability, no calibration step applied)",
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


def image_probability(df):
    """`(values, column)`: the image-level probability of each image, the aux head's (`aux_prob`) when the
    predictions had one, else the largest pixel probability (`max_prob`); `IMAGE_PROBABILITIES` says which."""
    column = "aux_prob" if "aux_prob" in df else "max_prob"
    return df[column].to_numpy(float), column


def score_predictions(predictions, thresholds, spacings=None, gate_masks=True):
    """Per-image segmentation and diagnosis scores.

    The raw mask is `prob > thresholds.mask_threshold` and the diagnosis is the rule of `thresholds`
    (`ptx_keras.diagnosis.diagnose`: the paper's area rule, the triplet rule, the aux gate) on the same
    probabilities. With `gate_masks` (the framework's final output, `diagnosis.gate_masks` in the configuration)
    the segmentation metrics score the mask emptied when the image is diagnosed negative; otherwise the raw mask.
    The Dice of the raw mask (`dsc1_raw`), of the two-number rule's gated mask (`dsc1_pair`) and of the triplet's
    (`dsc1_triplet`, with a triplet rule) are always kept. The segmentation metrics follow eqs. 7-12 with the
    SIIM-ACR empty policy (`ptx_keras.metrics.segmentation_scores`).

    Args:
        predictions: One dict with `sample_id` (n,), `true` (n, H, W) bool and `prob` (n, H, W) probabilities
            (the output of `predict_split`), plus `aux` (n,) for a model with an aux head; or an iterable of such
            dicts (the batches of `iter_predictions`).
        thresholds: A `ptx_keras.diagnosis.Thresholds`.
        spacings: None, a dict `{sample_id: (row_mm, col_mm) or None}` (see `spacing_lookup`), or with a single
            dict of predictions a sequence of n spacings. Adds `hd_mm` and `hd95_mm`.
        gate_masks: Score the framework's output (True) or the raw mask (False).

    Returns:
        pandas.DataFrame with one row per image: `sample_id`, `label` (1 = pneumothorax in the truth),
        `true_area`, `pred_area` (pixels of the scored mask), `mpa`, `pa0`, `pa1`, `dsc`, `dsc0`, `dsc1`, `hd`,
        `hd95` (pixels; `hd_mm`, `hd95_mm` with spacings), `dsc1_raw`, `dsc1_pair`, `dsc1_triplet` (triplet rule
        only), `diagnosis` (0/1), `score` (the ROC score of `diagnose`), `max_prob`, `aux_prob` (aux head only)
        and `size_class`.

    Raises:
        ValueError: on malformed predictions or thresholds.
    """
    from ptx_keras.diagnosis import Thresholds, diagnose
    from ptx_keras.metrics.segmentation import batch_dice, batch_segmentation_scores

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
        aux = batch.get("aux")
        dx = diagnose(prob, thresholds=thresholds, aux_probability=aux)
        raw = prob > thresholds.mask_threshold
        final = raw & (np.asarray(dx.label) == 1)[:, None, None]
        pred = final if gate_masks else raw
        df = batch_segmentation_scores(true, pred, spacings=_batch_spacings(ids, spacings), sample_ids=ids)
        df["dsc1_raw"] = batch_dice(true, raw)
        if thresholds.top_threshold is None:
            df["dsc1_pair"] = batch_dice(true, final)
        else:
            pair = diagnose(prob, thresholds=thresholds.replace(top_threshold=None), aux_probability=aux)
            df["dsc1_pair"] = batch_dice(true, raw & (np.asarray(pair.label) == 1)[:, None, None])
            df["dsc1_triplet"] = batch_dice(true, final)
        df.insert(1, "label", (df["true_area"].to_numpy() > 0).astype(int))
        df["diagnosis"] = np.asarray(dx.label, int)
        df["score"] = np.asarray(dx.score, float)
        df["max_prob"] = np.asarray(dx.max_prob, float)
        if aux is not None:
            df["aux_prob"] = np.asarray(aux, float).reshape(-1)
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

    metrics = [
        m
        for m in dict.fromkeys((*SEGMENTATION_METRICS, *DISTANCE_METRICS, "dsc1_raw", "dsc1_pair", "dsc1_triplet"))
        if m in df
    ]
    out = {}
    for row in summarize_scores(df, positive=df["label"].to_numpy() == 1, metrics=metrics).itertuples():
        out.setdefault(row.subset, {})[row.metric] = {
            "mean": num(row.mean),
            "std": num(row.std),
            "n_valid": int(row.n_valid),
            "n_missing": int(row.n_missing),
        }
    return out


def summarize(df, thresholds, split, gate_masks=True, tta="none"):
    """The numbers of `summary.json`.

    Args:
        df: Per-image scores from `score_predictions`.
        thresholds: The thresholds used, as a JSON-ready dict (`SavedThresholds.describe()`: the rule's numbers
            and where they came from), recorded as they are.
        split: Name of the evaluated split.
        gate_masks: Whether `df` scores the framework's gated output (as `score_predictions` was called).
        tta: The test-time augmentation the predictions were made with (recorded).

    Returns:
        dict with `split`, `n_images`, `n_positive`; `masks` (which mask the segmentation metrics score, and
        that `dsc1_raw` scores the raw one); `segmentation`: `{"all"|"positive": {metric: {mean, std, n_valid,
        n_missing}}}` (plus `all.siim_acr_dice`); `siim_acr_dice` (the mean of DSC1 of the scored masks over all
        images with empty = 1); `siim_acr_dice_by_mask`: the same for the `raw`, `gated` (two-number rule) and,
        with a triplet rule, `triplet` masks (`SIIM_MASKS`); `diagnosis`: counts, the Table 3 scores as
        fractions (None where undefined, named in `undefined`), `youden`, `roc_auc` (of the area score) and, with
        an aux head, `aux_roc_auc`; `calibration` of the image-level probability (`image_probability`: which one,
        `ece`, `mce`, `brier`, `n_bins` and the reliability `bins`); `inference` (`tta`); `size_classes` (the
        tertile bounds and counts); `thresholds`; and the paper's values under `paper`. Missing values are None
        (JSON null).
    """
    from ptx_keras.diagnosis import calibration, diagnosis_scores, roc_auc

    labels = df["label"].to_numpy()
    dx = diagnosis_scores(labels, df["diagnosis"].to_numpy())
    has_both = 0 < labels.sum() < len(labels)
    auc = roc_auc(labels, df["score"].to_numpy()) if has_both else None
    aux_auc = roc_auc(labels, df["aux_prob"].to_numpy()) if has_both and "aux_prob" in df else None
    probability, column = image_probability(df)
    cal = calibration(labels, probability)
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
        "siim_acr_dice_by_mask": {
            key: {"mean": num(df[column].mean()), "mask": MASKS[mask]}
            for key, column, mask in SIIM_MASKS
            if column in df
        },
        "diagnosis": {
            **diagnosis,
            "undefined": list(dx["undefined"]),
            "roc_auc": num(auc),
            **({"aux_roc_auc": num(aux_auc)} if "aux_prob" in df else {}),
        },
        "calibration": {
            "image_probability": column,
            "description": IMAGE_PROBABILITIES[column],
            "ece": num(cal["ece"]),
            "mce": num(cal["mce"]),
            "brier": num(cal["brier"]),
            "n_bins": int(len(cal["bins"])),
            "bins": [
                {k: (int(v) if k == "n" else num(v)) for k, v in row.items()} for row in cal["bins"].to_dict("records")
            ],
        },
        "inference": {"tta": tta},
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
