"""Model comparisons: mean (std) per run and metric, Student's t-test and a paired Wilcoxon test.

The paper marks with an asterisk the results that differ significantly from its model according to
"Student's t-test for two independent samples (p < 0.05)" (Table 2). The test images are the same for
every model, so a paired test (Wilcoxon signed-rank on the per-image differences) is reported beside it
(docs/evaluation.md, "Comparing runs"). Runs must therefore be scored on exactly the same images, identified by `sample_id`.

Missing values (NaN HD where a mask is empty) are dropped: per run for the mean, std and t-test, pairwise
for the Wilcoxon test, and counted in `n_missing` / `n_pairs_dropped`.
"""

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from ptx_keras.constants import SIGNIFICANCE_LEVEL
from ptx_keras.errors import DataError
from ptx_keras.metrics.segmentation import describe

__all__ = ["COMPARED_METRICS", "COMPARISON_COLUMNS", "compare_runs", "comparison_table", "format_mean_std"]


COMPARED_METRICS = ("mpa", "pa1", "dsc", "dsc1", "hd")
COMPARISON_COLUMNS = (
    "run",
    "metric",
    "is_reference",
    "mean",
    "std",
    "n_valid",
    "n_missing",
    "t_statistic",
    "t_pvalue",
    "t_significant",
    "wilcoxon_statistic",
    "wilcoxon_pvalue",
    "wilcoxon_significant",
    "n_pairs",
    "n_pairs_dropped",
)


def format_mean_std(mean, std, digits=2):
    """Formats a mean and standard deviation as in the paper's tables.

    Args:
        mean: The mean (NaN gives "n/a").
        std: The standard deviation (NaN gives the mean alone).
        digits: Decimal places.

    Returns:
        str such as "0.93 (0.13)".

    Raises:
        ValueError: if `digits` is negative or not an int.
    """
    if not isinstance(digits, int) or isinstance(digits, bool) or digits < 0:
        raise ValueError(f"digits must be a non-negative int. Received: digits={digits!r}")
    if mean is None or not np.isfinite(mean):
        return "n/a"
    if std is None or not np.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({std:.{digits}f})"


def _ids(df, run, id_column):
    if id_column not in df.columns:
        raise DataError(f"Scores of run {run!r} have no {id_column!r} column. Columns: {list(df.columns)}")
    ids = df[id_column]
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        raise DataError(
            f"Scores of run {run!r} list {len(duplicated)} {id_column} value(s) more than once, "
            f"e.g. {list(duplicated[:3])}"
        )
    return set(ids)


def _check_same_images(scores_by_run, reference, id_column):
    ref_ids = _ids(scores_by_run[reference], reference, id_column)
    for run, df in scores_by_run.items():
        ids = _ids(df, run, id_column)
        if ids != ref_ids:
            missing, extra = sorted(ref_ids - ids, key=str), sorted(ids - ref_ids, key=str)
            raise DataError(
                f"Run {run!r} was evaluated on different images than the reference {reference!r}: "
                f"{len(missing)} missing (e.g. {missing[:3]}), {len(extra)} extra (e.g. {extra[:3]}). "
                "Evaluate all runs on the same split."
            )


def _t_test(values, ref_values):
    """Student's t-test for two independent samples with equal variances (the paper's test)."""
    if values.size == 0 or ref_values.size == 0 or values.size + ref_values.size < 3:
        return np.nan, np.nan
    if np.ptp(values) == 0 and np.ptp(ref_values) == 0 and values[0] == ref_values[0]:
        return 0.0, 1.0  # identical constants: scipy returns NaN (0/0), but there is no difference
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(values, ref_values, equal_var=True)
    return float(result.statistic), float(result.pvalue)


def _wilcoxon(differences):
    """Wilcoxon signed-rank test of paired differences; all-zero differences give (0, 1)."""
    if differences.size == 0:
        return np.nan, np.nan
    if not np.any(differences):
        return 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.wilcoxon(differences)
    return float(result.statistic), float(result.pvalue)


def compare_runs(
    scores_by_run,
    reference=None,
    metrics=COMPARED_METRICS,
    id_column="sample_id",
    alpha=SIGNIFICANCE_LEVEL,
):
    """Compares per-image scores of several runs against a reference run.

    Args:
        scores_by_run: dict `{run name: DataFrame}`; each DataFrame has an `id_column` and the `metrics`
            columns, one row per image (as `batch_segmentation_scores` returns). Order is kept in the output.
        reference: Name of the reference run (the paper's own model); defaults to the first run.
        metrics: Metric columns to compare.
        id_column: Column identifying the images.
        alpha: Significance level of both tests (the paper's p < 0.05).

    Returns:
        pandas.DataFrame with one row per (run, metric) and the columns `COMPARISON_COLUMNS`: `mean`, `std`
        (ddof=1) and `n_valid`/`n_missing` over the run's valid values; `t_statistic`/`t_pvalue`
        (`scipy.stats.ttest_ind(run, reference, equal_var=True)` on each run's valid values) and
        `t_significant` (p < alpha: the paper's asterisk); `wilcoxon_statistic`/`wilcoxon_pvalue`
        (`scipy.stats.wilcoxon` of run minus reference on the images where both are valid; all-zero
        differences give statistic 0 and p 1) and `wilcoxon_significant`; `n_pairs` and `n_pairs_dropped`
        (pairs with a missing value). The reference's own rows have NaN tests and False flags.

    Raises:
        DataError: if a run lacks the id column or a metric, lists an image twice, or was evaluated on a
            different set of images than the reference.
        ValueError: if `scores_by_run` is empty, `reference` is unknown, or `alpha` is not in (0, 1).
    """
    if not scores_by_run:
        raise ValueError("scores_by_run is empty: pass at least one run")
    if reference is None:
        reference = next(iter(scores_by_run))
    if reference not in scores_by_run:
        raise ValueError(f"Unknown reference run. Received: reference={reference!r}; runs: {list(scores_by_run)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1). Received: alpha={alpha!r}")
    metrics = tuple(metrics)
    for run, df in scores_by_run.items():
        absent = [m for m in metrics if m not in df.columns]
        if absent:
            raise DataError(f"Scores of run {run!r} have no column(s) {absent}. Columns: {list(df.columns)}")
    _check_same_images(scores_by_run, reference, id_column)

    ref = scores_by_run[reference].set_index(id_column)
    rows = []
    for run, df in scores_by_run.items():
        # Align on the reference's image order so that pairs line up.
        aligned = df.set_index(id_column).loc[ref.index]
        for metric in metrics:
            values = aligned[metric].to_numpy(dtype=float)
            ref_values = ref[metric].to_numpy(dtype=float)
            row = {"run": run, "metric": metric, "is_reference": run == reference, **describe(values)}
            both = np.isfinite(values) & np.isfinite(ref_values)
            row["n_pairs"] = int(both.sum())
            row["n_pairs_dropped"] = int(both.size - both.sum())
            if run == reference:
                row.update(t_statistic=np.nan, t_pvalue=np.nan, wilcoxon_statistic=np.nan, wilcoxon_pvalue=np.nan)
            else:
                row["t_statistic"], row["t_pvalue"] = _t_test(
                    values[np.isfinite(values)], ref_values[np.isfinite(ref_values)]
                )
                row["wilcoxon_statistic"], row["wilcoxon_pvalue"] = _wilcoxon(values[both] - ref_values[both])
            # NaN p-values compare False: no asterisk where a test is undefined.
            row["t_significant"] = bool(row["t_pvalue"] < alpha)
            row["wilcoxon_significant"] = bool(row["wilcoxon_pvalue"] < alpha)
            rows.append(row)
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def comparison_table(comparison, digits=2, test="t"):
    """Pivots `compare_runs` output into the paper's Table 2 layout.

    Args:
        comparison: DataFrame returned by `compare_runs`.
        digits: Decimal places of the cells.
        test: Which test sets the asterisk: "t" (the paper's) or "wilcoxon".

    Returns:
        pandas.DataFrame indexed by run (in input order) with one column per metric and cells such as
        "0.90 (0.16)*".

    Raises:
        ValueError: if `test` is unknown.
    """
    if test not in ("t", "wilcoxon"):
        raise ValueError(f"test must be 't' or 'wilcoxon'. Received: test={test!r}")
    flag = "t_significant" if test == "t" else "wilcoxon_significant"
    cells = comparison.assign(
        cell=[
            format_mean_std(m, s, digits) + ("*" if f else "")
            for m, s, f in zip(comparison["mean"], comparison["std"], comparison[flag])
        ]
    )
    runs = list(dict.fromkeys(comparison["run"]))
    metrics = list(dict.fromkeys(comparison["metric"]))
    table = cells.pivot(index="run", columns="metric", values="cell")
    return table.loc[runs, metrics]
