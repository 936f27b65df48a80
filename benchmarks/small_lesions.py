"""Where a trained run loses its small pneumothoraces: the raw mask per size tertile at every mask threshold, and
how well image-level scores separate small pneumothoraces from healthy images.

For each `RUN_DIR` (a run directory written by `train.py`, its prepared data still in place) the script predicts
one split (`--split`, default `test`; `--tta hflip` averages the model with its mirror) and reports:

* **masks**: per size tertile of the true area (`ptx_keras.evaluation.scoring.size_classes`, the evaluation's
  definition) and over all positive images, the mean DSC1 of the raw mask (no diagnosis gate) drawn at each
  `--mask-thresholds` value, and the median predicted / true area there. A tertile whose best threshold lies
  far from the others' shows that no single mask threshold suits every size (the SW-CEL class term moves the
  operating point of small pneumothoraces: docs/loss.md); the best value of a tertile bounds what any gate can
  give it.
* **gates**: the ROC AUC of image scores, positives against healthy images and the smallest tertile against
  healthy images, with the small ones' scores and the five highest healthy scores: `total>t`, the pixels
  above `t` (the area rule's score), and `largest>t`, the largest 8-connected component above `t`, for each
  `--gate-thresholds` value. When no score separates the small ones from healthy images, no choice of
  thresholds recovers them and the model itself has to improve.

Prints one JSON line per run and table row (`small_lesions_mask`, `small_lesions_gate`) with the machine
(`benchmarks/_machine.py`), and writes `masks.csv`, `gates.csv` and `small_lesions.md` into
`--out/<run name>/` (default: `RUN_DIR/eval/<split>/small_lesions/`).

Usage: `python benchmarks/small_lesions.py RUN_DIR [RUN_DIR ...] [--split test] [--tta none|hflip]
[--out DIR]` (docs/training.md, "Where the small ones are lost").
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks._machine import machine  # noqa: E402

MASK_THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
GATE_THRESHOLDS = (0.9, 0.98)
TERTILES = ("small", "moderate", "large")
HEALTHY_SHOWN = 5  # highest healthy scores listed beside the small ones'


def emit(name, **values):
    import tensorflow as tf

    print(
        json.dumps({"measurement": name, **values, "machine": machine(tensorflow=tf.__version__)}, default=float),
        flush=True,
    )


def image_statistics(prob, true, mask_thresholds=MASK_THRESHOLDS, gate_thresholds=GATE_THRESHOLDS):
    """The counts one image contributes.

    Args:
        prob: `(H, W)` pneumothorax probabilities.
        true: `(H, W)` ground-truth mask (nonzero = pneumothorax).
        mask_thresholds: Probabilities strictly above which a pixel is in the raw mask.
        gate_thresholds: Probabilities strictly above which the image scores count pixels.

    Returns:
        dict: `true_area`; `pred@t` and `inter@t` (predicted pixels, and those that are true) for each mask
        threshold; `total>g` and `largest>g` (pixels above g, and the largest 8-connected component of them)
        for each gate threshold.
    """
    from scipy import ndimage

    prob = np.asarray(prob, dtype=np.float32)
    true = np.asarray(true) != 0
    out = {"true_area": int(true.sum())}
    for t in mask_thresholds:
        pred = prob > t
        out[f"pred@{t:g}"] = int(pred.sum())
        out[f"inter@{t:g}"] = int((pred & true).sum())
    for g in gate_thresholds:
        above = prob > g
        labels, n = ndimage.label(above, structure=np.ones((3, 3), dtype=bool))
        out[f"total>{g:g}"] = int(above.sum())
        out[f"largest>{g:g}"] = int(np.bincount(labels.ravel())[1:].max()) if n else 0
    return out


def collect(run_dir, split="test", tta="none", batch_size=8, progress=False, **thresholds):
    """Predicts `split` of a run's own prepared data and returns one row of `image_statistics` per image.

    Returns:
        pandas DataFrame with `sample_id`, `size_class` ("small", "moderate", "large", "" for healthy) and the
        counts.

    Raises:
        ptx_keras.errors.ModelError, DataError: as `ptx-evaluate` for a missing model or prepared data.
    """
    import pandas as pd

    from ptx_keras.errors import DataError
    from ptx_keras.evaluation.predictions import check_input_size, iter_predictions
    from ptx_keras.evaluation.scoring import size_classes
    from ptx_keras.inference import ModelRunner
    from ptx_keras.runs import RunDir

    run = RunDir.of(run_dir)
    run.require_model()
    prepared = run.prepared_dir()
    if not prepared or not os.path.isdir(prepared):
        raise DataError(f"The prepared data of {run.path} is not at {prepared!r} any more")
    model = run.load_model()
    check_input_size(model, prepared)
    runner = ModelRunner.from_keras(model, tta=tta)
    rows = []
    for batch in iter_predictions(runner, prepared, split, batch_size, progress=progress):
        for sample_id, prob, true in zip(batch["sample_id"], batch["prob"], batch["true"]):
            rows.append({"sample_id": str(sample_id), **image_statistics(prob, true, **thresholds)})
    frame = pd.DataFrame(rows)
    frame.insert(1, "size_class", size_classes(frame["true_area"].to_numpy())[0])
    return frame


def mask_table(frame, mask_thresholds=MASK_THRESHOLDS):
    """Mean raw-mask DSC1 and median predicted / true area per size tertile and over all positives.

    Returns:
        pandas DataFrame, one row per group present (`small`, `moderate`, `large`, `positives`): `group`, `n`,
        then `dsc1@t` and `area_ratio@t` for each mask threshold.
    """
    import pandas as pd

    from ptx_keras.metrics.segmentation import dice_from_counts

    positives = frame[frame["true_area"] > 0]
    groups = [(name, positives[positives["size_class"] == name]) for name in TERTILES]
    rows = []
    for name, part in [*groups, ("positives", positives)]:
        if part.empty:
            continue
        row = {"group": name, "n": len(part)}
        for t in mask_thresholds:
            pred, inter = (part[f"{k}@{t:g}"].to_numpy() for k in ("pred", "inter"))
            true = part["true_area"].to_numpy()
            row[f"dsc1@{t:g}"] = float(np.mean(dice_from_counts(inter, pred, true)))
            row[f"area_ratio@{t:g}"] = float(np.median(pred / true))
        rows.append(row)
    return pd.DataFrame(rows)


def gate_table(frame, gate_thresholds=GATE_THRESHOLDS):
    """ROC AUC of each image score, positives vs healthy and smallest tertile vs healthy.

    Returns:
        pandas DataFrame, one row per score (`total>g`, `largest>g`): `score`, `auc_positives`, `auc_small`
        (NaN without healthy images or small positives), `small_scores` (sorted) and `healthy_top` (the
        `HEALTHY_SHOWN` highest healthy scores, sorted).
    """
    import pandas as pd

    from ptx_keras.diagnosis import roc_auc

    label = (frame["true_area"] > 0).to_numpy().astype(int)
    small = (frame["size_class"] == "small").to_numpy()
    rows = []
    for g in gate_thresholds:
        for kind in ("total", "largest"):
            name = f"{kind}>{g:g}"
            score = frame[name].to_numpy()
            keep = small | (label == 0)
            rows.append(
                {
                    "score": name,
                    "auc_positives": roc_auc(label, score),
                    "auc_small": roc_auc(label[keep], score[keep]),
                    "small_scores": sorted(int(s) for s in score[small]),
                    "healthy_top": sorted(int(s) for s in score[label == 0])[-HEALTHY_SHOWN:],
                }
            )
    return pd.DataFrame(rows)


def markdown(run_name, split, tta, masks, gates, mask_thresholds=MASK_THRESHOLDS):
    """The two tables as Markdown, each value saying which mask it scores (the raw mask: no diagnosis gate)."""
    lines = [f"# Small pneumothoraces: {run_name}, {split} split, TTA {tta}", ""]
    lines += ["Raw-mask DSC1 (no diagnosis gate), mean per group, by mask threshold:", ""]
    head = " | ".join(f"> {t:g}" for t in mask_thresholds)
    lines += [f"| group | n | {head} |", "|---|---|" + "---|" * len(mask_thresholds)]
    for _, r in masks.iterrows():
        cells = " | ".join(f"{r[f'dsc1@{t:g}']:.2f}" for t in mask_thresholds)
        lines.append(f"| {r['group']} | {r['n']} | {cells} |")
    lines += ["", "Median predicted / true area of the raw mask, by mask threshold:", ""]
    lines += [f"| group | n | {head} |", "|---|---|" + "---|" * len(mask_thresholds)]
    for _, r in masks.iterrows():
        cells = " | ".join(f"{r[f'area_ratio@{t:g}']:.2f}" for t in mask_thresholds)
        lines.append(f"| {r['group']} | {r['n']} | {cells} |")
    lines += ["", "Image scores (pixels above t; largest 8-connected component above t):", ""]
    lines += ["| score | ROC AUC, positives vs healthy | ROC AUC, small vs healthy | small ones' scores | "
              f"{HEALTHY_SHOWN} highest healthy |", "|---|---|---|---|---|"]  # fmt: skip
    for _, r in gates.iterrows():
        lines.append(
            f"| {r['score']} | {r['auc_positives']:.3f} | {r['auc_small']:.3f} | "
            f"{' '.join(map(str, r['small_scores']))} | {' '.join(map(str, r['healthy_top']))} |"
        )
    return "\n".join(lines) + "\n"


def _thresholds(values, flag):
    for v in values:
        if not 0 <= v < 1:
            raise SystemExit(f"{flag}: every threshold must be in [0, 1). Received: {v}")
    return tuple(values)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--tta", default="none", choices=("none", "hflip"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--mask-thresholds", type=float, nargs="+", default=list(MASK_THRESHOLDS))
    parser.add_argument("--gate-thresholds", type=float, nargs="+", default=list(GATE_THRESHOLDS))
    parser.add_argument("--out", default=None, help="folder of the tables (default: RUN_DIR/eval/<split>/)")
    args = parser.parse_args(argv)
    mask_t = _thresholds(args.mask_thresholds, "--mask-thresholds")
    gate_t = _thresholds(args.gate_thresholds, "--gate-thresholds")

    from ptx_keras.errors import PtxError

    for run_dir in args.runs:
        name = os.path.basename(os.path.normpath(run_dir))
        try:
            frame = collect(
                run_dir, args.split, args.tta, args.batch_size, mask_thresholds=mask_t, gate_thresholds=gate_t
            )
        except PtxError as e:
            raise SystemExit(f"{run_dir}: {e}") from None
        masks, gates = mask_table(frame, mask_t), gate_table(frame, gate_t)
        common = {"run": run_dir, "split": args.split, "tta": args.tta, "mask": "raw (no diagnosis gate)"}
        for _, row in masks.iterrows():
            emit("small_lesions_mask", **common, **row.to_dict())
        for _, row in gates.iterrows():
            emit("small_lesions_gate", **common, **row.to_dict())
        out = os.path.join(args.out, name) if args.out else os.path.join(run_dir, "eval", args.split, "small_lesions")
        os.makedirs(out, exist_ok=True)
        masks.to_csv(os.path.join(out, "masks.csv"), index=False)
        gates.to_csv(os.path.join(out, "gates.csv"), index=False)
        with open(os.path.join(out, "small_lesions.md"), "w", encoding="utf-8") as f:
            f.write(markdown(name, args.split, args.tta, masks, gates, mask_t))
        print(f"{name}: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
