"""Evaluation: scoring hand-made predictions, summaries, figures, thresholds, run comparison and the CLI.

The fast tests use a hand-made set of four 16 x 16 images whose scores are computed by hand below; the slow
test evaluates a tiny saved model on prepared phantoms end to end through the CLI.
"""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ptx_keras import evaluation as ev
from ptx_keras.cli.evaluate import main as evaluate_main
from ptx_keras.diagnosis import Thresholds
from ptx_keras.errors import DataError, ModelError, PtxError
from ptx_keras.runs import RunDir

from tiny import make_tiny_run

# min_area 2 at 16 x 16 = the rule "more than 2 predicted pixels" at the images' own size.
THRESHOLDS = Thresholds(min_area=2.0, mask_threshold=0.5, reference_size=16)
# What a summary records about them (`SavedThresholds.describe()`).
THRESHOLD_INFO = {**THRESHOLDS.to_dict(), "source": "configuration", "file": "config.yaml", "stale": False}


def _square(r0, r1, c0, c1, size=16):
    m = np.zeros((size, size), bool)
    m[r0:r1, c0:c1] = True
    return m


def handmade_predictions():
    """Four images with known scores.

    a: positive, prediction = truth (4x4 square)           -> DSC1 1, HD 0, diagnosed positive (TP)
    b: positive, prediction shifted 2 columns (overlap 8)  -> DSC1 0.5, PA1 0.5, HD 2, positive (TP)
    c: negative, nothing predicted                          -> DSC1 1 (empty = 1), HD undefined, negative (TN)
    d: negative, 3 predicted pixels (> 2)                   -> DSC1 0, PA1 0, HD undefined, positive (FP)
    """
    true = np.stack([_square(2, 6, 2, 6), _square(2, 6, 2, 6), _square(0, 0, 0, 0), _square(0, 0, 0, 0)])
    pred = np.stack([_square(2, 6, 2, 6), _square(2, 6, 4, 8), _square(0, 0, 0, 0), _square(10, 11, 10, 13)])
    low = np.array([0.1, 0.1, 0.2, 0.1])[:, None, None]
    high = np.array([0.9, 0.9, 0.9, 0.8])[:, None, None]
    prob = np.where(pred, high, low).astype(np.float16)
    image = np.linspace(0, 1, 4 * 16 * 16, dtype=np.float32).reshape(4, 16, 16)
    return {"sample_id": np.array(["a", "b", "c", "d"]), "image": image, "true": true, "prob": prob}


@pytest.fixture
def scored():
    return ev.score_predictions(handmade_predictions(), THRESHOLDS)


def test_score_predictions_matches_hand_computed_values(scored):
    df = scored.set_index("sample_id")
    assert list(df.index) == ["a", "b", "c", "d"]
    assert df["label"].tolist() == [1, 1, 0, 0]
    assert df["true_area"].tolist() == [16, 16, 0, 0]
    assert df["pred_area"].tolist() == [16, 16, 0, 3]
    np.testing.assert_allclose(df["dsc1"], [1.0, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(df["pa1"], [1.0, 0.5, 1.0, 0.0])
    # b: background 240 true / 240 predicted pixels, 232 shared; d: 253 of 256 background pixels kept.
    np.testing.assert_allclose(df["pa0"], [1.0, 232 / 240, 1.0, 253 / 256])
    np.testing.assert_allclose(df["dsc0"], [1.0, 464 / 480, 1.0, 506 / 509])
    np.testing.assert_allclose(df["mpa"], [1.0, (232 / 240 + 0.5) / 2, 1.0, 253 / 512])
    np.testing.assert_allclose(df["dsc"], [1.0, (464 / 480 + 0.5) / 2, 1.0, 253 / 509])
    assert df.loc["a", "hd"] == 0.0 and df.loc["b", "hd"] == 2.0
    assert np.isnan(df.loc["c", "hd"]) and np.isnan(df.loc["d", "hd95"])
    assert df["diagnosis"].tolist() == [1, 1, 0, 1]
    # score = area + max_prob / 2 (reference size = image size): a and b tie, d above c.
    np.testing.assert_allclose(df["score"], [16.45, 16.45, 0.1, 3.4], rtol=1e-3)
    assert df["size_class"].tolist() == ["moderate", "moderate", "", ""]  # fewer than 3 positives


def test_score_predictions_streams_batches_and_adds_millimetres():
    pred = handmade_predictions()
    batches = [{k: v[:3] for k, v in pred.items()}, {k: v[3:] for k, v in pred.items()}]
    spacing = {"a": (0.5, 0.5), "b": (0.5, 0.5), "c": None}  # d unknown
    df = ev.score_predictions(iter(batches), THRESHOLDS, spacings=spacing)
    whole = ev.score_predictions(pred, THRESHOLDS)
    pd.testing.assert_frame_equal(df.drop(columns=["hd_mm", "hd95_mm"]), whole)
    assert df["hd_mm"].iloc[1] == 1.0 and df["hd_mm"].iloc[0] == 0.0
    assert df["hd_mm"].isna().tolist() == [False, False, True, True]


def test_score_predictions_rejects_bad_input():
    pred = handmade_predictions()
    with pytest.raises(ValueError, match="nothing to score"):
        ev.score_predictions(iter([]), THRESHOLDS)
    with pytest.raises(ValueError, match="prob and true"):
        ev.score_predictions({**pred, "prob": pred["prob"][:, :8]}, THRESHOLDS)
    with pytest.raises(ValueError, match="spacings"):
        ev.score_predictions(pred, THRESHOLDS, spacings=[(1.0, 1.0)])


def test_summarize_all_and_positive_averages_and_diagnosis(scored):
    s = ev.summarize(scored, THRESHOLD_INFO, "test")
    assert (s["n_images"], s["n_positive"]) == (4, 2)
    seg = s["segmentation"]
    assert seg["all"]["dsc1"]["mean"] == pytest.approx(0.625)
    assert seg["all"]["dsc1"]["std"] == pytest.approx(np.std([1, 0.5, 1, 0], ddof=1))
    assert seg["positive"]["dsc1"]["mean"] == pytest.approx(0.75)
    assert s["siim_acr_dice"] == pytest.approx(0.625)
    assert seg["all"]["hd"] == {"mean": 1.0, "std": pytest.approx(np.sqrt(2)), "n_valid": 2, "n_missing": 2}
    assert seg["positive"]["hd"]["n_missing"] == 0
    dx = s["diagnosis"]
    assert (dx["tp"], dx["fp"], dx["tn"], dx["fn"]) == (2, 1, 1, 0)
    assert dx["accuracy"] == 0.75 and dx["sensitivity"] == 1.0 and dx["specificity"] == 0.5
    assert dx["ppv"] == pytest.approx(2 / 3) and dx["npv"] == 1.0 and dx["f1"] == pytest.approx(0.8)
    assert dx["roc_auc"] == 1.0 and dx["undefined"] == []
    assert s["thresholds"]["source"] == "configuration"
    assert s["size_classes"]["bounds_pixels"] is None
    json.dumps(s, allow_nan=False)  # strict JSON: undefined values are null, never NaN


def test_summarize_marks_undefined_scores_as_null():
    pred = handmade_predictions()
    only_positives = {k: v[:2] for k, v in pred.items()}
    s = ev.summarize(ev.score_predictions(only_positives, THRESHOLDS), THRESHOLD_INFO, "val")
    assert s["diagnosis"]["specificity"] is None and "specificity" in s["diagnosis"]["undefined"]
    assert s["diagnosis"]["roc_auc"] is None
    json.dumps(s, allow_nan=False)


def test_summary_markdown_tables(scored):
    md = ev.summary_markdown(ev.summarize(scored, THRESHOLD_INFO, "test"), "handmade")
    assert md.startswith("# Evaluation of handmade on the test split")
    assert "| DSC1 (framework output) | 0.62 (0.48) | 0.75 (0.35) | 0.84 (0.27) |" in md
    assert "| DSC1 (raw mask) | 0.62 (0.48) | 0.75 (0.35) |  |" in md
    assert "**Masks scored:** the segmentation metrics score the framework output: mask emptied" in md
    assert "| HD (px) | 1.00 (1.41) [2 undefined] | 1.00 (1.41) |  |" in md
    assert "| F1 | 80.00 % | 92.97 % |" in md
    assert "| ROC AUC | 1.0000 |  |" in md
    assert "SIIM-ACR mean Dice (DSC1 with empty = 1, all images, gated masks): 0.6250" in md
    assert "Counts: TP 2, FP 1, TN 1, FN 0." in md
    assert "the run configuration's `diagnosis` section" in md


def test_size_classes_are_tertiles_of_the_positive_areas():
    classes, bounds = ev.size_classes([0, 10, 20, 30, 40, 50, 60, 0])
    assert bounds == pytest.approx((26.666666, 43.333333))
    assert classes.tolist() == ["", "small", "small", "moderate", "moderate", "large", "large", ""]


def test_pick_cases_best_median_worst_per_size():
    df = pd.DataFrame(
        {
            "sample_id": list("abcdefg"),
            "dsc1": [0.9, 0.1, 0.5, 0.7, 0.3, 0.2, 1.0],
            "size_class": ["small", "small", "small", "large", "large", "", "large"],
        }
    )
    rows = ev.pick_cases(df)
    assert rows == [
        [("small", "best", 0), ("small", "median", 2), ("small", "worst", 1)],
        [("large", "best", 6), ("large", "median", 3), ("large", "worst", 4)],
    ]
    two = ev.pick_cases(df.iloc[[0, 1]])
    assert two == [[("small", "best", 0), ("small", "median", 1)]]  # each image once


def _load_png(path):
    assert os.path.getsize(path) > 0
    with Image.open(path) as im:
        im.load()
        assert im.size[0] > 100 and im.size[1] > 100
        return im.size


def test_write_figures_from_handmade_predictions(tmp_path, scored):
    history = tmp_path / "history.csv"
    history.write_text(
        "epoch,dsc1,loss,mpa,val_dsc1,val_loss,val_mpa\n0,0.1,2.0,0.5,0.2,1.9,0.55\n"
        "1,0.3,1.5,0.6,0.25,1.6,0.6\n2,0.4,1.2,0.7,0.22,1.5,0.65\n"
    )
    pred = handmade_predictions()
    paths = ev.write_figures(scored, str(tmp_path), THRESHOLDS, ev.collect_cases(pred), str(history), "test")
    assert set(paths) == {"cases", "dsc_histogram", "roc", "reliability", "training_curves"}
    for path in paths.values():
        _load_png(path)
    import matplotlib.image as mpimg

    assert mpimg.imread(paths["roc"]).ndim == 3


def test_figure_functions_reject_empty_input(tmp_path):
    from ptx_keras.figures import evaluation as fig

    with pytest.raises(ValueError, match="empty"):
        fig.plot_cases([], str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="empty"):
        fig.plot_score_histograms({}, str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="bins"):
        fig.plot_score_histograms({"a": [0.5]}, str(tmp_path / "x.png"), bins=0)
    with pytest.raises(ValueError, match="epoch"):
        fig.plot_history(pd.DataFrame({"loss": [1.0]}), str(tmp_path / "x.png"))


# ---------------------------------------------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------------------------------------------
def test_a_summary_of_stale_thresholds_warns():
    """`RunDir.read_thresholds` marks a search made for an earlier model stale (tests/test_runs.py); the summary
    says so."""
    from ptx_keras.runs import SavedThresholds

    saved = SavedThresholds(THRESHOLDS, "validation search", "thresholds.json", stale=True)
    md = ev.summary_markdown(
        ev.summarize(ev.score_predictions(handmade_predictions(), saved.thresholds), saved.describe(), "test")
    )
    assert "WARNING: chosen for an earlier best.keras" in md


# ---------------------------------------------------------------------------------------------------------------
# Comparison and errors without a model
# ---------------------------------------------------------------------------------------------------------------
def _fake_evaluated_run(root, name, dsc1, ids=None):
    """A run directory holding only eval/test/per_image.csv (what --compare reads)."""
    ids = ids or [f"s{i}" for i in range(len(dsc1))]
    dsc1 = np.asarray(dsc1, float)
    df = pd.DataFrame(
        {
            "sample_id": ids,
            "label": 1,
            "mpa": (1 + dsc1) / 2,
            "pa1": dsc1,
            "dsc": (1 + dsc1) / 2,
            "dsc1": dsc1,
            "hd": np.where(dsc1 > 0, 10 * (1 - dsc1), np.nan),
            "hd95": np.where(dsc1 > 0, 5 * (1 - dsc1), np.nan),
        }
    )
    out = root / name / "eval" / "test"
    out.mkdir(parents=True)
    df.to_csv(out / "per_image.csv", index=False)
    return str(root / name)


def test_compare_runs_writes_csv_markdown_and_histogram(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.uniform(0.5, 1.0, 30)
    a = _fake_evaluated_run(tmp_path, "paper_model", base)
    b = _fake_evaluated_run(tmp_path, "baseline", np.clip(base - 0.2, 0, 1))
    out = ev.compare_runs([a, b], output=str(tmp_path / "cmp"))
    table = pd.read_csv(out.csv)
    assert {"t_pvalue", "t_significant", "wilcoxon_pvalue", "wilcoxon_significant"} <= set(table.columns)
    row = table[(table["run"] == "baseline") & (table["metric"] == "dsc1")].iloc[0]
    assert row["t_significant"] and row["wilcoxon_significant"]
    assert row["mean"] == pytest.approx(np.clip(base - 0.2, 0, 1).mean())
    md = open(out.markdown).read()
    assert "Student's t-test" in md and "Wilcoxon" in md and "*" in md
    assert "reference: paper_model" in md and "## Diagnosis" in md
    assert "Segmentation metrics score the framework output" in md
    assert os.path.isfile(out.diagnosis_csv)
    _load_png(out.histogram)


def test_compare_same_run_under_two_names(tmp_path):
    a = _fake_evaluated_run(tmp_path, "run", [0.2, 0.5, 0.9])
    out = ev.compare_runs([a, a], output=str(tmp_path / "cmp"))
    assert list(dict.fromkeys(out.table["run"])) == ["run", "run (2)"]
    rc = evaluate_main(["--compare", a, a, "--names", "first", "second", "--output", str(tmp_path / "cmp2")])
    assert rc == 0
    table = pd.read_csv(tmp_path / "cmp2" / "comparison.csv")
    second = table[table["run"] == "second"]
    assert (second["t_pvalue"] == 1.0).all() and (second["wilcoxon_pvalue"] == 1.0).all()


def _one_line_error(capsys, rc, match):
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err, err
    assert match in err, err


def test_cli_errors_are_one_line(tmp_path, capsys):
    a = _fake_evaluated_run(tmp_path, "a", [0.2, 0.5, 0.9])
    b = _fake_evaluated_run(tmp_path, "b", [0.2, 0.5, 0.9], ids=["s0", "s1", "other"])
    (tmp_path / "not_evaluated").mkdir()
    (tmp_path / "no_model").mkdir()
    _one_line_error(capsys, evaluate_main(["--compare", a, b]), "different images")
    _one_line_error(capsys, evaluate_main(["--compare", a, str(tmp_path / "not_evaluated")]), "not been evaluated")
    _one_line_error(capsys, evaluate_main(["--compare", a]), "at least two")
    _one_line_error(capsys, evaluate_main(["--compare", a, a, "--names", "x"]), "one name per run")
    _one_line_error(capsys, evaluate_main([str(tmp_path / "no_model")]), "not a run directory")
    _one_line_error(capsys, evaluate_main([str(tmp_path / "missing")]), "not found")
    _one_line_error(capsys, evaluate_main([a, "--split", "testing"]), "Unknown split 'testing'")
    _one_line_error(capsys, evaluate_main(["--compare", a, a, "--split", "tst"]), "Unknown split 'tst'")


def test_api_errors_name_the_problem(tmp_path):
    with pytest.raises(ModelError, match="not a run directory"):
        ev.evaluate_run(str(tmp_path))
    from ptx_keras.config import Config

    RunDir(str(tmp_path)).save_config(Config())  # a run with only its configuration
    with pytest.raises(ModelError, match="no trained model"):
        ev.evaluate_run(str(tmp_path))
    with pytest.raises(DataError, match="Unknown split"):
        ev.evaluate_run(str(tmp_path), split="validation")
    with pytest.raises(PtxError, match="distinct"):
        ev.compare_runs([str(tmp_path), str(tmp_path)], names=["x", "x"])


# ---------------------------------------------------------------------------------------------------------------
# End to end: a tiny saved model on prepared phantoms
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory as training leaves it, with an untrained model (`make_tiny_run`).

    Training is not needed to test evaluation's outputs; an untrained model saves the minute `fit` takes.
    """
    root = tmp_path_factory.mktemp("eval")
    run, cfg, prepared = make_tiny_run(root)
    return root, run, cfg, prepared


@pytest.mark.slow
def test_evaluate_end_to_end_with_threshold_search_compare_and_errors(tiny_run, capsys):
    from ptx_keras.data.prepare import prepare_dataset
    from ptx_keras.data.prepared import load_prepared_info

    root, run, cfg, prepared = tiny_run
    assert evaluate_main([str(run), "--search-thresholds", "--no-progress"]) == 0
    out = run / "eval" / "test"
    df = pd.read_csv(out / "per_image.csv")
    n_test = load_prepared_info(prepared)["counts"]["test"]["total"]
    assert len(df) == n_test
    assert {
        "sample_id",
        "label",
        "true_area",
        "pred_area",
        "mpa",
        "pa0",
        "pa1",
        "dsc",
        "dsc0",
        "dsc1",
        "hd",
        "hd95",
        "dsc1_raw",
        "diagnosis",
        "score",
        "max_prob",
        "size_class",
    } <= set(df.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert {
        "split",
        "n_images",
        "n_positive",
        "segmentation",
        "siim_acr_dice",
        "diagnosis",
        "thresholds",
        "size_classes",
        "paper",
        "model_sha256",
        "figures",
        "masks",
    } <= set(summary)
    assert summary["masks"]["scored"] == "gated" and "dsc1_raw" in summary["segmentation"]["positive"]
    assert summary["n_images"] == n_test and set(summary["segmentation"]) == {"all", "positive"}
    thresholds = json.loads((run / "eval" / "val" / "thresholds.json").read_text())
    assert thresholds["source"] == "validation search" and thresholds["split"] == "val"
    assert summary["thresholds"]["source"] == "validation search"
    assert summary["thresholds"]["mask_threshold"] == thresholds["mask_threshold"]
    assert (run / "eval" / "val" / "threshold_search.csv").is_file()
    assert "chosen on the validation split" in (out / "summary.md").read_text()
    assert set(summary["figures"]) == {"cases", "dsc_histogram", "roc", "reliability", "training_curves"}
    for name in summary["figures"].values():
        _load_png(out / name)

    # A later evaluation reuses the saved search; the API returns what training expects.
    result = ev.evaluate_run(str(run), progress=False)
    assert os.path.isfile(result.summary_md) and os.path.isdir(result.out_dir) and result.data is None
    assert result.thresholds.source == "validation search" and not result.thresholds.stale

    # The same run under two names: the comparison has both tests.
    assert evaluate_main(["--compare", str(run), str(run), "--names", "A", "B"]) == 0
    cmp_dir = out / "comparison"
    table = pd.read_csv(cmp_dir / "comparison.csv")
    assert {"t_pvalue", "wilcoxon_pvalue"} <= set(table.columns) and set(table["run"]) == {"A", "B"}
    assert "Wilcoxon" in (cmp_dir / "comparison.md").read_text()
    capsys.readouterr()

    # Data prepared at another size than the model expects.
    other = root / "prepared32"
    prepare_dataset(
        os.path.join(os.path.dirname(prepared), "phantoms-n24-64px-seed0"),
        str(other),
        image_size=32,
        shard_size=8,
        workers=1,
    )
    capsys.readouterr()
    _one_line_error(capsys, evaluate_main([str(run), "--data", str(other)]), "prepared at 32x32")


@pytest.mark.slow
def test_evaluate_a_copied_run_then_compare_detects_other_images(tiny_run, tmp_path, capsys):
    _, run, _, _ = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval"))
    assert evaluate_main([str(copy), "--split", "val", "--no-progress"]) == 0
    summary = json.loads((copy / "eval" / "val" / "summary.json").read_text())
    assert summary["thresholds"]["source"] == "configuration"
    if not (run / "eval" / "test").is_dir():
        assert evaluate_main([str(run), "--no-progress"]) == 0
    capsys.readouterr()
    # The val evaluation of one run against the test evaluation of another: different images.
    os.makedirs(copy / "eval" / "test")
    shutil.copy(copy / "eval" / "val" / "per_image.csv", copy / "eval" / "test" / "per_image.csv")
    _one_line_error(capsys, evaluate_main(["--compare", str(run), str(copy)]), "different images")


def _tree_bytes(root):
    """`{relative path: bytes}` of every file under `root`."""
    out = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.mark.slow
def test_evaluating_other_data_never_touches_the_run(tiny_run, tmp_path):
    """`evaluate.py RUN --data OTHER` (with or without --search-thresholds) writes only under
    eval/external/<data>/, reuses the run's thresholds by default, and leaves every other file of the run as it
    was (issue 13: it used to rewrite eval/test/ and the deployed eval/val/thresholds.json)."""
    from ptx_keras.data.phantoms import write_phantom_dataset
    from ptx_keras.runs import external_name

    _, run, _, _ = tiny_run
    if not (run / "eval" / "val" / "thresholds.json").is_file():
        assert evaluate_main([str(run), "--search-thresholds", "--no-progress"]) == 0
    own = json.loads((run / "eval" / "val" / "thresholds.json").read_text())
    before = _tree_bytes(run)
    other = tmp_path / "other_phantoms"
    write_phantom_dataset(str(other), 20, size=64, format="png", seed=7, progress=False)
    assert evaluate_main([str(run), "--data", str(other), "--no-progress"]) == 0
    external = run / "eval" / "external" / external_name(str(other))
    summary = json.loads((external / "test" / "summary.json").read_text())
    assert summary["thresholds"]["mask_threshold"] == own["mask_threshold"]  # the run's own thresholds
    assert summary["thresholds"]["file"] == str(run / "eval" / "val" / "thresholds.json")
    assert summary["data_name"] == str(other) and str(other) in (external / "test" / "summary.md").read_text()
    assert evaluate_main([str(run), "--data", str(other), "--search-thresholds", "--no-progress"]) == 0
    searched = json.loads((external / "val" / "thresholds.json").read_text())
    assert searched["data"] == str(other) and searched["split"] == "val"
    summary = json.loads((external / "test" / "summary.json").read_text())
    assert summary["thresholds"]["file"] == str(external / "val" / "thresholds.json")
    after = _tree_bytes(run)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    prefix = os.path.join("eval", "external") + os.sep
    assert changed and all(k.startswith(prefix) for k in changed), changed
