"""Evaluation: predict a split, score it like the paper (Tables 2-3, Figs. 5-6) and compare runs.

`evaluate_run(run_dir)` is what `python evaluate.py RUN_DIR` runs. It loads `RUN_DIR/best.keras` (the
architecture is never rebuilt), predicts the split with a progress bar and writes `RUN_DIR/eval/<split>/`:

* `per_image.csv` - one row per image: `sample_id`, `label` (1 = pneumothorax in the truth), `true_area`,
  `pred_area` (pixels at the model resolution), `mpa`, `pa0`, `pa1`, `dsc`, `dsc0`, `dsc1`, `hd`, `hd95`
  (pixels; `hd_mm`, `hd95_mm` too when the data has a pixel spacing), `diagnosis` (0/1), `score` (the ROC score
  of `ptx_keras.diagnosis.diagnose`), `max_prob` and `size_class` (small / moderate / large for positives);
* `summary.json`, `summary.md` - mean (std) over all images and over positives like Table 2 beside the paper's
  values, the diagnosis table like Table 3 with ROC AUC, the SIIM-ACR mean Dice (empty = 1), missing HD counts
  and the thresholds used with their source;
* `cases.png` (best / median / worst DSC1 per pneumothorax size, like Fig. 5), `dsc_histogram.png` (Fig. 6),
  `roc.png`, `training_curves.png` (from `RUN_DIR/history.csv`).

Metric definitions and the empty-mask policy are those of `ptx_keras.metrics.segmentation`; the diagnosis rule
and its scores are `ptx_keras.diagnosis`. docs/evaluation.md describes every output.

Memory: scores are computed batch by batch while predicting (`iter_predictions` + `score_predictions`), so
evaluation holds one batch of probability maps plus one table row per image; the few images drawn in
`cases.png` are predicted again in a second pass that runs the model only on the batches holding them.
`predict_split` (everything in memory) remains for small sets and interactive use.

Thresholds: the diagnosis rule's `mask_threshold` and `min_area` are the configuration's (the paper's 0.5 and
50 pixels at 256 x 256) unless a validation search chose others: `search_thresholds=True` (CLI
`--search-thresholds`, or `evaluation.search_thresholds: true` in the run's configuration) predicts the
validation split, picks the grid pair that maximises F1 (or Youden's J), saves it to
`RUN_DIR/eval/val/thresholds.json` with the full grid in `threshold_search.csv`, and applies it unchanged to the
evaluated split. The test split is never used to choose them. A saved search is reused by later evaluations and
by the SavedModel export (`ptx_keras.export.run_thresholds`); the same `mask_threshold` binarises the masks
that the segmentation metrics score.
"""

import hashlib
import json
import os
import sys

import numpy as np
import pandas as pd

from ptx_keras import constants as C
from ptx_keras.errors import DataError, ModelError, PtxError

THRESHOLDS_FILENAME = "thresholds.json"
THRESHOLD_GRID_FILENAME = "threshold_search.csv"
PER_IMAGE_FILENAME = "per_image.csv"
SUMMARY_JSON_FILENAME = "summary.json"
SUMMARY_MD_FILENAME = "summary.md"
SIZE_CLASSES = ("small", "moderate", "large")
CASE_PICKS = ("best", "median", "worst")
COMPARED_METRICS = ("mpa", "pa1", "dsc", "dsc1", "hd", "hd95")
DIAGNOSIS_KEYS = C.DIAGNOSIS_KEYS
_DIAGNOSIS_NAMES = {
    "accuracy": "Accuracy",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "f1": "F1",
}


def _check_split(split):
    if split not in C.SPLITS:
        raise DataError(f"Unknown split {split!r}; use one of {', '.join(C.SPLITS)}")
    return split


# --------------------------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------------------------
def check_input_size(model, prepared_dir):
    """Checks that a prepared data set has the resolution the model was built for.

    Args:
        model: A Keras model with input `(batch, S, S, C)`.
        prepared_dir: A prepared data set (see `ptx_keras.data.prepare_dataset`).

    Returns:
        `(size, channels)`: the data's side in pixels and the model's input channels.

    Raises:
        DataError: if `prepared_dir` is not a prepared data set or its size differs from the model's input.
    """
    from ptx_keras.data.prepare import load_prepared_info

    size = int(load_prepared_info(prepared_dir)["image_size"])
    in_h, in_w, in_c = model.input_shape[1:4]
    if (in_h, in_w) != (None, None) and (in_h, in_w) != (size, size):
        raise DataError(
            f"{prepared_dir} is prepared at {size}x{size} but the model expects {in_h}x{in_w} inputs; prepare the "
            f"data at that size (ptx-prepare SOURCE OUT --size {in_h}) or pass --data with the raw source"
        )
    return size, in_c


def iter_predictions(model, prepared_dir, split, batch_size=8, channels=None, progress=True, only_ids=None):
    """Predicts one split of a prepared data set, one batch at a time.

    Args:
        model: A Keras model mapping `(batch, S, S, C)` to `(batch, S, S, 2)` softmax.
        prepared_dir: A prepared data set at the model's resolution (see `check_input_size`).
        split: `"train"`, `"val"` or `"test"`.
        batch_size: Images per forward pass.
        channels: Input channels; defaults to the model's.
        progress: Show a progress bar (images read).
        only_ids: Optional set of sample ids: the model runs only on batches holding one of them and only
            those images are yielded (used to fetch the images drawn in a figure without a full second pass).

    Yields:
        dict per batch of b images: `sample_id` (b,) str, `image` (b, S, S) float32 in [0, 1] (first channel),
        `true` (b, S, S) bool, `prob` (b, S, S) float16 pneumothorax probabilities.

    Raises:
        DataError: if the split is unknown or has no images.
    """
    from tqdm.auto import tqdm

    from ptx_keras.data.pipeline import count_examples, make_dataset
    from ptx_keras.targets import mask_of

    _check_split(split)
    in_c = model.input_shape[-1]
    channels = channels or in_c
    n = count_examples(prepared_dir, split)
    if n == 0:
        raise DataError(f"The {split} split of {prepared_dir} has no images")
    wanted = None if only_ids is None else {str(i) for i in only_ids}
    ds = make_dataset(prepared_dir, split, batch_size, False, channels=channels, with_ids=True)
    desc = f"predict {split}" if wanted is None else f"figures {split}"
    with tqdm(total=n, desc=desc, unit="image", disable=not progress) as bar:
        for image, y_true, sample_id in ds:
            ids = np.array([s.decode() for s in sample_id.numpy()])
            bar.update(len(ids))
            keep = np.ones(len(ids), bool) if wanted is None else np.isin(ids, list(wanted))
            if not keep.any():
                continue
            out = np.asarray(model.predict_on_batch(image))
            yield {
                "sample_id": ids[keep],
                "image": image.numpy()[keep, ..., 0].astype(np.float32),
                "true": (np.asarray(mask_of(y_true)) > 0.5)[keep],
                "prob": out[keep, ..., C.PTX_CLASS].astype(np.float16),
            }


def predict_split(model, prepared_dir, split, batch_size=8, channels=None, progress=True):
    """Predicts a whole split into memory (for small sets; `evaluate_run` streams instead).

    Memory: about 7 bytes per pixel (float32 image, float16 probability, bool mask), i.e. 0.46 MB per
    256 x 256 image or 0.9 GB for 2,000 such images.

    Args:
        model, prepared_dir, split, batch_size, channels, progress: As `iter_predictions`.

    Returns:
        dict of NumPy arrays over the split's n images: `sample_id` (n,) str, `image` (n, S, S) float32 in
        [0, 1], `true` (n, S, S) bool, `prob` (n, S, S) float16 PTX probabilities.

    Raises:
        DataError: if the data's resolution differs from the model's input size, or the split is empty.
    """
    check_input_size(model, prepared_dir)
    batches = list(iter_predictions(model, prepared_dir, split, batch_size, channels, progress))
    return {k: np.concatenate([b[k] for b in batches]) for k in ("sample_id", "image", "true", "prob")}


# --------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------
def spacing_lookup(prepared_dir):
    """Pixel spacing per sample at the prepared size, from the manifest.

    Returns:
        dict `{sample_id: (row_mm, col_mm) or None}`, or None when no sample has a known spacing (then no
        millimetre columns are written).
    """
    manifest = pd.read_csv(os.path.join(prepared_dir, "manifest.csv"), dtype={"sample_id": str})
    if not {"spacing_row_mm", "spacing_col_mm"} <= set(manifest.columns):
        return None
    rows = manifest[["spacing_row_mm", "spacing_col_mm"]].to_numpy(float)
    if not np.isfinite(rows).all(axis=1).any():
        return None
    return {
        sid: (tuple(r) if np.isfinite(r).all() else None) for sid, r in zip(manifest["sample_id"], rows.tolist())
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


def score_predictions(predictions, thresholds, spacings=None):
    """Per-image segmentation and diagnosis scores.

    The predicted mask is `prob > thresholds["mask_threshold"]` and the diagnosis is the paper's area rule
    (`ptx_keras.diagnosis.diagnose`) on the same probabilities. With `thresholds["gate_masks"]` true (the
    framework's final output, `diagnosis.gate_masks` in the configuration) the mask of an image diagnosed
    negative is emptied before scoring, as the paper's pipeline (segmentation -> area classifier) and SIIM-ACR
    submissions do; the Dice of the raw mask is kept in `dsc1_ungated`. The segmentation metrics follow eqs.
    7-12 with the SIIM-ACR empty policy (`ptx_keras.metrics.segmentation_scores`).

    Args:
        predictions: One dict with `sample_id` (n,), `true` (n, H, W) bool and `prob` (n, H, W) probabilities
            (the output of `predict_split`), or an iterable of such dicts (the batches of `iter_predictions`).
        thresholds: dict with `min_area`, `mask_threshold` and `reference_size`.
        spacings: None, a dict `{sample_id: (row_mm, col_mm) or None}` (see `spacing_lookup`), or with a single
            dict of predictions a sequence of n spacings. Adds `hd_mm` and `hd95_mm`.

    Returns:
        pandas.DataFrame with one row per image and the columns listed in the module docstring.

    Raises:
        ValueError: on malformed predictions or thresholds.
    """
    from ptx_keras.diagnosis import diagnose
    from ptx_keras.metrics import batch_segmentation_scores

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
        dx = diagnose(prob, thresholds["min_area"], thresholds["mask_threshold"], thresholds["reference_size"])
        raw = prob > thresholds["mask_threshold"]
        pred = raw & (np.asarray(dx.label) == 1)[:, None, None] if thresholds.get("gate_masks") else raw
        df = batch_segmentation_scores(true, pred, spacings=_batch_spacings(ids, spacings), sample_ids=ids)
        inter = np.count_nonzero(true & raw, axis=(1, 2))
        total = np.count_nonzero(true, axis=(1, 2)) + np.count_nonzero(raw, axis=(1, 2))
        df["dsc1_ungated"] = np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))
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


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else None


def _describe_all(df):
    from ptx_keras.metrics import DISTANCE_METRICS, SEGMENTATION_METRICS, summarize_scores

    metrics = [m for m in dict.fromkeys((*SEGMENTATION_METRICS, *DISTANCE_METRICS, "dsc1_ungated")) if m in df]
    out = {}
    for row in summarize_scores(df, positive=df["label"].to_numpy() == 1, metrics=metrics).itertuples():
        out.setdefault(row.subset, {})[row.metric] = {
            "mean": _num(row.mean),
            "std": _num(row.std),
            "n_valid": int(row.n_valid),
            "n_missing": int(row.n_missing),
        }
    return out


def summarize(df, thresholds, split):
    """The numbers of `summary.json`.

    Args:
        df: Per-image scores from `score_predictions`.
        thresholds: The thresholds used (recorded as they are, with their `source`).
        split: Name of the evaluated split.

    Returns:
        dict with `split`, `n_images`, `n_positive`; `segmentation`: `{"all"|"positive": {metric: {mean, std,
        n_valid, n_missing}}}` (plus `all.siim_acr_dice`); `siim_acr_dice` (the mean of DSC1 over all images
        with empty = 1); `diagnosis`: counts, the Table 3 scores as fractions (None where undefined, named in
        `undefined`), `youden` and `roc_auc`; `size_classes` (the tertile bounds and counts); `thresholds`;
        and the paper's values under `paper`. Missing values are None (JSON null).
    """
    from ptx_keras.diagnosis import diagnosis_scores, roc_auc

    labels = df["label"].to_numpy()
    dx = diagnosis_scores(labels, df["diagnosis"].to_numpy())
    has_both = 0 < labels.sum() < len(labels)
    auc = roc_auc(labels, df["score"].to_numpy()) if has_both else None
    seg = _describe_all(df)
    bounds = size_classes(df["true_area"].to_numpy())[1]
    diagnosis = {k: (v if isinstance(v, int) else _num(v)) for k, v in dx.items() if k != "undefined"}
    return {
        "split": split,
        "n_images": int(len(df)),
        "n_positive": int(labels.sum()),
        "segmentation": seg,
        "siim_acr_dice": seg["all"].get("siim_acr_dice", {}).get("mean"),
        "diagnosis": {**diagnosis, "undefined": list(dx["undefined"]), "roc_auc": _num(auc)},
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


def _fmt(stats, digits=2):
    from ptx_keras.metrics import format_mean_std

    if not stats or stats.get("mean") is None:
        return "n/a"
    std = stats.get("std")
    return format_mean_std(stats["mean"], np.nan if std is None else std, digits)


def _threshold_source(t):
    if t.get("source") == "validation search":
        value = t.get("value")
        value = "" if value is None else f" = {value:.4f}"
        stale = "; WARNING: chosen for an earlier best.keras" if t.get("stale") else ""
        return f"chosen on the validation split, {t.get('objective', 'f1')}{value}{stale}"
    return "the run configuration's `diagnosis` section"


def summary_markdown(summary, run_name=""):
    """Renders `summary` (from `summarize`) as Markdown in the layout of the paper's Tables 2 and 3.

    Args:
        summary: dict returned by `summarize`.
        run_name: Shown in the title.

    Returns:
        str, the Markdown document (ends with links to the figures written beside it).
    """
    seg = summary["segmentation"]
    t = summary["thresholds"]
    lines = [
        f"# Evaluation of {run_name or 'the run'} on the {summary['split']} split",
        "",
        f"{summary['n_images']} images, {summary['n_positive']} with pneumothorax. Predicted mask: probability > "
        f"{t['mask_threshold']:g}; diagnosis: pneumothorax when the mask has more than {t['min_area']:g} pixels at "
        f"{t['reference_size']}x{t['reference_size']} (thresholds: {_threshold_source(t)})."
        + (" The mask of an image diagnosed negative is emptied before scoring (diagnosis.gate_masks); "
           "DSC1_UNGATED scores the raw mask." if t.get("gate_masks") else ""),
        "",
        "## Segmentation (mean (std) per image; cf. Table 2)",
        "",
        "| metric | all images | PTX-positive images | paper (MS_scSE_FC-DenseNet) |",
        "|---|---|---|---|",
    ]
    for metric in ("mpa", "pa1", "dsc", "dsc1", "dsc1_ungated", "hd", "hd95", "hd_mm", "hd95_mm"):
        if metric not in seg.get("all", {}):
            continue
        paper = C.PAPER_SEGMENTATION.get(metric)
        paper_txt = f"{paper[0]:.2f} ({paper[1]:.2f})" if paper else ""
        cells = []
        for subset in ("all", "positive"):
            st = seg.get(subset, {}).get(metric)
            cell = _fmt(st)
            if st and st["n_missing"]:
                cell += f" [{st['n_missing']} undefined]"
            cells.append(cell)
        name = metric.upper().replace("_MM", " (mm)")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {paper_txt} |")
    lines += [
        "",
        f"SIIM-ACR mean Dice (DSC1 with empty = 1, all images): {_fmt(seg['all'].get('siim_acr_dice'), 4)}. "
        "A class absent from both truth and prediction scores 1, absent from one only 0. HD/HD95 (pixels) are "
        "undefined where the truth or the prediction is empty; such images are counted, never averaged.",
        "",
        "## Diagnosis (cf. Table 3)",
        "",
        "| score | ours | paper |",
        "|---|---|---|",
    ]
    dx = summary["diagnosis"]
    for key in DIAGNOSIS_KEYS:
        v = dx.get(key)
        ours = "undefined" if v is None else f"{100 * v:.2f} %"
        lines.append(f"| {_DIAGNOSIS_NAMES[key]} | {ours} | {100 * C.PAPER_DIAGNOSIS[key]:.2f} % |")
    auc = dx.get("roc_auc")
    lines += [
        f"| ROC AUC | {'undefined' if auc is None else f'{auc:.4f}'} | |",
        "",
        f"Counts: TP {dx['tp']}, FP {dx['fp']}, TN {dx['tn']}, FN {dx['fn']}.",
    ]
    if dx.get("undefined"):
        lines.append(f"Undefined (zero denominator): {', '.join(dx['undefined'])}.")
    sizes = summary.get("size_classes", {})
    if sizes.get("bounds_pixels"):
        lo, hi = sizes["bounds_pixels"]
        c = sizes["counts"]
        lines += [
            "",
            f"Size classes (Fig. 5, tertiles of the true area): small <= {lo:g} px ({c['small']} images), "
            f"moderate <= {hi:g} px ({c['moderate']}), large ({c['large']}).",
        ]
    lines += ["", "## Figures", ""]
    for name, caption in (
        ("cases", "best / median / worst DSC1 per size"),
        ("dsc_histogram", "DSC histogram (Fig. 6)"),
        ("roc", "diagnosis ROC curve"),
        ("training_curves", "training curves"),
    ):
        if name in summary.get("figures", {}):
            lines.append(f"![{caption}]({name}.png)")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------------
def pick_cases(df):
    """The cases of `cases.png`: best, median and worst DSC1 in each size class (paper Fig. 5).

    Args:
        df: Per-image scores from `score_predictions`.

    Returns:
        list of rows (one per size class present, in `SIZE_CLASSES` order), each a list of
        `(size_class, pick, row_index)` for `CASE_PICKS` ("best" = highest DSC1); an image is listed once even
        when a class has fewer than 3 images. Ties keep the table order.
    """
    rows = []
    dsc1 = df["dsc1"].to_numpy()
    for size in SIZE_CLASSES:
        idx = np.flatnonzero(df["size_class"].to_numpy() == size)
        if not idx.size:
            continue
        order = idx[np.argsort(-dsc1[idx], kind="stable")]
        row, seen = [], set()
        for pick, i in zip(CASE_PICKS, (order[0], order[len(order) // 2], order[-1])):
            if i not in seen:  # a class with fewer than 3 images shows each image once
                seen.add(i)
                row.append((size, pick, int(i)))
        rows.append(row)
    return rows


def _case_panel(row, data, pick_title, mask_threshold, gate=False):
    hd = "n/a" if not np.isfinite(row["hd"]) else f"{row['hd']:.1f} px"
    pred = np.asarray(data["prob"], np.float32) > mask_threshold
    if gate and not row["diagnosis"]:
        pred = np.zeros_like(pred)
    return {
        "image": data["image"],
        "true": data["true"],
        "pred": pred,
        "title": f"{pick_title}: {row['sample_id']}",
        "caption": f"DSC1 {row['dsc1']:.2f}\nHD {hd}",
    }


def write_figures(df, out_dir, thresholds, case_data=None, history_path=None, split="test"):
    """Writes cases.png, dsc_histogram.png, roc.png and training_curves.png.

    Args:
        df: Per-image scores from `score_predictions`.
        out_dir: Folder to write into.
        thresholds: The thresholds used (`mask_threshold` draws the predicted masks).
        case_data: dict `{sample_id: {"image", "true", "prob"}}` holding at least the images of `pick_cases(df)`
            (see `collect_cases`); None skips `cases.png`.
        history_path: `history.csv` of the run; skipped when absent.
        split: Split name for the titles.

    Returns:
        dict `{figure name: path}` of the figures written.
    """
    from ptx_keras.diagnosis import diagnosis_scores, roc_auc, roc_curve
    from ptx_keras.figures import evaluation as fig

    paths = {}
    picks = pick_cases(df)
    if picks and case_data is not None:
        rows = [
            [
                _case_panel(df.iloc[i], case_data[str(df.iloc[i]["sample_id"])], f"{size}, {pick}",
                            thresholds["mask_threshold"], bool(thresholds.get("gate_masks")))
                for size, pick, i in row
            ]
            for row in picks
        ]
        paths["cases"] = fig.plot_cases(
            rows, os.path.join(out_dir, "cases.png"),
            title=f"Best / median / worst DSC1 per pneumothorax size ({split} split)", show_image=True,
        )
    pos = df["label"].to_numpy() == 1
    paths["dsc_histogram"] = fig.plot_score_histograms(
        {"DSC, all images": df["dsc"].to_numpy(), "DSC1, PTX-positive images": df["dsc1"].to_numpy()[pos]},
        os.path.join(out_dir, "dsc_histogram.png"),
        metric="Dice (DSC: mean of both classes; DSC1: pneumothorax)",
        title=f"Per-image Dice on the {split} split (cf. Fig. 6)",
    )
    labels = df["label"].to_numpy()
    if 0 < labels.sum() < len(labels):
        scores = df["score"].to_numpy()
        fpr, tpr, _ = roc_curve(labels, scores)
        dx = diagnosis_scores(labels, df["diagnosis"].to_numpy())
        point = (1 - dx["specificity"], dx["sensitivity"])
        t = thresholds
        label = f"> {t['min_area']:g} px at {t['reference_size']}, p > {t['mask_threshold']:g}"
        paths["roc"] = fig.plot_roc(
            fpr, tpr, roc_auc(labels, scores), os.path.join(out_dir, "roc.png"), operating_point=point,
            operating_label=label,
            title=f"Diagnosis ROC, {split} split ({int(labels.sum())} positive / {int((1 - labels).sum())} negative)",
        )
    if history_path and os.path.isfile(history_path):
        paths["training_curves"] = fig.plot_history(history_path, os.path.join(out_dir, "training_curves.png"))
    return paths


def collect_cases(batches):
    """Gathers `{sample_id: {"image", "true", "prob"}}` from prediction batches (e.g. `iter_predictions`)."""
    out = {}
    for batch in [batches] if isinstance(batches, dict) else batches:
        for j, sid in enumerate(batch["sample_id"]):
            out[str(sid)] = {k: batch[k][j] for k in ("image", "true", "prob")}
    return out


# --------------------------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------------------------
def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_thresholds(cfg):
    """The configuration's diagnosis thresholds (the paper's 0.5 and 50 pixels at 256 x 256 by default)."""
    return {
        "min_area": float(cfg.diagnosis.min_area),
        "mask_threshold": float(cfg.diagnosis.mask_threshold),
        "reference_size": int(cfg.diagnosis.reference_size),
        "source": "configuration",
    }


def search_validation_thresholds(model, prepared_dir, run_dir, cfg, batch_size, objective="f1", progress=True,
                                 model_sha256=None):
    """Chooses `(mask_threshold, min_area)` on the VALIDATION split and saves them; never looks at test.

    The grid is `constants.SEARCH_MASK_THRESHOLDS` x `constants.SEARCH_MIN_AREAS` (areas at
    `cfg.diagnosis.reference_size`); ties go to the pair nearest the paper's (0.5, 50)
    (`ptx_keras.diagnosis.search_thresholds`). Areas are counted batch by batch while predicting.

    Args:
        model: The run's model.
        prepared_dir: Prepared data at the model's resolution.
        run_dir: The run directory; writes `eval/val/thresholds.json` and `eval/val/threshold_search.csv`.
        cfg: The run configuration.
        batch_size: Prediction batch size.
        objective: "f1" or "youden".
        progress: Show a progress bar.
        model_sha256: Hash of `best.keras`, recorded so that a later evaluation can tell a stale search.

    Returns:
        dict with `min_area`, `mask_threshold`, `reference_size`, `source` ("validation search"),
        `objective`, `value`, `split`, `n_images`, `n_positive`, `model_sha256` and `file`.

    Raises:
        DataError: if the validation split is empty or lacks positive or negative images.
        ValueError: for an unknown objective.
    """
    from ptx_keras.diagnosis import OBJECTIVES, areas_at_thresholds, search_thresholds

    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}. Received: objective={objective!r}")
    labels, areas, pixels = [], [], []
    for batch in iter_predictions(model, prepared_dir, "val", batch_size, progress=progress):
        a, p = areas_at_thresholds(batch["prob"].astype(np.float32), C.SEARCH_MASK_THRESHOLDS)
        areas.append(a)
        pixels.append(p)
        labels.append(batch["true"].reshape(len(a), -1).any(axis=1))
    labels = np.concatenate(labels).astype(int)
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == len(labels):
        raise DataError(
            f"Cannot search the diagnosis thresholds: the validation split of {prepared_dir} has {n_pos} positive "
            f"and {len(labels) - n_pos} negative images; both kinds are needed"
        )
    result = search_thresholds(
        labels, areas=np.concatenate(areas), pixels=np.concatenate(pixels), objective=objective,
        reference_size=int(cfg.diagnosis.reference_size),
    )
    out_dir = os.path.join(run_dir, "eval", "val")
    os.makedirs(out_dir, exist_ok=True)
    result["grid"].to_csv(os.path.join(out_dir, THRESHOLD_GRID_FILENAME), index=False)
    path = os.path.join(out_dir, THRESHOLDS_FILENAME)
    thresholds = {
        "min_area": float(result["min_area"]),
        "mask_threshold": float(result["mask_threshold"]),
        "reference_size": int(cfg.diagnosis.reference_size),
        "source": "validation search",
        "objective": objective,
        "value": _num(result["value"]),
        "split": "val",
        "n_images": int(len(labels)),
        "n_positive": n_pos,
        "model_sha256": model_sha256,
    }
    with open(path, "w") as f:
        json.dump(thresholds, f, indent=2)
    print(
        f"Thresholds chosen on {len(labels)} validation images ({objective} = {result['value']:.4f}): mask "
        f"probability > {thresholds['mask_threshold']:g}, area > {thresholds['min_area']:g} px at "
        f"{thresholds['reference_size']} -> {path}"
    )
    return {**thresholds, "file": path}


def load_thresholds(run_dir, cfg, model_sha256=None):
    """The thresholds a run uses: its saved validation search if there is one, else the configuration's.

    Args:
        run_dir: The run directory.
        cfg: The run configuration.
        model_sha256: Hash of the current `best.keras`; when the saved search recorded another, the thresholds
            are still used (as the export does) but marked `stale` and a warning is printed.

    Returns:
        dict with `min_area`, `mask_threshold`, `reference_size`, `source` and, for a saved search, its other
        fields plus `file`.

    Raises:
        DataError: if the saved thresholds file is unreadable or invalid.
    """
    path = os.path.join(run_dir, "eval", "val", THRESHOLDS_FILENAME)
    if not os.path.isfile(path):
        return config_thresholds(cfg)
    try:
        with open(path) as f:
            saved = json.load(f)
        t = {
            "min_area": float(saved["min_area"]),
            "mask_threshold": float(saved["mask_threshold"]),
            "reference_size": int(saved["reference_size"]),
        }
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise DataError(f"{path}: unreadable thresholds file ({type(e).__name__}: {e}); delete it or rerun "
                        "--search-thresholds") from None
    if t["min_area"] < 0 or not 0.0 < t["mask_threshold"] < 1.0 or t["reference_size"] < 1:
        raise DataError(f"{path}: thresholds out of range: {t}; delete it or rerun --search-thresholds")
    out = {**saved, **t, "source": saved.get("source", "validation search"), "file": path}
    recorded = saved.get("model_sha256")
    if model_sha256 and recorded and recorded != model_sha256:
        out["stale"] = True
        print(
            f"warning: {path} was chosen for an earlier best.keras; using it anyway (as the export does). Rerun "
            "with --search-thresholds to choose thresholds for the current model.",
            file=sys.stderr,
        )
    return out


# --------------------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------------------
def _resolve_prepared(run_dir, cfg, data):
    from ptx_keras.data.prepare import is_prepared_dir

    if data is None:
        prepared = cfg.data.prepared_dir
        if not prepared or not os.path.isdir(prepared):
            raise DataError(f"The prepared data of {run_dir} is not at {prepared!r} any more; pass --data PATH")
        return prepared
    if not os.path.exists(data):
        raise DataError(f"Data path does not exist: {data}")
    if is_prepared_dir(data):
        # Used as it is: check_input_size compares its resolution with the model's, not with the config's.
        return os.path.abspath(data)
    from ptx_keras.training import resolve_data

    cfg.data.path = data
    return resolve_data(cfg)


def evaluate_run(run_dir, data=None, split="test", search_thresholds=None, batch_size=None, progress=True,
                 objective=None):
    """Evaluates `RUN_DIR/best.keras` on one split and writes `RUN_DIR/eval/<split>/`.

    Args:
        run_dir: A run directory written by training (`config.yaml` and `best.keras`).
        data: Optional data: a prepared directory (used as it is; must match the model's input size) or a raw
            source (prepared with the run's data settings); by default the run's own prepared data.
        split: The split to evaluate (`"test"` by default).
        search_thresholds: Choose the diagnosis thresholds on the validation split first; None follows the
            run configuration's `evaluation.search_thresholds`.
        batch_size: Prediction batch size (default: the run's `evaluation.batch_size`).
        progress: Show progress bars.
        objective: Objective of the search, "f1" or "youden" (default: the run's `evaluation.objective`).

    Returns:
        dict with the `summarize` numbers plus `out_dir`, `per_image_csv`, `summary_json`, `summary_md`,
        `figures_dir` and `figures` (`{name: path}`).

    Raises:
        ModelError: if the run directory or its `best.keras` is missing, or the model cannot be loaded.
        DataError: for an unknown split, missing data, data at another resolution than the model, or an empty
            split.
        ConfigError: if the run directory has no `config.yaml`.
    """
    from ptx_keras.config import load_run_config
    from ptx_keras.loading import load_model

    _check_split(split)
    if not os.path.isdir(run_dir):
        raise ModelError(f"Run directory not found: {run_dir}")
    model_path = os.path.join(run_dir, "best.keras")
    if not os.path.isfile(model_path):
        raise ModelError(f"{run_dir} has no trained model (best.keras); train it first or pass another run")
    cfg = load_run_config(run_dir)
    prepared = _resolve_prepared(run_dir, cfg, data)
    batch_size = batch_size or cfg.evaluation.batch_size
    if search_thresholds is None:
        search_thresholds = bool(cfg.evaluation.search_thresholds)
    model = load_model(model_path)
    check_input_size(model, prepared)
    model_sha = _file_sha256(model_path)
    if search_thresholds:
        thresholds = search_validation_thresholds(
            model, prepared, run_dir, cfg, batch_size, objective or cfg.evaluation.objective, progress, model_sha
        )
    else:
        thresholds = load_thresholds(run_dir, cfg, model_sha)
    thresholds = {**thresholds, "gate_masks": bool(cfg.diagnosis.gate_masks)}

    df = score_predictions(
        iter_predictions(model, prepared, split, batch_size, progress=progress), thresholds,
        spacings=spacing_lookup(prepared),
    )
    out_dir = os.path.join(run_dir, "eval", split)
    os.makedirs(out_dir, exist_ok=True)
    per_image = os.path.join(out_dir, PER_IMAGE_FILENAME)
    df.to_csv(per_image, index=False)

    wanted = {df.iloc[i]["sample_id"] for row in pick_cases(df) for _, _, i in row}
    case_data = collect_cases(iter_predictions(model, prepared, split, batch_size, progress=False, only_ids=wanted))
    figures = write_figures(df, out_dir, thresholds, case_data, os.path.join(run_dir, "history.csv"), split)

    summary = summarize(df, thresholds, split)
    summary.update(run_dir=os.path.abspath(run_dir), model=os.path.abspath(model_path), model_sha256=model_sha,
                   data=os.path.abspath(prepared), figures={k: os.path.basename(v) for k, v in figures.items()})
    summary_json = os.path.join(out_dir, SUMMARY_JSON_FILENAME)
    with open(summary_json, "w") as f:
        json.dump(summary, f, indent=2)
    summary_md = os.path.join(out_dir, SUMMARY_MD_FILENAME)
    with open(summary_md, "w") as f:
        f.write(summary_markdown(summary, os.path.basename(os.path.normpath(run_dir))))
    dx = summary["diagnosis"]
    f1 = "undefined" if dx["f1"] is None else f"{dx['f1']:.4f}"
    print(
        f"{split}: DSC1 {_fmt(summary['segmentation']['all']['dsc1'])} (all), "
        f"{_fmt(summary['segmentation'].get('positive', {}).get('dsc1'))} (positives); diagnosis accuracy "
        f"{dx['accuracy']:.4f}, F1 {f1} -> {out_dir}"
    )
    return {
        **summary,
        "out_dir": out_dir,
        "per_image_csv": per_image,
        "summary_json": summary_json,
        "summary_md": summary_md,
        "figures_dir": out_dir,
        "figures": figures,
    }


def _unique_names(run_dirs, names):
    if names is not None:
        if len(names) != len(run_dirs):
            raise PtxError(f"--names needs one name per run: {len(names)} names for {len(run_dirs)} runs")
        if len(set(names)) != len(names):
            raise PtxError(f"--names must be distinct. Received: {list(names)}")
        return list(names)
    paths = [os.path.normpath(r) for r in run_dirs]
    names = [os.path.basename(p) for p in paths]
    if len(set(names)) != len(set(paths)):  # different directories with the same name: show their paths
        names = paths
    seen = {}
    out = []
    for n in names:  # the same directory twice: keep both, numbered
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def _diagnosis_table(summaries):
    rows = []
    for name, s in summaries.items():
        dx = (s or {}).get("diagnosis", {})
        row = {"run": name}
        for key in (*DIAGNOSIS_KEYS, "roc_auc"):
            row[key] = dx.get(key)
        rows.append(row)
    return pd.DataFrame(rows)


def _pvalue_markdown(table):
    runs = list(dict.fromkeys(table["run"]))
    metrics = list(dict.fromkeys(table["metric"]))
    lines = ["| run | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
    for run in runs:
        cells = []
        for metric in metrics:
            r = table[(table["run"] == run) & (table["metric"] == metric)].iloc[0]
            if r["is_reference"]:
                cells.append("reference")
            else:
                t = "n/a" if not np.isfinite(r["t_pvalue"]) else f"{r['t_pvalue']:.3g}"
                w = "n/a" if not np.isfinite(r["wilcoxon_pvalue"]) else f"{r['wilcoxon_pvalue']:.3g}"
                cells.append(f"{t} / {w}")
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare_runs(run_dirs, split="test", output=None, names=None):
    """Compares evaluated runs on the same images (mean (std), Student's t-test and paired Wilcoxon test).

    Reads each run's `eval/<split>/per_image.csv` (run `evaluate_run` first). Statistics are
    `ptx_keras.metrics.compare_runs`: Student's t-test for two independent samples against the first run (the
    paper's asterisk at p < 0.05) and the Wilcoxon signed-rank test of the paired per-image differences.

    Args:
        run_dirs: Run directories, each evaluated on `split`; the first is the reference (the paper's model).
        split: Which evaluation to compare.
        output: Output folder (default: `<first run>/eval/<split>/comparison`).
        names: Optional display names, one per run (default: the run directory names, numbered if repeated).

    Returns:
        dict with `csv` (`comparison.csv`, one row per run and metric with every statistic), `markdown`
        (`comparison.md`), `diagnosis_csv` (`comparison_diagnosis.csv`), `histogram` (`dsc_histogram.png`) paths
        and the comparison DataFrame as `table`.

    Raises:
        PtxError: if fewer than two runs are given, the split is unknown, a run has not been evaluated on the
            split, or the runs were evaluated on different images.
    """
    from ptx_keras.figures.evaluation import plot_score_histograms
    from ptx_keras.metrics import compare_runs as _compare
    from ptx_keras.metrics import write_comparison

    _check_split(split)
    if len(run_dirs) < 2:
        raise PtxError("--compare needs at least two run directories")
    names = _unique_names(run_dirs, names)
    scores, summaries = {}, {}
    for name, run in zip(names, run_dirs):
        path = os.path.join(run, "eval", split, PER_IMAGE_FILENAME)
        if not os.path.isfile(path):
            raise PtxError(f"{run} has not been evaluated on the {split} split (no {path}); run: python evaluate.py "
                           f"{run} --split {split}")
        scores[name] = pd.read_csv(path, dtype={"sample_id": str})
        summary_path = os.path.join(run, "eval", split, SUMMARY_JSON_FILENAME)
        summaries[name] = None
        if os.path.isfile(summary_path):
            with open(summary_path) as f:
                summaries[name] = json.load(f)
    metrics = [m for m in COMPARED_METRICS if all(m in s.columns for s in scores.values())]
    try:
        table = _compare(scores, reference=names[0], metrics=metrics)
    except (DataError, ValueError) as e:
        raise PtxError(f"Cannot compare these runs: {e}") from None
    output = output or os.path.join(run_dirs[0], "eval", split, "comparison")
    paths = write_comparison(table, output)
    diagnosis = _diagnosis_table(summaries)
    paths["diagnosis_csv"] = os.path.join(output, "comparison_diagnosis.csv")
    diagnosis.to_csv(paths["diagnosis_csv"], index=False)
    n_images = len(next(iter(scores.values())))
    with open(paths["markdown"]) as f:
        body = f.read()
    dx_lines = ["| run | " + " | ".join(_DIAGNOSIS_NAMES[k] for k in DIAGNOSIS_KEYS) + " | ROC AUC |",
                "|" + "---|" * (len(DIAGNOSIS_KEYS) + 2)]
    for r in diagnosis.itertuples(index=False):
        cells = ["n/a" if getattr(r, k) is None or not np.isfinite(getattr(r, k)) else f"{100 * getattr(r, k):.2f} %"
                 for k in DIAGNOSIS_KEYS]
        auc = "n/a" if r.roc_auc is None or not np.isfinite(r.roc_auc) else f"{r.roc_auc:.4f}"
        dx_lines.append(f"| {r.run} | " + " | ".join(cells) + f" | {auc} |")
    with open(paths["markdown"], "w") as f:
        f.write(
            f"# Comparison on the {split} split ({n_images} shared images; reference: {names[0]})\n\n"
            + "\n".join(f"- {n}: {os.path.abspath(r)}" for n, r in zip(names, run_dirs))
            + "\n\n## Segmentation\n\n" + body
            + f"\np-values against {names[0]} (Student's t-test / paired Wilcoxon signed-rank):\n\n"
            + _pvalue_markdown(table) + "\n\n## Diagnosis (each run's own thresholds)\n\n" + "\n".join(dx_lines)
            + "\n"
        )
    paths["histogram"] = plot_score_histograms(
        {n: s["dsc"].to_numpy() for n, s in scores.items()}, os.path.join(output, "dsc_histogram.png"),
        metric="DSC", title=f"Per-image DSC on the {split} split (cf. Fig. 6)",
    )
    paths["table"] = table
    print(f"Comparison of {len(run_dirs)} runs on {split} ({n_images} images): {paths['markdown']}")
    return paths
