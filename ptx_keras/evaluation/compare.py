"""Comparing evaluated runs on the same images: mean (std), Student's t-test and the paired Wilcoxon test."""

import dataclasses
import json
import logging
import os

import numpy as np
import pandas as pd

from ptx_keras import constants as C
from ptx_keras.errors import DataError, PtxError
from ptx_keras.evaluation.predictions import check_split
from ptx_keras.evaluation.report import DIAGNOSIS_NAMES

__all__ = ["COMPARED_METRICS", "ComparisonResult", "compare_runs", "unique_names", "write_comparison"]


logger = logging.getLogger(__name__)

COMPARED_METRICS = ("mpa", "pa1", "dsc", "dsc1", "hd", "hd95")


@dataclasses.dataclass(frozen=True)
class ComparisonResult:
    """What `compare_runs` wrote.

    Attributes:
        csv: `comparison.csv`, one row per run and metric with every statistic.
        markdown: `comparison.md`.
        diagnosis_csv: `comparison_diagnosis.csv`.
        histogram: `dsc_histogram.png`.
        table: The comparison DataFrame (`ptx_keras.metrics.compare_runs`).
    """

    csv: str
    markdown: str
    diagnosis_csv: str
    histogram: str
    table: object


def write_comparison(comparison, out_dir, digits=2, alpha=C.SIGNIFICANCE_LEVEL):
    """Writes a comparison as CSV (full precision) and Markdown (the paper's table layout).

    Args:
        comparison: DataFrame returned by `ptx_keras.metrics.compare_runs`.
        out_dir: Folder to write into (created if needed).
        digits: Decimal places of the Markdown cells.
        alpha: Significance level quoted in the Markdown legend (use the one given to `compare_runs`).

    Returns:
        `(csv_path, markdown_path)` of `comparison.csv` and `comparison.md`.
    """
    from ptx_keras.metrics import comparison_table
    from ptx_keras.reports import markdown_table, write_text

    os.makedirs(out_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, "comparison.csv")
    comparison.to_csv(csv_path, index=False)
    reference = comparison.loc[comparison["is_reference"], "run"]
    reference = reference.iloc[0] if len(reference) else "the reference"
    parts = []
    for test, title in (("t", "Student's t-test for two independent samples"), ("wilcoxon", "paired Wilcoxon")):
        table = comparison_table(comparison, digits, test)
        parts.append(
            f"Mean (std) per image; * marks a significant difference from {reference} "
            f"({title}, p < {alpha}).\n\n{markdown_table(table.reset_index())}\n"
        )
    dropped = comparison[comparison["n_missing"] > 0]
    if len(dropped):
        notes = ", ".join(f"{r.run}/{r.metric}: {r.n_missing}" for r in dropped.itertuples())
        parts.append(f"Missing values (undefined, e.g. HD with an empty mask) left out: {notes}.\n")
    md_path = write_text(os.path.join(out_dir, "comparison.md"), "\n".join(parts))
    return csv_path, md_path


def unique_names(run_dirs, names):
    """Display names of runs: `names` checked, else the directory names (their paths when two share a name,
    numbered when the same directory is given twice)."""
    if names is not None:
        if len(names) != len(run_dirs):
            raise PtxError(f"--names needs one name per run: {len(names)} names for {len(run_dirs)} runs")
        if len(set(names)) != len(names):
            raise PtxError(f"--names must be distinct. Received: {list(names)}")
        return list(names)
    paths = [os.path.normpath(os.fspath(r)) for r in run_dirs]
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
        for key in (*C.DIAGNOSIS_KEYS, "roc_auc"):
            row[key] = dx.get(key)
        rows.append(row)
    return pd.DataFrame(rows)


def _pvalue_table(table):
    runs = list(dict.fromkeys(table["run"]))
    metrics = list(dict.fromkeys(table["metric"]))
    rows = []
    for run in runs:
        row = {"run": run}
        for metric in metrics:
            r = table[(table["run"] == run) & (table["metric"] == metric)].iloc[0]
            if r["is_reference"]:
                row[metric] = "reference"
            else:
                t = "n/a" if not np.isfinite(r["t_pvalue"]) else f"{r['t_pvalue']:.3g}"
                w = "n/a" if not np.isfinite(r["wilcoxon_pvalue"]) else f"{r['wilcoxon_pvalue']:.3g}"
                row[metric] = f"{t} / {w}"
        rows.append(row)
    return pd.DataFrame(rows)


def _percent(v):
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.2f} %"


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
        `ComparisonResult`.

    Raises:
        PtxError: if fewer than two runs are given, the split is unknown, a run has not been evaluated on the
            split, or the runs were evaluated on different images.
    """
    from ptx_keras.figures.evaluation import plot_score_histograms
    from ptx_keras.metrics import compare_runs as _compare
    from ptx_keras.runs import RunDir

    check_split(split)
    if len(run_dirs) < 2:
        raise PtxError("--compare needs at least two run directories")
    names = unique_names(run_dirs, names)
    runs = [RunDir.of(r) for r in run_dirs]
    scores, summaries = _read_evaluations(names, runs, split)
    metrics = [m for m in COMPARED_METRICS if all(m in s.columns for s in scores.values())]
    try:
        table = _compare(scores, reference=names[0], metrics=metrics)
    except (DataError, ValueError) as e:
        raise PtxError(f"Cannot compare these runs: {e}") from None
    output = output or runs[0].comparison_dir(split)
    csv_path, md_path = write_comparison(table, output)
    diagnosis = _diagnosis_table(summaries)
    diagnosis_csv = os.path.join(output, "comparison_diagnosis.csv")
    diagnosis.to_csv(diagnosis_csv, index=False)
    n_images = len(next(iter(scores.values())))
    header = _markdown_header(split, n_images, names, runs, summaries)
    _complete_markdown(md_path, header, names[0], table, diagnosis)
    histogram = plot_score_histograms(
        {n: s["dsc"].to_numpy() for n, s in scores.items()},
        os.path.join(output, "dsc_histogram.png"),
        metric="DSC",
        title=f"Per-image DSC on the {split} split (cf. Fig. 6)",
    )
    logger.info("Comparison of %d runs on %s (%d images): %s", len(runs), split, n_images, md_path)
    return ComparisonResult(csv_path, md_path, diagnosis_csv, histogram, table)


def _read_evaluations(names, runs, split):
    """`({name: per-image scores}, {name: summary.json's contents or None})` of each run's `split` evaluation.

    Raises:
        PtxError: if a run has not been evaluated on the split.
    """
    scores, summaries = {}, {}
    for name, run in zip(names, runs):
        path = run.per_image_file(split)
        if not os.path.isfile(path):
            raise PtxError(
                f"{run.path} has not been evaluated on the {split} split (no {path}); run: python "
                f"evaluate.py {run.path} --split {split}"
            )
        scores[name] = pd.read_csv(path, dtype={"sample_id": str})
        summary_path = run.summary_file(split)
        summaries[name] = None
        if os.path.isfile(summary_path):
            with open(summary_path, encoding="utf-8") as f:
                summaries[name] = json.load(f)
    return scores, summaries


def _markdown_header(split, n_images, names, runs, summaries):
    """`comparison.md`'s title, the runs compared and which masks their metrics score."""
    return (
        f"# Comparison on the {split} split ({n_images} shared images; reference: {names[0]})\n\n"
        + "\n".join(f"- {n}: {os.path.abspath(r.path)}" for n, r in zip(names, runs))
        + f"\n\nSegmentation metrics score {_scored_masks(summaries)}.\n\n"
    )


def _complete_markdown(md_path, header, reference, table, diagnosis):
    """Rewrites `comparison.md` (`write_comparison`'s table) with `header` first, then the p-values against
    `reference` and the diagnosis table."""
    from ptx_keras.reports import markdown_table, write_text

    with open(md_path, encoding="utf-8") as f:
        body = f.read()
    write_text(
        md_path,
        header
        + "## Segmentation\n\n"
        + body
        + f"\np-values against {reference} (Student's t-test / paired Wilcoxon signed-rank):\n\n"
        + markdown_table(_pvalue_table(table))
        + "\n\n## Diagnosis (each run's own thresholds)\n\n"
        + markdown_table(_shown_diagnosis(diagnosis))
        + "\n",
    )


def _shown_diagnosis(diagnosis):
    """The diagnosis table as the Markdown shows it: percentages and the ROC AUC to 4 decimals."""
    return pd.DataFrame(
        [
            {
                "run": r["run"],
                **{DIAGNOSIS_NAMES[k]: _percent(r[k]) for k in C.DIAGNOSIS_KEYS},
                "ROC AUC": "n/a" if r["roc_auc"] is None or not np.isfinite(r["roc_auc"]) else f"{r['roc_auc']:.4f}",
            }
            for r in diagnosis.to_dict("records")
        ]
    )


def _scored_masks(summaries):
    """Which masks the runs' segmentation metrics score, in words."""
    scored = {(s or {}).get("masks", {}).get("scored", "gated") for s in summaries.values()}
    if scored == {"gated"}:
        return "the framework output (mask emptied when the image is diagnosed negative)"
    if scored == {"raw"}:
        return "the raw mask"
    return "different masks per run (see each run's summary)"
