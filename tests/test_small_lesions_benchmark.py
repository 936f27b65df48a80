"""`benchmarks/small_lesions.py`: the per-image counts, the tables by hand, and the script end to end on a tiny
run."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tiny import ROOT, load_benchmark

SCRIPT = os.path.join(ROOT, "benchmarks", "small_lesions.py")


def _module():
    return load_benchmark(SCRIPT)


def test_image_statistics_by_hand():
    bench = _module()
    prob = np.zeros((6, 6), np.float32)
    prob[0, 0:3] = 0.99  # a component of 3 pixels above 0.98
    prob[4, 4] = prob[5, 5] = 0.99  # 2 pixels touching by a corner: one 8-connected component
    prob[2, 0] = 0.85  # above 0.8 only
    true = np.zeros((6, 6), bool)
    true[0, 0:4] = True  # 4 true pixels, 3 of them predicted above 0.98
    s = bench.image_statistics(prob, true, mask_thresholds=(0.8, 0.98), gate_thresholds=(0.8, 0.98))
    assert s["true_area"] == 4
    assert (s["pred@0.8"], s["inter@0.8"]) == (6, 3)
    assert (s["pred@0.98"], s["inter@0.98"]) == (5, 3)
    assert (s["total>0.98"], s["largest>0.98"]) == (5, 3)
    assert (s["total>0.8"], s["largest>0.8"]) == (6, 3)
    empty = bench.image_statistics(np.zeros((4, 4)), np.zeros((4, 4)), (0.5,), (0.5,))
    assert empty == {"true_area": 0, "pred@0.5": 0, "inter@0.5": 0, "total>0.5": 0, "largest>0.5": 0}


def _frame():
    # Three positives (one per tertile) and two healthy images, counts at one threshold (0.5).
    return pd.DataFrame(
        {
            "sample_id": list("abcde"),
            "size_class": ["small", "moderate", "large", "", ""],
            "true_area": [10, 20, 40, 0, 0],
            "pred@0.5": [30, 20, 40, 5, 0],
            "inter@0.5": [10, 10, 40, 0, 0],
            "total>0.5": [30, 20, 40, 5, 0],
            "largest>0.5": [2, 20, 40, 5, 0],
        }
    )


def test_mask_table_by_hand():
    masks = _module().mask_table(_frame(), mask_thresholds=(0.5,)).set_index("group")
    assert list(masks.index) == ["small", "moderate", "large", "positives"]
    # small: 2*10 / (30 + 10) = 0.5; moderate: 2*10 / 40 = 0.5; large: 1.
    assert masks.loc["small", "dsc1@0.5"] == pytest.approx(0.5)
    assert masks.loc["moderate", "dsc1@0.5"] == pytest.approx(0.5)
    assert masks.loc["large", "dsc1@0.5"] == pytest.approx(1.0)
    assert masks.loc["positives", "dsc1@0.5"] == pytest.approx(2 / 3)
    assert masks.loc["small", "area_ratio@0.5"] == pytest.approx(3.0)
    assert masks.loc["positives", "area_ratio@0.5"] == pytest.approx(1.0)  # median of 3, 1, 1
    assert masks.loc["positives", "n"] == 3


def test_gate_table_by_hand():
    gates = _module().gate_table(_frame(), gate_thresholds=(0.5,)).set_index("score")
    # total: every positive (30, 20, 40) above both healthy (5, 0): AUC 1. largest: the small one's 2 is below
    # the healthy 5 and above the healthy 0 -> small vs healthy 0.5; positives vs healthy (5 of 6 pairs) 5/6.
    assert gates.loc["total>0.5", "auc_positives"] == pytest.approx(1.0)
    assert gates.loc["total>0.5", "auc_small"] == pytest.approx(1.0)
    assert gates.loc["largest>0.5", "auc_small"] == pytest.approx(0.5)
    assert gates.loc["largest>0.5", "auc_positives"] == pytest.approx(5 / 6)
    assert gates.loc["largest>0.5", "small_scores"] == [2]
    assert gates.loc["largest>0.5", "healthy_top"] == [0, 5]


def test_invalid_threshold_is_refused():
    with pytest.raises(SystemExit, match="--mask-thresholds: every threshold must be in \\[0, 1\\). Received: 1.0"):
        _module().main(["some_run", "--mask-thresholds", "0.5", "1.0"])


def test_missing_run_is_one_line():
    proc = subprocess.run(
        [sys.executable, SCRIPT, os.path.join(ROOT, "no_such_run")], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode != 0
    assert "no_such_run" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_end_to_end_on_a_tiny_run(tmp_path):
    from tiny import make_tiny_run

    run, _, _ = make_tiny_run(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, SCRIPT, str(run), "--out", str(out), "--mask-thresholds", "0.5", "0.9"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    kinds = {line["measurement"] for line in lines}
    assert kinds == {"small_lesions_mask", "small_lesions_gate"}
    assert all(line["mask"] == "raw (no diagnosis gate)" and "cpu_flags" in line["machine"] for line in lines)
    folder = out / run.name
    masks = pd.read_csv(folder / "masks.csv")
    assert "positives" in set(masks["group"]) and {"dsc1@0.5", "dsc1@0.9"} <= set(masks.columns)
    assert masks["dsc1@0.5"].between(0, 1).all()
    assert len(pd.read_csv(folder / "gates.csv")) == 4  # total and largest at the 2 default gate thresholds
    text = (folder / "small_lesions.md").read_text()
    assert "Raw-mask DSC1 (no diagnosis gate)" in text and "| > 0.5 | > 0.9 |" in text
