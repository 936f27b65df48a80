"""`benchmarks/real_images.py`: the folds by hand, and the whole script end to end on a tiny phantom folder."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tiny import ROOT, load_benchmark

SCRIPT = os.path.join(ROOT, "benchmarks", "real_images.py")


def _module():
    return load_benchmark(SCRIPT)


def test_folds_are_stratified_and_keep_groups_together():
    bench = _module()
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 1, 0]
    groups = ["a", "b", "c", "d", "e", "f", "g", "h", "a", "e"]  # a and e have two images each
    folds = bench.assign_folds(labels, groups, 2, seed=0)
    assert folds[0] == folds[8] and folds[4] == folds[9]
    by_group = {g: f for g, f in zip(groups, folds)}
    assert sorted(by_group[g] for g in "abcd") == [0, 0, 1, 1]  # 4 positive groups: 2 per fold
    assert sorted(by_group[g] for g in "efgh") == [0, 0, 1, 1]
    split = bench.fold_splits(labels, groups, 0, folds, 0.5, seed=0)
    assert all(s == "test" for s, f in zip(split, folds) if f == 0)
    # The other fold holds 2 positive and 2 negative groups: one group of each label (half) validates.
    val_groups = {(g, y) for g, y, s in zip(groups, labels, split) if s == "val"}
    assert sorted(y for _, y in val_groups) == [0, 1]
    assert {s for s, f in zip(split, folds) if f == 1} == {"train", "val"}


def test_fold_count_is_checked():
    bench = _module()
    with pytest.raises(ValueError, match="--folds must be between 2"):
        bench.assign_folds([1, 0], ["a", "b"], 3, seed=0)


def test_scores_by_hand():
    import pandas as pd

    bench = _module()
    frame = pd.DataFrame(
        {
            "label": [1, 1, 1, 0],
            "true_area": [10, 20, 30, 0],
            "dsc1": [0.0, 0.5, 1.0, 1.0],
            "dsc1_raw": [0.2, 0.6, 1.0, 0.0],
            "diagnosis": [0, 1, 1, 1],
        }
    )
    s = bench.score(frame)
    assert s["n_images"] == 4 and s["n_positive"] == 3
    assert s["dsc1_positive_gated"] == pytest.approx(0.5) and s["dsc1_positive_raw"] == pytest.approx(0.6)
    assert s["accuracy"] == pytest.approx(0.5) and s["sensitivity"] == pytest.approx(2 / 3) and s["specificity"] == 0
    assert (s["dsc1_small_gated"], s["dsc1_moderate_gated"], s["dsc1_large_gated"]) == (0.0, 0.5, 1.0)


@pytest.mark.slow
def test_end_to_end_on_tiny_phantoms(tmp_path):
    """2 folds of 16 phantom PNG pairs at 32 px, a tiny model, 1 epoch of 2 steps, from scratch and from a
    phantom pre-training the script runs itself (its encoder frozen)."""
    from ptx_keras.data.phantoms import write_phantom_dataset

    data = tmp_path / "data"
    write_phantom_dataset(str(data), 16, size=32, format="png", seed=3, progress=False, workers=1)
    sets = [
        "data.image_size=32",
        "data.shard_size=8",
        "data.workers=1",
        "data.phantoms.n=8",
        "data.phantoms.size=32",
        (
            "model.options={layers_per_block: 1, num_pools: 2, growth_rate: 2, first_conv_filters: 4, "
            "multiscale_filters: 2}"
        ),
        "train.epochs=1",
        "train.steps_per_epoch=2",
        "train.batch_size=4",
        "train.tensorboard=false",
        "train.jit_compile=off",
        "evaluation.search_thresholds=false",
    ]
    cmd = [
        sys.executable,
        SCRIPT,
        str(data),
        "--folds",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--config",
        os.path.join(ROOT, "configs", "quickstart.yaml"),
        "--freeze-encoder-epochs",
        "1",
    ]
    for s in sets:
        cmd += ["--set", s]
    res = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(tmp_path),
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    kinds = [line["measurement"] for line in lines]
    assert kinds.count("real_images_fold") == 4 and kinds.count("real_images_summary") == 2
    assert kinds.count("real_images_pretrain") == 1 and kinds.count("real_images_data") == 1
    summaries = {line["start"]: line for line in lines if line["measurement"] == "real_images_summary"}
    assert set(summaries) == {"scratch", "pretrained"}
    for line in summaries.values():
        assert line["n_images"] == 16 and "cpu_flags" in line["machine"]
        assert 0 <= line["accuracy"] <= 1
        assert line["dsc1_positive_gated"] is None or 0 <= line["dsc1_positive_gated"] <= 1
    assert summaries["pretrained"]["init_from"].endswith(os.path.join("runs", "pretrain"))
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["start"], r["fold"]) for r in rows] == [
        ("scratch", "0"),
        ("pretrained", "0"),
        ("scratch", "1"),
        ("pretrained", "1"),
        ("scratch", "all"),
        ("pretrained", "all"),
    ]
    assert sum(int(r["n_images"]) for r in rows if r["start"] == "scratch" and r["fold"] != "all") == 16
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| start | fold |" in table and "DSC1 pos. (raw)" in table
    meta = json.loads((tmp_path / "out" / "runs" / "pretrained-fold0" / "run.json").read_text())
    assert meta["init_from"]["counts"]["loaded"] > 0 and meta["init_from"]["freeze_encoder_epochs"] == 1
    assert "encoder (" in res.stderr and "frozen" in res.stderr  # the frozen phase is logged
    assert np.isfinite(float(rows[-1]["train_seconds"]))
