"""What people look at after an evaluation: `summary.md` (Tables 2-3 layout) and the figures (Figs. 5-6, ROC)."""

import os

import numpy as np
import pandas as pd

from ptx_keras import constants as C
from ptx_keras.evaluation.scoring import IMAGE_PROBABILITIES, MASKS, SIZE_CLASSES, image_probability

__all__ = [
    "CASE_PICKS",
    "DIAGNOSIS_NAMES",
    "FIGURES",
    "format_stats",
    "pick_cases",
    "summary_markdown",
    "threshold_source",
    "write_figures",
]


CASE_PICKS = ("best", "median", "worst")
DIAGNOSIS_NAMES = {
    "accuracy": "Accuracy",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "f1": "F1",
}
# Rows of the segmentation table: (per-image column, shown name). `dsc1` scores the mask named in the summary's
# `masks.scored`; `dsc1_raw` always the raw mask.
_SEGMENTATION_ROWS = (
    ("mpa", "MPA"),
    ("pa1", "PA1"),
    ("dsc", "DSC"),
    ("dsc1", "DSC1"),
    ("dsc1_raw", "DSC1 (raw mask)"),
    ("dsc1_pair", "DSC1 (gated by the two-number rule)"),
    ("dsc1_triplet", "DSC1 (triplet mask)"),
    ("hd", "HD (px)"),
    ("hd95", "HD95 (px)"),
    ("hd_mm", "HD (mm)"),
    ("hd95_mm", "HD95 (mm)"),
)
FIGURES = (
    ("cases", "best / median / worst DSC1 per size"),
    ("dsc_histogram", "DSC histogram (Fig. 6)"),
    ("roc", "diagnosis ROC curve"),
    ("reliability", "reliability diagram of the image-level probability"),
    ("training_curves", "training curves"),
)


def format_stats(stats, digits=2):
    """`mean (std)` of a summary entry, "n/a" when it has no mean."""
    from ptx_keras.metrics import format_mean_std

    if not stats or stats.get("mean") is None:
        return "n/a"
    std = stats.get("std")
    return format_mean_std(stats["mean"], np.nan if std is None else std, digits)


def threshold_source(t):
    """How the thresholds were chosen, in words (from `SavedThresholds.describe()`)."""
    if t.get("source") == "validation search":
        value = t.get("value")
        value = "" if value is None else f" = {value:.4f}"
        stale = "; WARNING: chosen for an earlier best.keras" if t.get("stale") else ""
        where = t.get("data") or "the run's own data"
        return f"chosen on the validation split of {where}, {t.get('objective', 'f1')}{value}{stale}"
    return "the run configuration's `diagnosis` section"


def _rule(t):
    """The diagnosis rule of a summary's thresholds entry, in words."""
    from ptx_keras.diagnosis import Thresholds

    try:
        return Thresholds.from_mapping(t).describe()
    except ValueError:
        return f"more than {t['min_area']:g} px at {t['reference_size']} above {t['mask_threshold']:g}"


def summary_markdown(summary, run_name=""):
    """Renders `summary` (from `summarize`) as Markdown in the layout of the paper's Tables 2 and 3.

    Args:
        summary: dict returned by `summarize` (plus `figures` and `data` when `evaluate_run` wrote it).
        run_name: Shown in the title.

    Returns:
        str, the Markdown document (ends with links to the figures written beside it).
    """
    lines = _header_lines(summary, run_name)
    lines += _segmentation_lines(
        summary["segmentation"],
        summary.get("masks", {"scored": "gated"})["scored"],
        summary.get("siim_acr_dice_by_mask") or {},
    )
    lines += _diagnosis_lines(summary["diagnosis"], summary.get("size_classes", {}))
    lines += _calibration_lines(summary.get("calibration"))
    lines += ["", "## Figures", ""]
    for name, caption in FIGURES:
        if name in summary.get("figures", {}):
            lines.append(f"![{caption}]({name}.png)")
    return "\n".join(lines) + "\n"


def _header_lines(summary, run_name):
    """The title, the counts, the rule and the scored mask."""
    t = summary["thresholds"]
    scored = summary.get("masks", {"scored": "gated"})["scored"]
    on = (
        f" of other data: {summary['data_name']} (prepared in {summary.get('data')})"
        if summary.get("data_name")
        else ""
    )
    lines = [
        f"# Evaluation of {run_name or 'the run'} on the {summary['split']} split{on}",
        "",
        f"{summary['n_images']} images, {summary['n_positive']} with pneumothorax. Predicted mask: probability > "
        f"{t['mask_threshold']:g}; diagnosis: pneumothorax when {_rule(t)} (thresholds: {threshold_source(t)}). "
        f"Test-time augmentation: {summary.get('inference', {}).get('tta', 'none')}.",
        "",
        f"**Masks scored:** the segmentation metrics score the {MASKS[scored]}"
        + (
            "; `DSC1 (raw mask)` scores the raw mask whatever the diagnosis."
            if scored == "gated"
            else " (gating is off: `diagnosis.gate_masks: false`)."
        ),
        "",
    ]
    return lines


def _segmentation_lines(seg, scored, by_mask):
    """Table 2's layout (mean (std), all images and positives, beside the paper) and the SIIM-ACR mean Dice."""
    from ptx_keras.reports import markdown_table

    lines = ["## Segmentation (mean (std) per image; cf. Table 2)", ""]
    rows = []
    for metric, name in _SEGMENTATION_ROWS:
        if metric not in seg.get("all", {}):
            continue
        paper = C.PAPER_SEGMENTATION.get(metric)
        cells = []
        for subset in ("all", "positive"):
            st = seg.get(subset, {}).get(metric)
            cell = format_stats(st)
            if st and st["n_missing"]:
                cell += f" [{st['n_missing']} undefined]"
            cells.append(cell)
        shown = f"{name} ({'framework output' if scored == 'gated' else 'raw mask'})" if metric == "dsc1" else name
        rows.append(
            {
                "metric": shown,
                "all images": cells[0],
                "PTX-positive images": cells[1],
                "paper (MS_scSE_FC-DenseNet)": f"{paper[0]:.2f} ({paper[1]:.2f})" if paper else "",
            }
        )
    lines += [
        markdown_table(pd.DataFrame(rows)),
        "",
        f"SIIM-ACR mean Dice (DSC1 with empty = 1, all images, {scored} masks): "
        f"{format_stats(seg['all'].get('siim_acr_dice'), 4)}. A class absent from both truth and prediction scores "
        "1, absent from one only 0. HD/HD95 (pixels) are undefined where the truth or the prediction is empty; "
        "such images are counted, never averaged.",
        "",
    ]
    if by_mask:
        rows = [
            {
                "mask scored": key,
                "SIIM-ACR mean Dice (empty = 1)": "n/a" if v["mean"] is None else f"{v['mean']:.4f}",
                "which mask": v["mask"],
            }
            for key, v in by_mask.items()
        ]
        lines += ["SIIM-ACR mean Dice of each mask (all images):", "", markdown_table(pd.DataFrame(rows)), ""]
    return lines


def _diagnosis_lines(dx, sizes):
    """Table 3's layout beside the paper, ROC AUCs, the counts and the size classes."""
    from ptx_keras.reports import markdown_table

    lines = ["## Diagnosis (cf. Table 3)", ""]
    rows = []
    for key in C.DIAGNOSIS_KEYS:
        v = dx.get(key)
        rows.append(
            {
                "score": DIAGNOSIS_NAMES[key],
                "ours": "undefined" if v is None else f"{100 * v:.2f} %",
                "paper": f"{100 * C.PAPER_DIAGNOSIS[key]:.2f} %",
            }
        )
    auc = dx.get("roc_auc")
    rows.append({"score": "ROC AUC", "ours": "undefined" if auc is None else f"{auc:.4f}", "paper": ""})
    if "aux_roc_auc" in dx:
        aux = dx["aux_roc_auc"]
        rows.append({"score": "ROC AUC (aux head)", "ours": "undefined" if aux is None else f"{aux:.4f}", "paper": ""})
    lines += [
        markdown_table(pd.DataFrame(rows)),
        "",
        f"Counts: TP {dx['tp']}, FP {dx['fp']}, TN {dx['tn']}, FN {dx['fn']}.",
    ]
    if dx.get("undefined"):
        lines.append(f"Undefined (zero denominator): {', '.join(dx['undefined'])}.")
    if sizes.get("bounds_pixels"):
        lo, hi = sizes["bounds_pixels"]
        c = sizes["counts"]
        lines += [
            "",
            f"Size classes (Fig. 5, tertiles of the true area): small <= {lo:g} px ({c['small']} images), "
            f"moderate <= {hi:g} px ({c['moderate']}), large ({c['large']}).",
        ]
    return lines


def _calibration_lines(cal):
    """The image-level probability's calibration (ECE, MCE, Brier), or nothing without it."""
    lines = []
    if cal:
        ece = "n/a" if cal["ece"] is None else f"{cal['ece']:.4f}"
        mce = "n/a" if cal["mce"] is None else f"{cal['mce']:.4f}"
        brier = "n/a" if cal["brier"] is None else f"{cal['brier']:.4f}"
        lines += [
            "",
            "## Calibration of the image-level probability",
            "",
            f"Image-level probability: {cal['description']}. Expected calibration error (ECE, {cal['n_bins']} "
            f"equal-width bins) {ece}, maximum calibration error {mce}, Brier score {brier}.",
        ]
    return lines


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


def write_figures(df, out_dir, thresholds, case_data=None, history_path=None, split="test", gate_masks=True):
    """Writes cases.png, dsc_histogram.png, roc.png, reliability.png and training_curves.png.

    Args:
        df: Per-image scores from `score_predictions`.
        out_dir: Folder to write into.
        thresholds: The `Thresholds` used (`mask_threshold` draws the predicted masks).
        case_data: dict `{sample_id: {"image", "true", "prob"}}` holding at least the images of `pick_cases(df)`
            (see `collect_cases`); None skips `cases.png`.
        history_path: `history.csv` of the run; skipped when absent.
        split: Split name for the titles.
        gate_masks: Draw the framework's gated masks (as scored) rather than the raw ones.

    Returns:
        dict `{figure name: path}` of the figures written.
    """
    from ptx_keras.figures import evaluation as fig

    paths = {}
    picks = pick_cases(df)
    scored = "framework output" if gate_masks else "raw mask"
    if picks and case_data is not None:
        paths["cases"] = fig.plot_cases(
            _case_rows(df, picks, case_data, thresholds.mask_threshold, gate_masks),
            os.path.join(out_dir, "cases.png"),
            title=f"Best / median / worst DSC1 per pneumothorax size ({split} split, {scored})",
            show_image=True,
        )
    paths["dsc_histogram"] = _plot_dice_histogram(df, os.path.join(out_dir, "dsc_histogram.png"), split, scored)
    labels = df["label"].to_numpy()
    if 0 < labels.sum() < len(labels):
        paths["roc"] = _plot_roc(df, thresholds, os.path.join(out_dir, "roc.png"), split)
    probability, column = image_probability(df)
    if len(df):
        path = os.path.join(out_dir, "reliability.png")
        paths["reliability"] = _plot_reliability(labels, probability, column, path, split)
    if history_path and os.path.isfile(history_path):
        paths["training_curves"] = fig.plot_history(history_path, os.path.join(out_dir, "training_curves.png"))
    return paths


def _case_rows(df, picks, case_data, mask_threshold, gate_masks):
    """`cases.png`'s panels: one row per pneumothorax size, its best / median / worst image (`pick_cases`)."""
    return [
        [
            _case_panel(
                df.iloc[i], case_data[str(df.iloc[i]["sample_id"])], f"{size}, {pick}", mask_threshold, gate_masks
            )
            for size, pick, i in row
        ]
        for row in picks
    ]


def _plot_dice_histogram(df, path, split, scored):
    """`dsc_histogram.png`: DSC over all images and DSC1 over the PTX-positive ones (cf. Fig. 6)."""
    from ptx_keras.figures import evaluation as fig

    pos = df["label"].to_numpy() == 1
    return fig.plot_score_histograms(
        {"DSC, all images": df["dsc"].to_numpy(), "DSC1, PTX-positive images": df["dsc1"].to_numpy()[pos]},
        path,
        metric=f"Dice (DSC: mean of both classes; DSC1: pneumothorax; {scored})",
        title=f"Per-image Dice on the {split} split (cf. Fig. 6)",
    )


def _plot_roc(df, thresholds, path, split):
    """`roc.png`: the ROC of the diagnosis score with the operating point of `thresholds`."""
    from ptx_keras.diagnosis import diagnosis_scores, roc_auc, roc_curve
    from ptx_keras.figures import evaluation as fig

    labels, scores = df["label"].to_numpy(), df["score"].to_numpy()
    fpr, tpr, _ = roc_curve(labels, scores)
    dx = diagnosis_scores(labels, df["diagnosis"].to_numpy())
    return fig.plot_roc(
        fpr,
        tpr,
        roc_auc(labels, scores),
        path,
        operating_point=(1 - dx["specificity"], dx["sensitivity"]),
        operating_label=thresholds.describe(),
        title=f"Diagnosis ROC, {split} split ({int(labels.sum())} positive / {int((1 - labels).sum())} negative)",
    )


def _plot_reliability(labels, probability, column, path, split):
    """`reliability.png`: the reliability diagram of the image-level probability (`column` says which)."""
    from ptx_keras.diagnosis import calibration
    from ptx_keras.figures import evaluation as fig

    cal = calibration(labels, probability)
    return fig.plot_reliability(
        cal["bins"],
        cal["ece"],
        path,
        probability_name="aux head probability" if column == "aux_prob" else "largest pixel probability",
        title=f"Reliability, {split} split ({IMAGE_PROBABILITIES[column].split(' (')[0]})",
    )
