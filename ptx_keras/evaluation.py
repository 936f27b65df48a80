"""Evaluation: predict a split, score it like the paper (Tables 2-3, Figs. 5-6) and compare runs.

`evaluate_run(run_dir)` is what `python evaluate.py RUN_DIR` runs. It loads `RUN_DIR/best.keras` (the
architecture is never rebuilt), predicts the split with a progress bar and writes `RUN_DIR/eval/<split>/`:

* `per_image.csv` — sample id, label, true and predicted area, diagnosis, score, MPA, PA1, DSC, DSC1, HD, HD95
  (and HD in mm when the data has a pixel spacing);
* `summary.json`, `summary.md` — mean (std) over all images and over positives like Table 2 beside the paper's
  values, the diagnosis table like Table 3 with ROC AUC, the SIIM-ACR mean Dice (empty = 1), missing HD counts;
* `cases.png` (best / median / worst case per PTX size, like Fig. 5), `dsc_histogram.png` (Fig. 6), `roc.png`,
  `training_curves.png`.

Diagnosis thresholds are the configuration's (the paper's 50 pixels at 256 x 256) unless `search_thresholds` is
set: then they are chosen on the validation split (never on test), saved to `RUN_DIR/eval/val/thresholds.json`
and applied unchanged to the evaluated split. A saved search is reused by later evaluations and by export.
"""

import json
import os

import numpy as np
import pandas as pd

from ptx_keras import constants as C
from ptx_keras.errors import DataError, ModelError, PtxError

THRESHOLDS_FILENAME = "thresholds.json"
SIZE_CLASSES = ("small", "moderate", "large")


# --------------------------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------------------------
def predict_split(model, prepared_dir, split, batch_size=8, channels=None, progress=True):
    """Predicts one split of a prepared data set.

    Args:
        model: A Keras model mapping `(batch, S, S, C)` to `(batch, S, S, 2)` softmax.
        prepared_dir: A prepared data set (see `ptx_keras.data.prepare_dataset`).
        split: `"train"`, `"val"` or `"test"`.
        batch_size: Images per forward pass.
        channels: Input channels; defaults to the model's.
        progress: Show a progress bar.

    Returns:
        dict of NumPy arrays over the split's n images: `sample_id` (str), `image` (n, S, S) float32 in [0, 1],
        `true` (n, S, S) bool, `prob` (n, S, S) float16 PTX probabilities.

    Raises:
        DataError: if the data's resolution differs from the model's input size.
    """
    from tqdm.auto import tqdm

    from ptx_keras.data.pipeline import count_examples, make_dataset
    from ptx_keras.data.prepare import load_prepared_info
    from ptx_keras.targets import mask_of

    info = load_prepared_info(prepared_dir)
    size = int(info["image_size"])
    in_h, in_w, in_c = model.input_shape[1:4]
    if (in_h, in_w) != (None, None) and (in_h, in_w) != (size, size):
        raise DataError(
            f"{prepared_dir} is prepared at {size}x{size} but the model expects {in_h}x{in_w} inputs; prepare the "
            f"data at {in_h}x{in_w} (ptx-prepare --size {in_h}) or pass --data with a matching source"
        )
    channels = channels or in_c
    n = count_examples(prepared_dir, split)
    ds = make_dataset(prepared_dir, split, batch_size, False, channels=channels, with_ids=True)
    ids, images, trues, probs = [], [], [], []
    bar = tqdm(total=n, desc=f"predict {split}", unit="image", disable=not progress)
    for image, y_true, sample_id in ds:
        out = np.asarray(model.predict_on_batch(image))
        probs.append(out[..., C.PTX_CLASS].astype(np.float16))
        images.append(image.numpy()[..., 0])
        trues.append(np.asarray(mask_of(y_true)) > 0.5)
        ids.extend(s.decode() for s in sample_id.numpy())
        bar.update(len(out))
    bar.close()
    return {
        "sample_id": np.array(ids),
        "image": np.concatenate(images),
        "true": np.concatenate(trues),
        "prob": np.concatenate(probs),
    }


# --------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------
def _spacings(prepared_dir, sample_ids):
    """Pixel spacing per sample at the prepared size (None where unknown) from the manifest."""
    manifest = pd.read_csv(os.path.join(prepared_dir, "manifest.csv"), dtype={"sample_id": str})
    if not {"spacing_row_mm", "spacing_col_mm"} <= set(manifest.columns):
        return None
    manifest = manifest.set_index("sample_id")
    rows = manifest.reindex(list(sample_ids))[["spacing_row_mm", "spacing_col_mm"]].to_numpy(float)
    if not np.isfinite(rows).any():
        return None
    return [tuple(r) if np.all(np.isfinite(r)) else None for r in rows]


def _size_classes(true_area):
    """Tertiles of the true PTX area among positives: small / moderate / large ('' for negatives)."""
    out = np.array([""] * len(true_area), dtype=object)
    pos = true_area > 0
    if pos.sum() >= 3:
        lo, hi = np.quantile(true_area[pos], [1 / 3, 2 / 3])
        out[pos] = np.where(true_area[pos] <= lo, "small", np.where(true_area[pos] <= hi, "moderate", "large"))
    else:
        out[pos] = "moderate"
    return out


def score_predictions(pred, thresholds, spacings=None):
    """Per-image segmentation and diagnosis scores.

    Args:
        pred: Output of `predict_split`.
        thresholds: dict with `min_area`, `mask_threshold`, `reference_size`.
        spacings: Optional per-image `(row_mm, col_mm)` (None entries allowed).

    Returns:
        pandas.DataFrame, one row per image.
    """
    from ptx_keras.diagnosis import diagnose
    from ptx_keras.metrics import batch_segmentation_scores

    prob = pred["prob"].astype(np.float32)
    dx = diagnose(prob, thresholds["min_area"], thresholds["mask_threshold"], thresholds["reference_size"])
    pred_masks = prob > thresholds["mask_threshold"]
    df = batch_segmentation_scores(pred["true"], pred_masks, spacings=spacings, sample_ids=list(pred["sample_id"]))
    df.insert(1, "label", (df["true_area"].to_numpy() > 0).astype(int))
    df["diagnosis"] = np.asarray(dx.label, int)
    df["score"] = np.asarray(dx.score, float)
    df["max_prob"] = np.asarray(dx.max_prob, float)
    df["size_class"] = _size_classes(df["true_area"].to_numpy())
    return df


def _describe_all(df):
    from ptx_keras.metrics import summarize_scores

    table = summarize_scores(df)
    out = {}
    for row in table.itertuples():
        out.setdefault(row.subset, {})[row.metric] = {
            "mean": _num(row.mean),
            "std": _num(row.std),
            "n_valid": int(row.n_valid),
            "n_missing": int(row.n_missing),
        }
    return out


def _num(v):
    v = float(v)
    return None if not np.isfinite(v) else v


def summarize(df, thresholds, split):
    """The numbers of `summary.json`: segmentation (all / positive), diagnosis, ROC AUC, thresholds."""
    from ptx_keras.diagnosis import diagnosis_scores, roc_auc

    labels = df["label"].to_numpy()
    dx = diagnosis_scores(labels, df["diagnosis"].to_numpy())
    has_both = 0 < labels.sum() < len(labels)
    auc = roc_auc(labels, df["score"].to_numpy()) if has_both else float("nan")
    seg = _describe_all(df)
    return {
        "split": split,
        "n_images": int(len(df)),
        "n_positive": int(labels.sum()),
        "segmentation": seg,
        "siim_acr_dice": seg["all"].get("siim_acr_dice", {}).get("mean"),
        "diagnosis": {k: (_num(v) if isinstance(v, float) else v) for k, v in dx.items() if k != "undefined"}
        | {"undefined": list(dx["undefined"]), "roc_auc": _num(auc)},
        "thresholds": thresholds,
        "paper": {"segmentation": C.PAPER_SEGMENTATION, "diagnosis": C.PAPER_DIAGNOSIS},
    }


def _fmt(stats, digits=2):
    from ptx_keras.metrics import format_mean_std

    if not stats or stats.get("mean") is None:
        return "n/a"
    std = stats.get("std")
    return format_mean_std(stats["mean"], np.nan if std is None else std, digits)


def summary_markdown(summary, run_name=""):
    """Renders `summary` as Markdown tables in the layout of the paper's Tables 2 and 3."""
    seg = summary["segmentation"]
    lines = [
        f"# Evaluation of {run_name or 'the run'} on the {summary['split']} split",
        "",
        f"{summary['n_images']} images, {summary['n_positive']} with pneumothorax. Thresholds: mask probability > "
        f"{summary['thresholds']['mask_threshold']}, area > {summary['thresholds']['min_area']} pixels at "
        f"{summary['thresholds']['reference_size']}x{summary['thresholds']['reference_size']} "
        f"({summary['thresholds']['source']}).",
        "",
        "## Segmentation (mean (std) per image; cf. Table 2)",
        "",
        "| metric | all images | PTX-positive images | paper (MS_scSE_FC-DenseNet) |",
        "|---|---|---|---|",
    ]
    for metric in ("mpa", "pa1", "dsc", "dsc1", "hd", "hd95", "hd_mm", "hd95_mm"):
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
        lines.append(f"| {metric.upper()} | {cells[0]} | {cells[1]} | {paper_txt} |")
    lines += [
        "",
        f"SIIM-ACR mean Dice (DSC1 with empty = 1, all images): {_fmt(seg['all'].get('siim_acr_dice'), 4)}.",
        "HD is undefined where the truth or the prediction has no contour; those images are counted, not averaged.",
        "",
        "## Diagnosis (cf. Table 3)",
        "",
        "| score | ours | paper |",
        "|---|---|---|",
    ]
    dx = summary["diagnosis"]
    for key in ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1"):
        v = dx.get(key)
        ours = "undefined" if v is None else f"{100 * v:.2f} %"
        lines.append(f"| {key.upper() if len(key) <= 3 else key} | {ours} | {100 * C.PAPER_DIAGNOSIS[key]:.2f} % |")
    auc = dx.get("roc_auc")
    lines += [
        f"| ROC AUC | {'undefined' if auc is None else f'{auc:.4f}'} | |",
        "",
        f"Counts: TP {dx['tp']}, FP {dx['fp']}, TN {dx['tn']}, FN {dx['fn']}.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------------
def _case(pred, df, i, title, mask_threshold):
    row = df.iloc[i]
    hd = "n/a" if not np.isfinite(row["hd"]) else f"{row['hd']:.1f} px"
    return {
        "image": pred["image"][i],
        "true": pred["true"][i],
        "pred": pred["prob"][i].astype(np.float32) > mask_threshold,
        "title": title,
        "caption": f"{row['sample_id']}  DSC1 {row['dsc1']:.2f}  HD {hd}",
    }


def write_figures(pred, df, out_dir, thresholds, history_path=None):
    """Writes cases.png, dsc_histogram.png, roc.png and training_curves.png; returns their paths."""
    from ptx_keras.diagnosis import roc_curve
    from ptx_keras.figures import evaluation as fig

    paths = {}
    rows = []
    for size in SIZE_CLASSES:
        idx = np.flatnonzero(df["size_class"].to_numpy() == size)
        if not idx.size:
            continue
        order = idx[np.argsort(df["dsc1"].to_numpy()[idx], kind="stable")]
        picks = [("best", order[-1]), ("median", order[len(order) // 2]), ("worst", order[0])]
        rows.append([_case(pred, df, i, f"{size}: {which}", thresholds["mask_threshold"]) for which, i in picks])
    if rows:
        paths["cases"] = fig.plot_cases(rows, os.path.join(out_dir, "cases.png"),
                                        title="Best / median / worst DSC1 per pneumothorax size")
    pos = df["label"].to_numpy() == 1
    paths["dsc_histogram"] = fig.plot_score_histograms(
        {"DSC, all images": df["dsc"].to_numpy(), "DSC1, PTX-positive images": df["dsc1"].to_numpy()[pos]},
        os.path.join(out_dir, "dsc_histogram.png"),
    )
    labels = df["label"].to_numpy()
    if 0 < labels.sum() < len(labels):
        from ptx_keras.diagnosis import diagnosis_scores, roc_auc

        fpr, tpr, _ = roc_curve(labels, df["score"].to_numpy())
        dx = diagnosis_scores(labels, df["diagnosis"].to_numpy())
        point = (1 - dx["specificity"], dx["sensitivity"])
        paths["roc"] = fig.plot_roc(fpr, tpr, roc_auc(labels, df["score"].to_numpy()),
                                    os.path.join(out_dir, "roc.png"), operating_point=point)
    if history_path and os.path.isfile(history_path):
        paths["training_curves"] = fig.plot_history(history_path, os.path.join(out_dir, "training_curves.png"))
    return paths


# --------------------------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------------------------
def _config_thresholds(cfg):
    return {
        "min_area": float(cfg.diagnosis.min_area),
        "mask_threshold": float(cfg.diagnosis.mask_threshold),
        "reference_size": int(cfg.diagnosis.reference_size),
        "source": "configuration",
    }


def search_validation_thresholds(model, prepared_dir, run_dir, cfg, batch_size, objective="f1", progress=True):
    """Chooses `(mask_threshold, min_area)` on the validation split and saves them (never uses test)."""
    from ptx_keras.diagnosis import search_thresholds

    pred = predict_split(model, prepared_dir, "val", batch_size, progress=progress)
    labels = pred["true"].reshape(len(pred["true"]), -1).any(axis=1).astype(int)
    result = search_thresholds(labels, pred["prob"].astype(np.float32), objective=objective,
                               reference_size=cfg.diagnosis.reference_size)
    out_dir = os.path.join(run_dir, "eval", "val")
    os.makedirs(out_dir, exist_ok=True)
    result["grid"].to_csv(os.path.join(out_dir, "threshold_search.csv"), index=False)
    thresholds = {
        "min_area": float(result["min_area"]),
        "mask_threshold": float(result["mask_threshold"]),
        "reference_size": int(cfg.diagnosis.reference_size),
        "source": f"validation search ({objective} = {result['value']:.4f})",
    }
    with open(os.path.join(out_dir, THRESHOLDS_FILENAME), "w") as f:
        json.dump(thresholds, f, indent=2)
    return thresholds


def load_thresholds(run_dir, cfg):
    """The thresholds a run uses: a saved validation search if there is one, else the configuration's."""
    path = os.path.join(run_dir, "eval", "val", THRESHOLDS_FILENAME)
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return _config_thresholds(cfg)


# --------------------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------------------
def evaluate_run(run_dir, data=None, split="test", search_thresholds=False, batch_size=None, progress=True):
    """Evaluates `RUN_DIR/best.keras` on one split and writes `RUN_DIR/eval/<split>/`.

    Args:
        run_dir: A run directory written by training.
        data: Optional data: a prepared directory or a raw source (prepared with the run's settings); by default
            the run's own prepared data.
        split: The split to evaluate (`"test"` by default).
        search_thresholds: Choose the diagnosis thresholds on the validation split first.
        batch_size: Prediction batch size (default: the run's `evaluation.batch_size`).
        progress: Show progress bars.

    Returns:
        dict with the summary numbers, `out_dir`, `per_image_csv`, `summary_json`, `summary_md`, `figures_dir`
        and `figures`.

    Raises:
        ModelError: if the run directory has no `best.keras`.
        DataError: if the data cannot be found or has another resolution than the model.
    """
    from ptx_keras.config import load_run_config
    from ptx_keras.loading import load_model

    if not os.path.isdir(run_dir):
        raise ModelError(f"Run directory not found: {run_dir}")
    model_path = os.path.join(run_dir, "best.keras")
    if not os.path.isfile(model_path):
        raise ModelError(f"{run_dir} has no trained model (best.keras); train it first or pass another run")
    cfg = load_run_config(run_dir)
    if split not in C.SPLITS:
        raise DataError(f"Unknown split {split!r}; use one of {list(C.SPLITS)}")
    if data is not None:
        from ptx_keras.training import resolve_data

        cfg.data.path = data
        prepared = resolve_data(cfg)
    else:
        prepared = cfg.data.prepared_dir
        if not prepared or not os.path.isdir(prepared):
            raise DataError(f"The prepared data of {run_dir} is not at {prepared!r}; pass --data PATH")
    batch_size = batch_size or cfg.evaluation.batch_size
    model = load_model(model_path)
    if search_thresholds:
        thresholds = search_validation_thresholds(model, prepared, run_dir, cfg, batch_size,
                                                  cfg.evaluation.objective, progress)
    else:
        thresholds = load_thresholds(run_dir, cfg)
    pred = predict_split(model, prepared, split, batch_size, progress=progress)
    df = score_predictions(pred, thresholds, spacings=_spacings(prepared, pred["sample_id"]))
    out_dir = os.path.join(run_dir, "eval", split)
    os.makedirs(out_dir, exist_ok=True)
    per_image = os.path.join(out_dir, "per_image.csv")
    df.to_csv(per_image, index=False)
    summary = summarize(df, thresholds, split)
    summary["run_dir"] = os.path.abspath(run_dir)
    summary["data"] = prepared
    summary_json = os.path.join(out_dir, "summary.json")
    with open(summary_json, "w") as f:
        json.dump(summary, f, indent=2, default=str)
    summary_md = os.path.join(out_dir, "summary.md")
    with open(summary_md, "w") as f:
        f.write(summary_markdown(summary, os.path.basename(os.path.normpath(run_dir))))
    figures = write_figures(pred, df, out_dir, thresholds, os.path.join(run_dir, "history.csv"))
    print(
        f"{split}: DSC1 {_fmt(summary['segmentation']['all']['dsc1'])} (all), "
        f"{_fmt(summary['segmentation'].get('positive', {}).get('dsc1'))} (positives); diagnosis accuracy "
        f"{summary['diagnosis']['accuracy']:.4f}, F1 {summary['diagnosis']['f1'] or float('nan'):.4f} -> {out_dir}"
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


def compare_runs(run_dirs, split="test", output=None, names=None):
    """Compares evaluated runs on the same images (mean (std), Student's t-test and paired Wilcoxon test).

    Args:
        run_dirs: Run directories, each evaluated on `split`; the first is the reference (the paper's model).
        split: Which evaluation to compare.
        output: Output folder (default: `<first run>/eval/<split>/comparison`).
        names: Optional display names (default: the run directory names).

    Returns:
        dict with `csv`, `markdown`, `histogram` paths and the comparison DataFrame as `table`.

    Raises:
        PtxError: if fewer than two runs are given, a run has not been evaluated, or the runs were evaluated
            on different images.
    """
    from ptx_keras.figures.evaluation import plot_score_histograms
    from ptx_keras.metrics import compare_runs as _compare
    from ptx_keras.metrics import write_comparison

    if len(run_dirs) < 2:
        raise PtxError("--compare needs at least two run directories")
    names = names or [os.path.basename(os.path.normpath(r)) for r in run_dirs]
    if len(set(names)) != len(names):
        names = [os.path.normpath(r) for r in run_dirs]
    scores = {}
    for name, run in zip(names, run_dirs):
        path = os.path.join(run, "eval", split, "per_image.csv")
        if not os.path.isfile(path):
            raise PtxError(f"{run} has no evaluation of the {split} split ({path}); run: python evaluate.py {run}")
        scores[name] = pd.read_csv(path, dtype={"sample_id": str})
    try:
        table = _compare(scores, reference=names[0])
    except (DataError, ValueError) as e:
        raise PtxError(f"Cannot compare these runs: {e}") from None
    output = output or os.path.join(run_dirs[0], "eval", split, "comparison")
    paths = write_comparison(table, output)
    paths["histogram"] = plot_score_histograms(
        {n: s["dsc"].to_numpy() for n, s in scores.items()}, os.path.join(output, "dsc_histogram.png")
    )
    paths["table"] = table
    print(f"Comparison of {len(run_dirs)} runs on {split}: {paths['markdown']}")
    return paths
