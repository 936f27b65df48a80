"""Tests for ptx_keras.metrics.statistics: run comparisons, formatting and the table writer."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ptx_keras.errors import DataError, PtxError
from ptx_keras.evaluation.compare import write_comparison
from ptx_keras.metrics.statistics import compare_runs, comparison_table, format_mean_std

IDS = ["s1", "s2", "s3", "s4", "s5"]


def _runs():
    ours = pd.DataFrame({"sample_id": IDS, "dsc1": [0.9, 0.8, 0.7, 0.6, 1.0], "hd": [1.0, np.nan, 3.0, 4.0, 5.0]})
    # The baseline lists the same images in another order: values must be aligned by sample_id.
    order = [4, 2, 0, 3, 1]
    base = pd.DataFrame(
        {
            "sample_id": [IDS[i] for i in order],
            "dsc1": [[0.5, 0.6, 0.4, 0.3, 0.6][i] for i in order],
            "hd": [[2.0, 3.0, np.nan, 6.0, 9.0][i] for i in order],
        }
    )
    return {"ours": ours, "baseline": base}


def test_t_test_and_wilcoxon_on_fixed_numbers():
    out = compare_runs(_runs(), metrics=("dsc1", "hd")).set_index(["run", "metric"])
    ref = out.loc[("ours", "dsc1")]
    assert ref["is_reference"] and math.isnan(ref["t_pvalue"]) and not ref["t_significant"]
    assert ref["mean"] == pytest.approx(0.8) and ref["std"] == pytest.approx(math.sqrt(0.025))
    row = out.loc[("baseline", "dsc1")]
    assert row["mean"] == pytest.approx(0.48) and row["std"] == pytest.approx(math.sqrt(0.017))
    # Pooled variance (0.017 + 0.025) / 2 = 0.021; t = (0.48 - 0.8) / sqrt(0.021 * 2 / 5).
    assert row["t_statistic"] == pytest.approx(-0.32 / math.sqrt(0.0084))
    expected = stats.ttest_ind([0.5, 0.6, 0.4, 0.3, 0.6], [0.9, 0.8, 0.7, 0.6, 1.0], equal_var=True)
    assert row["t_pvalue"] == pytest.approx(expected.pvalue)
    assert row["t_significant"]  # p = 0.008
    # Every paired difference is negative: W = 0, exact two-sided p = 2 / 2**5.
    assert row["wilcoxon_statistic"] == 0.0 and row["wilcoxon_pvalue"] == pytest.approx(0.0625)
    assert not row["wilcoxon_significant"]
    assert row["n_pairs"] == 5 and row["n_pairs_dropped"] == 0


def test_missing_hd_dropped_per_run_and_pairwise():
    out = compare_runs(_runs(), metrics=("hd",)).set_index("run")
    base = out.loc["baseline"]
    assert base["n_valid"] == 4 and base["n_missing"] == 1 and base["mean"] == pytest.approx(5.0)
    expected = stats.ttest_ind([2.0, 3.0, 6.0, 9.0], [1.0, 3.0, 4.0, 5.0], equal_var=True)
    assert base["t_pvalue"] == pytest.approx(expected.pvalue)
    # Pairs valid in both: s1 (2-1), s4 (6-4), s5 (9-5).
    assert base["n_pairs"] == 3 and base["n_pairs_dropped"] == 2
    assert base["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon([1.0, 2.0, 4.0]).pvalue)


def test_identical_runs_and_reference_choice():
    runs = _runs()
    runs["copy"] = runs["ours"].copy()
    runs["const"] = runs["ours"].assign(dsc1=1.0)
    runs["const2"] = runs["ours"].assign(dsc1=1.0)
    out = compare_runs(runs, reference="const", metrics=("dsc1",)).set_index("run")
    assert list(out.index) == ["ours", "baseline", "copy", "const", "const2"]
    assert out.loc["const", "is_reference"] and not out.loc["ours", "is_reference"]
    # Constant equal samples: no difference, p = 1 (scipy alone would give NaN).
    assert out.loc["const2", "t_pvalue"] == 1.0 and out.loc["const2", "wilcoxon_pvalue"] == 1.0
    same = compare_runs(runs, metrics=("dsc1",)).set_index("run").loc["copy"]
    assert same["t_pvalue"] == pytest.approx(1.0) and same["wilcoxon_statistic"] == 0.0
    assert same["wilcoxon_pvalue"] == 1.0 and not same["wilcoxon_significant"]


def test_mismatched_images_and_other_errors():
    runs = _runs()
    runs["partial"] = runs["ours"].iloc[:4].assign(sample_id=["s1", "s2", "s3", "x9"])
    with pytest.raises(DataError, match=r"'partial'.*2 missing.*'s4', 's5'.*1 extra.*'x9'"):
        compare_runs(runs, metrics=("dsc1",))
    assert issubclass(DataError, PtxError)
    dup = _runs()
    dup["dup"] = pd.concat([dup["ours"], dup["ours"].iloc[:1]])
    with pytest.raises(DataError, match="more than once"):
        compare_runs(dup, metrics=("dsc1",))
    with pytest.raises(DataError, match="mpa"):
        compare_runs(_runs())  # default metrics include mpa, absent here
    with pytest.raises(DataError, match="sample_id"):
        compare_runs({"a": pd.DataFrame({"dsc1": [1.0]})}, metrics=("dsc1",))
    with pytest.raises(ValueError, match="reference"):
        compare_runs(_runs(), reference="nope", metrics=("dsc1",))
    with pytest.raises(ValueError, match="empty"):
        compare_runs({})
    with pytest.raises(ValueError, match="alpha"):
        compare_runs(_runs(), metrics=("dsc1",), alpha=1.5)


def test_format_mean_std():
    assert format_mean_std(0.9312, 0.1349) == "0.93 (0.13)"
    assert format_mean_std(12.3456, 7.0, digits=1) == "12.3 (7.0)"
    assert format_mean_std(0.5, float("nan")) == "0.50"
    assert format_mean_std(float("nan"), 0.1) == "n/a"
    with pytest.raises(ValueError, match="digits"):
        format_mean_std(0.5, 0.1, digits=-1)


def test_comparison_table_and_writer(tmp_path):
    comparison = compare_runs(_runs(), metrics=("dsc1", "hd"))
    table = comparison_table(comparison)
    assert list(table.index) == ["ours", "baseline"] and list(table.columns) == ["dsc1", "hd"]
    assert table.loc["ours", "dsc1"] == "0.80 (0.16)"
    assert table.loc["baseline", "dsc1"] == "0.48 (0.13)*"
    assert comparison_table(comparison, test="wilcoxon").loc["baseline", "dsc1"] == "0.48 (0.13)"
    with pytest.raises(ValueError, match="test"):
        comparison_table(comparison, test="anova")
    csv_path, md_path = write_comparison(comparison, tmp_path / "eval")
    back = pd.read_csv(csv_path)
    assert len(back) == 4 and back["t_pvalue"].iloc[2] == pytest.approx(comparison["t_pvalue"].iloc[2])
    text = open(md_path).read()
    assert "| baseline | 0.48 (0.13)* |" in text
    assert "p < 0.05" in text and "significant difference from ours" in text
    assert "ours/hd: 1" in text and "baseline/hd: 1" in text
