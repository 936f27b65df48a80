"""K-fold cross-validation of a training recipe on a small set of real images, from scratch and from a
pre-trained start.

`DATA` is any source `--data` takes (a folder of `images/` + `masks/` PNG pairs, a CSV manifest, a SIIM-ACR
folder). The images are split into `--folds` folds, stratified by label (and by `group` when the source gives
one); for each fold the recipe (`--config`, `--set`) trains on the other folds (a `--val-fraction` of them, per
label, is its validation split: checkpoint choice and threshold search) and is scored on that fold, once from
scratch and once started from `--init-from` (`train.init_from`, see docs/training.md; with its encoder frozen for
`--freeze-encoder-epochs`). Without `--init-from` the
script first pre-trains the same recipe on its built-in phantoms (`data.path` empty) and starts from that run;
`--scratch-only` skips the pre-trained start.

Prints one JSON line per fold and start (`real_images_fold`) and one per start over all folds
(`real_images_summary`), each with the machine (`benchmarks/_machine.py`): DSC1 on the positive images of the
framework output (gated) and of the raw mask, DSC1 per size tertile (of the true area, over the pooled test
folds), diagnosis accuracy, sensitivity and specificity; writes `results.csv` (one row per fold and start, and
the pooled rows) and `results.md` into `--out`. Nothing of DATA is copied into the repository: the prepared
folds and runs live under `--out`.

Usage: `python benchmarks/real_images.py DATA --folds 5 [--config configs/small_cpu.yaml] [--init-from RUN]
[--out /tmp/real_images] [--set key=value ...]` (docs/evaluation.md, "Real radiographs").
"""

import argparse
import csv
import dataclasses
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks._machine import machine  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "small_cpu.yaml")
STARTS = ("scratch", "pretrained")
TERTILES = ("small", "moderate", "large")


def emit(name, **values):
    import tensorflow as tf

    print(
        json.dumps({"measurement": name, **values, "machine": machine(tensorflow=tf.__version__)}, default=float),
        flush=True,
    )


# ------------------------------------------------------------------------------------------------------------
# Folds
# ------------------------------------------------------------------------------------------------------------
def assign_folds(labels, groups, folds, seed):
    """Stratified, group-aware fold of every sample.

    Groups (patients) are dealt to folds in turn, positives first, each label's groups in a seeded random
    order, so every fold gets the same share of positives within one group.

    Args:
        labels: 0/1 per sample.
        groups: The grouping key per sample (all samples of a group go to one fold).
        folds: Number of folds (>= 2, at most the number of groups).
        seed: Random seed.

    Returns:
        int array of folds, one per sample.
    """
    labels, groups = np.asarray(labels, int), np.asarray(groups, dtype=object)
    unique = sorted(set(groups.tolist()))
    if not 2 <= folds <= len(unique):
        raise ValueError(f"--folds must be between 2 and the {len(unique)} groups of the data. Received: {folds}")
    group_label = {g: int(labels[groups == g].max()) for g in unique}
    rng = np.random.default_rng(seed)
    order = []
    for label in (1, 0):
        members = [g for g in unique if group_label[g] == label]
        order += [members[i] for i in rng.permutation(len(members))]
    fold_of = {g: i % folds for i, g in enumerate(order)}
    return np.array([fold_of[g] for g in groups])


def fold_splits(labels, groups, fold, folds_of, val_fraction, seed):
    """`train` / `val` / `test` per sample for one fold: the fold is the test split, and `val_fraction` of the
    other groups of each label (at least one group where a label has two or more) the validation split."""
    labels, groups = np.asarray(labels, int), np.asarray(groups, dtype=object)
    split = np.where(folds_of == fold, "test", "train").astype(object)
    rng = np.random.default_rng([seed, fold])
    for label in (1, 0):
        members = sorted({g for g, s, y in zip(groups, split, labels) if s == "train" and y == label})
        if len(members) < 2:
            continue
        n_val = max(1, round(val_fraction * len(members)))
        for g in (members[i] for i in rng.permutation(len(members))[:n_val]):
            split[groups == g] = "val"
    return split


# ------------------------------------------------------------------------------------------------------------
# Scores
# ------------------------------------------------------------------------------------------------------------
def _mean(values):
    values = np.asarray(values, float)
    return float(values.mean()) if values.size else None


def score(frame):
    """The reported numbers of per-image scores (`per_image.csv` rows, pooled or of one fold)."""
    from ptx_keras.evaluation.scoring import size_classes

    labels = frame["label"].to_numpy(int)
    diagnosis = frame["diagnosis"].to_numpy(int)
    pos = labels == 1
    classes = size_classes(frame["true_area"].to_numpy())[0]
    out = {
        "n_images": len(frame),
        "n_positive": int(pos.sum()),
        "dsc1_positive_gated": _mean(frame["dsc1"].to_numpy()[pos]),
        "dsc1_positive_raw": _mean(frame["dsc1_raw"].to_numpy()[pos]),
        "accuracy": _mean(diagnosis == labels),
        "sensitivity": _mean(diagnosis[pos] == 1),
        "specificity": _mean(diagnosis[~pos] == 0),
    }
    for tertile in TERTILES:
        members = pos & (classes == tertile)
        out[f"dsc1_{tertile}_gated"] = _mean(frame["dsc1"].to_numpy()[members])
        out[f"dsc1_{tertile}_raw"] = _mean(frame["dsc1_raw"].to_numpy()[members])
    return out


COLUMNS = (
    "start",
    "fold",
    "n_images",
    "n_positive",
    "dsc1_positive_gated",
    "dsc1_positive_raw",
    *(f"dsc1_{t}_{m}" for t in TERTILES for m in ("gated", "raw")),
    "accuracy",
    "sensitivity",
    "specificity",
    "train_seconds",
    "thresholds",
)


def _fmt(value):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def write_tables(rows, out_dir, header):
    """`results.csv` (every row) and `results.md` (the pooled rows, then the folds)."""
    with open(os.path.join(out_dir, "results.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    shown = (
        "start",
        "fold",
        "n_images",
        "n_positive",
        "dsc1_positive_gated",
        "dsc1_positive_raw",
        "dsc1_small_gated",
        "dsc1_moderate_gated",
        "dsc1_large_gated",
        "accuracy",
        "sensitivity",
        "specificity",
        "train_seconds",
        "thresholds",
    )
    names = (
        "start",
        "fold",
        "images",
        "positive",
        "DSC1 pos. (gated)",
        "DSC1 pos. (raw)",
        "DSC1 small",
        "DSC1 moderate",
        "DSC1 large",
        "accuracy",
        "sensitivity",
        "specificity",
        "train s",
        "thresholds",
    )
    lines = [header, "", "| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in sorted(rows, key=lambda r: (r["fold"] != "all", str(r["fold"]), r["start"])):
        lines.append("| " + " | ".join(_fmt(row.get(k)) for k in shown) + " |")
    path = os.path.join(out_dir, "results.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------------------------
def _config(args, *sets):
    from ptx_keras.config import load_config

    return load_config(args.config, list(args.overrides) + list(sets))


def _train(cfg, verbose):
    """Trains and evaluates the test split of `cfg`; returns `(per-image DataFrame, train seconds)`."""
    import pandas as pd

    from ptx_keras.evaluation import evaluate_run
    from ptx_keras.training import train

    result = train(cfg, verbose=verbose)
    evaluation = evaluate_run(result.run_dir, split="test", progress=False)
    return pd.read_csv(evaluation.per_image_csv), result.seconds


def pretrain(args, out):
    """Trains the recipe on its built-in phantoms (`data.path` empty): the pre-trained start."""
    cfg = _config(
        args,
        "data.path=null",
        f"output_dir={out}",
        "name=pretrain",
        "train.evaluate=false",
        "train.export=false",
        "train.init_from=null",
        "train.freeze_encoder_epochs=0",
    )
    from ptx_keras.training import train

    t0 = time.time()
    result = train(cfg, verbose=args.verbose)
    emit(
        "real_images_pretrain",
        run=result.run_dir.path,
        epochs=result.epochs,
        seconds=round(time.time() - t0, 1),
        config=args.config,
        overrides=list(args.overrides),
    )
    return result.run_dir.path


def run(args):
    import pandas as pd

    from ptx_keras.data.prepare import prepare_dataset, resolve_source
    from ptx_keras.data.prepared import read_manifest

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    base = _config(args)
    _, format_name, records, _ = resolve_source(args.data, skip_bad=base.data.skip_bad)
    # One preparation of the whole set gives every label (a folder's masks must be read to know them).
    info = prepare_dataset(records, os.path.join(out, "all"), base.data, workers=base.data.workers, progress=False)
    label_of = {r["sample_id"]: int(r["label"]) for r in read_manifest(info["output_dir"])}
    records = [r for r in records if r.sample_id in label_of]
    labels = [label_of[r.sample_id] for r in records]
    groups = [r.group or r.sample_id for r in records]
    folds_of = assign_folds(labels, groups, args.folds, args.seed)
    emit(
        "real_images_data",
        data=os.path.abspath(args.data),
        format=format_name,
        n_images=len(records),
        n_positive=int(sum(labels)),
        folds=args.folds,
        config=args.config,
        overrides=list(args.overrides),
    )

    starts = ["scratch"]
    init_from = None
    if not args.scratch_only:
        if not args.init_from:
            init_from = pretrain(args, os.path.join(out, "runs"))
        elif _is_checkpoint_name(args.init_from):  # a shipped checkpoint, e.g. phantom_small_cpu
            init_from = args.init_from
        else:
            init_from = os.path.abspath(args.init_from)
        starts.append("pretrained")

    rows, per_image = [], {s: [] for s in starts}
    for fold in range(args.folds):
        split = fold_splits(labels, groups, fold, folds_of, args.val_fraction, args.seed)
        fold_records = [dataclasses.replace(r, split=str(s)) for r, s in zip(records, split)]
        prepared = os.path.join(out, "folds", f"fold{fold}")
        prepare_dataset(fold_records, prepared, base.data, workers=base.data.workers, progress=False)
        # The threshold search needs positive and negative validation images; a set without negatives (or a
        # fold whose validation split lacks one kind) is scored with the configuration's thresholds.
        search = base.evaluation.search_thresholds and len({y for y, s in zip(labels, split) if s == "val"}) == 2
        if base.evaluation.search_thresholds and not search:
            print(
                f"fold {fold}: the validation split holds one label only: configured thresholds, no search",
                file=sys.stderr,
            )
        # A set of positive images only (public segmentation sets often keep only those) still trains the
        # masks; the run says so (train.allow_positive_only) and the accuracy is then the sensitivity.
        positive_only = 0 not in {y for y, s in zip(labels, split) if s == "train"}
        if positive_only:
            print(
                f"fold {fold}: the training split holds positive images only: train.allow_positive_only",
                file=sys.stderr,
            )
        for start in starts:
            sets = [
                f"data.path={prepared}",
                f"output_dir={os.path.join(out, 'runs')}",
                f"name={start}-fold{fold}",
                "train.evaluate=false",
                "train.export=false",
                f"evaluation.search_thresholds={str(search).lower()}",
                f"train.allow_positive_only={str(positive_only).lower()}",
            ]
            if start == "pretrained":
                sets += [f"train.init_from={init_from}", f"train.freeze_encoder_epochs={args.freeze_encoder_epochs}"]
            else:
                sets += ["train.init_from=null", "train.freeze_encoder_epochs=0"]
            frame, seconds = _train(_config(args, *sets), args.verbose)
            frame["fold"] = fold
            per_image[start].append(frame)
            row = {
                "start": start,
                "fold": fold,
                **score(frame),
                "train_seconds": round(seconds, 1),
                "thresholds": "searched on val" if search else "configured",
            }
            rows.append(row)
            emit("real_images_fold", **row)
    for start in starts:
        pooled = pd.concat(per_image[start], ignore_index=True)
        pooled.to_csv(os.path.join(out, f"per_image_{start}.csv"), index=False)
        seconds = sum(r["train_seconds"] for r in rows if r["start"] == start)
        fold_dsc = [
            r["dsc1_positive_gated"] for r in rows if r["start"] == start and r["dsc1_positive_gated"] is not None
        ]
        row = {
            "start": start,
            "fold": "all",
            **score(pooled),
            "train_seconds": round(seconds, 1),
            "thresholds": "; ".join(sorted({r["thresholds"] for r in rows if r["start"] == start})),
        }
        rows.append(row)
        emit(
            "real_images_summary",
            **row,
            init_from=init_from if start == "pretrained" else None,
            dsc1_positive_gated_fold_std=float(np.std(fold_dsc)) if fold_dsc else None,
        )
    header = (
        f"{len(records)} images ({sum(labels)} positive) from {os.path.abspath(args.data)}, {args.folds}-fold "
        f"cross-validation of {args.config} {' '.join('--set ' + s for s in args.overrides)}; pretrained start: "
        f"{init_from or 'none'}. Tertiles of the true area over the pooled test folds."
    )
    path = write_tables(rows, out, header)
    print(f"tables: {path}, {os.path.join(out, 'results.csv')}", file=sys.stderr)
    return rows


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="the real images: any source --data takes (images/ + masks/ folder, CSV, SIIM-ACR)")
    p.add_argument("--folds", type=int, default=5, help="folds (default 5)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="the recipe (default configs/small_cpu.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a configuration value (repeatable), for every run including the pre-training",
    )
    p.add_argument(
        "--init-from",
        help="the pre-trained start (run directory, .keras file or shipped checkpoint, e.g. phantom_small_cpu, "
        "for the small-CPU recipe); default: pre-train the recipe on its phantoms first",
    )
    p.add_argument(
        "--freeze-encoder-epochs",
        type=int,
        default=0,
        help="train.freeze_encoder_epochs of the pre-trained start (default 0)",
    )
    p.add_argument("--scratch-only", action="store_true", help="only train from scratch")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of the training folds' images of each label used for validation (default 0.2)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the folds (default 0)")
    p.add_argument("--out", default="real_images", help="working folder: prepared folds, runs, tables")
    p.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="Keras progress output")
    return p


def _is_checkpoint_name(source):
    from ptx_keras.pretrained import is_checkpoint_name

    return is_checkpoint_name(source)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not 0 < args.val_fraction < 1:
        raise SystemExit(f"error: --val-fraction must be in (0, 1). Received: {args.val_fraction}")
    from ptx_keras.cli.common import configure_logging

    configure_logging()
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
