"""Experiment grids: schema validation, planning, dry run, tables (hand-computed), end-to-end run and resume."""

import csv
import dataclasses
import os
import textwrap

import numpy as np
import pandas as pd
import pytest

from ptx_keras import experiments as ex
from ptx_keras.cli.experiments import main as cli_main
from ptx_keras.config import save_config
from ptx_keras.errors import ConfigError, PtxError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
EXPERIMENTS = os.path.join(ROOT, "configs", "experiments")

# Two tiny runs (24 phantoms at 64 px, one epoch): the TINY settings of tests/test_training.py.
TINY_GRID = f"""
name: tiny
description: Tiny grid
base: {QUICKSTART}
reference: fcd
common:
  data.phantoms.n: 24
  data.phantoms.size: 64
  data.image_size: 64
  data.shard_size: 8
  data.workers: 1
  train: {{batch_size: 4, tensorboard: false, jit_compile: "off", epochs: 1, export: false}}
runs:
  - name: fcd
    label: FC-DenseNet tiny
    set:
      model.name: fc_densenet56
      model.options: {{growth_rate: 2, first_conv_filters: 8, num_pools: 3, layers_per_block: 2}}
  - name: unet
    label: U-Net tiny
    set: {{model.name: unet, model.options: {{base_filters: 4, depth: 3}}}}
"""


def _write(tmp_path, text, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def _grid(tmp_path, **replace):
    text = TINY_GRID
    for old, new in replace.items():
        text = text.replace(old, new)
    return _write(tmp_path, text)


# ----------------------------------------------------------------------------------------------------------------
# Schema
# ----------------------------------------------------------------------------------------------------------------
def test_load_experiment_resolves_base_labels_and_references(tmp_path):
    exp = ex.load_experiment(_grid(tmp_path))
    assert exp.name == "tiny" and exp.description == "Tiny grid"
    assert exp.base == QUICKSTART and exp.reference == "fcd"
    assert [r.name for r in exp.runs] == ["fcd", "unet"]
    assert [r.label for r in exp.runs] == ["FC-DenseNet tiny", "U-Net tiny"]
    assert all(r.reference == "fcd" for r in exp.runs)
    assert exp.figure_runs == ("fcd", "unet")
    # The nested `train:` mapping is flattened; the `model.options` mapping stays whole.
    assert exp.common["train.epochs"] == 1 and "train" not in exp.common
    assert exp.runs[1].overrides == {"model.name": "unet", "model.options": {"base_filters": 4, "depth": 3}}


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("reference: fcd", "refrence: fcd", "unknown key 'refrence'. Did you mean 'reference'?"),
        ("    label: U-Net tiny", "    lable: U-Net tiny", "runs[1]: unknown key 'lable'. Did you mean 'label'?"),
        ("reference: fcd", "reference: fdc", "reference 'fdc' is not among the runs. Did you mean 'fcd'?"),
        ("  - name: unet", "  - name: fcd", "duplicate run name(s) ['fcd']"),
        ("  - name: unet", "  - name: tables", "runs[1].name must be a plain directory name"),
        (
            "    set: {model.name: unet,",
            "    reference: nope\n    set: {model.name: unet,",
            "runs (unet).reference 'nope' is not among the runs",
        ),
        ("  data.workers: 1", "  data.workers: 1\n  name: x", "'name' is set by the experiment runner"),
        ("description: Tiny grid", "description: Tiny grid\nfigure_runs: [fcd, nope]", "Not runs: ['nope']"),
    ],
)
def test_schema_errors_name_the_key(tmp_path, old, new, message):
    path = _grid(tmp_path, **{old: new})
    with pytest.raises(ConfigError) as info:
        ex.load_experiment(path)
    assert message in str(info.value)
    assert path in str(info.value)


def test_missing_and_empty_runs_are_errors(tmp_path):
    path = _write(tmp_path, f"base: {QUICKSTART}\nreference: a\n")
    with pytest.raises(ConfigError, match="missing required key 'runs'"):
        ex.load_experiment(path)
    path = _write(tmp_path, f"base: {QUICKSTART}\nreference: a\nruns: []\n")
    with pytest.raises(ConfigError, match="runs must be a non-empty list"):
        ex.load_experiment(path)
    path = _write(tmp_path, "base: nowhere.yaml\nreference: a\nruns: [{name: a}]\n")
    with pytest.raises(ConfigError, match="base configuration not found"):
        ex.load_experiment(path)
    with pytest.raises(ConfigError, match="File not found"):
        ex.load_experiment(str(tmp_path / "absent.yaml"))


def test_flatten_overrides():
    flat = ex.flatten_overrides(
        {
            "train": {"epochs": 2, "seed": 3},
            "model.options": {"growth_rate": 4},
            "loss": {"options": {"clip": 5}},
            "data.path": None,
        },
        "where",
    )
    assert flat == {
        "train.epochs": 2,
        "train.seed": 3,
        "model.options": {"growth_rate": 4},
        "loss.options": {"clip": 5},
        "data.path": None,
    }
    with pytest.raises(ConfigError, match="where must be a mapping"):
        ex.flatten_overrides([1, 2], "where")
    with pytest.raises(ConfigError, match="dotted names"):
        ex.flatten_overrides({"a..b": 1}, "where")
    with pytest.raises(ConfigError, match="output_dir"):
        ex.flatten_overrides({"output_dir": "x"}, "where")


def test_paper_experiment_files_are_valid():
    expected = {
        "table2_3.yaml": ("ms_scse_fc_densenet103", 7),
        "table4.yaml": ("k12", 8),
        "table5.yaml": ("ms_scse_fc_densenet103_sw_cel", 18),
        "phantom_table2.yaml": ("ms_scse_fc_densenet103", 7),
    }
    for name, (reference, n_runs) in expected.items():
        exp = ex.load_experiment(os.path.join(EXPERIMENTS, name))
        assert exp.reference == reference and len(exp.runs) == n_runs, name
        planned = ex.plan_runs(exp, output_dir="/nonexistent/out")
        assert all(p.status == "new" for p in planned)
    table4 = ex.plan_runs(ex.load_experiment(os.path.join(EXPERIMENTS, "table4.yaml")), "/nonexistent/out")
    assert [p.config.model.options["growth_rate"] for p in table4] == [2, 4, 6, 8, 10, 12, 14, 16]
    table5 = ex.load_experiment(os.path.join(EXPERIMENTS, "table5.yaml"))
    assert table5.run("unet_ce").reference == "unet_sw_cel"


# ----------------------------------------------------------------------------------------------------------------
# Planning and dry run
# ----------------------------------------------------------------------------------------------------------------
def test_plan_orders_overrides_base_common_run_then_command_line(tmp_path):
    exp = ex.load_experiment(_grid(tmp_path))
    out = str(tmp_path / "out")
    planned = ex.plan_runs(exp, out, data=str(tmp_path / "data"), overrides=["train.epochs=3", "train.seed=7"])
    fcd, unet = (p.config for p in planned)
    assert fcd.name == "fcd" and fcd.output_dir == out and fcd.run_dir == os.path.join(out, "fcd")
    assert fcd.model.name == "fc_densenet56" and fcd.model.options["growth_rate"] == 2
    assert unet.model.name == "unet" and unet.model.options == {"base_filters": 4, "depth": 3}
    assert fcd.train.epochs == 3 and fcd.train.seed == 7  # command line over common
    assert fcd.train.batch_size == 4 and fcd.data.image_size == 64  # common over the base file
    assert fcd.train.learning_rate == 1.0e-3  # the base file (quickstart)
    assert fcd.data.path == str(tmp_path / "data")


def test_bad_run_override_names_the_run_and_suggests(tmp_path):
    path = _grid(tmp_path, **{"model.name: unet,": "model.name: unet, train.epohcs: 2,"})
    with pytest.raises(ConfigError) as info:
        ex.plan_runs(ex.load_experiment(path), str(tmp_path / "out"))
    assert "run 'unet'" in str(info.value) and "Did you mean 'epochs'" in str(info.value)


def test_run_status_and_changed_configuration_is_refused(tmp_path):
    exp = ex.load_experiment(_grid(tmp_path))
    out = str(tmp_path / "out")
    fcd = ex.plan_runs(exp, out)[0].config
    assert ex.run_status(fcd.run_dir) == "new"
    old = dataclasses.replace(fcd, train=dataclasses.replace(fcd.train, epochs=9))
    save_config(old, os.path.join(fcd.run_dir, "config.yaml"))
    assert ex.run_status(fcd.run_dir) == "partial"
    with pytest.raises(ConfigError) as info:
        ex.plan_runs(exp, out)
    assert "train.epochs: 9 there, 1 now" in str(info.value) and "another --output-dir" in str(info.value)
    save_config(fcd, os.path.join(fcd.run_dir, "config.yaml"))  # same configuration: accepted
    os.makedirs(os.path.join(fcd.run_dir, "eval", "test"))
    open(os.path.join(fcd.run_dir, "eval", "test", "per_image.csv"), "w").close()
    assert [p.status for p in ex.plan_runs(exp, out)] == ["finished", "new"]


def test_dry_run_lists_runs_and_differing_keys_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli_main(["run", _grid(tmp_path), "--output-dir", str(out), "--dry-run", "--set", "train.seed=5"])
    text = capsys.readouterr().out
    assert rc == 0
    assert '- fcd (FC-DenseNet tiny) [new]: model.name="fc_densenet56"' in text
    assert '- unet (U-Net tiny) [new]: model.name="unet", model.options={"base_filters": 4, "depth": 3}' in text
    assert "common: data.phantoms.n=24" in text and "reference: fcd" in text
    assert not out.exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    rc = cli_main(["run", str(tmp_path / "absent.yaml"), "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "absent.yaml" in err and "\n" not in err
    rc = cli_main(["run", _grid(tmp_path, **{"reference: fcd": "reference: xyz"}), "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "'xyz' is not among the runs" in err and "\n" not in err


# ----------------------------------------------------------------------------------------------------------------
# Tables (hand-computed)
# ----------------------------------------------------------------------------------------------------------------
def _scores(dsc1, label, diagnosis, hd=None):
    n = len(dsc1)
    dsc1 = np.asarray(dsc1, float)
    return pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(n)],
            "label": label,
            "diagnosis": diagnosis,
            "true_area": [10 * (i + 1) * lab for i, lab in enumerate(label)],
            "mpa": dsc1,
            "pa1": dsc1,
            "dsc": dsc1,
            "dsc1": dsc1,
            "hd": hd if hd is not None else np.where(np.asarray(label) == 1, 2.0, np.nan),
        }
    )


def test_segmentation_and_diagnosis_rows_hand_computed(tmp_path):
    exp = ex.load_experiment(_grid(tmp_path))
    label = [1, 1, 1, 1, 0, 0]
    scores = {
        "fcd": _scores([1.0, 0.9, 1.0, 0.9, 1.0, 1.0], label, [1, 1, 1, 1, 0, 0]),
        "unet": _scores([0.1, 0.0, 0.1, 0.0, 0.1, 0.0], label, [1, 0, 0, 0, 1, 0]),
    }
    seg = ex.segmentation_rows(exp, scores, {"fcd": {"trainable_params": 10, "gmacs": 0.5}})
    ref, run = seg.iloc[0], seg.iloc[1]
    assert ref["reference"] == "fcd" and np.isnan(ref["dsc1_t_pvalue"]) and not ref["dsc1_t_significant"]
    assert ref["dsc1_mean"] == pytest.approx(5.8 / 6)
    assert run["dsc1_mean"] == pytest.approx(0.05)
    assert run["dsc1_std"] == pytest.approx(np.sqrt(6 * 0.05**2 / 5))  # every value is 0.05 from the mean
    assert run["dsc1_t_significant"] and run["dsc1_t_pvalue"] < 1e-6
    # Six pairs all of one sign: the exact two-sided Wilcoxon p is 2 / 2**6 = 0.03125.
    assert run["dsc1_wilcoxon_pvalue"] == pytest.approx(0.03125) and run["dsc1_wilcoxon_significant"]
    assert run["hd_n_missing"] == 2 and run["hd_mean"] == 2.0 and not run["hd_t_significant"]
    assert ref["trainable_params"] == 10 and np.isnan(run["trainable_params"])
    shown = ex.segmentation_display(seg)
    assert shown.loc[0, "Method"] == "FC-DenseNet tiny (reference)"
    assert shown.loc[1, "DSC1"] == "0.05 (0.05)*†" and shown.loc[0, "GMACs"] == "0.5"
    assert "Compared with" not in shown.columns
    assert ex.segmentation_display(seg, latex=True).loc[1, "DSC1"] == r"0.05 (0.05)$^{*\dagger}$"

    dx = ex.diagnosis_rows(exp, scores)
    # unet: TP 1, FN 3, FP 1, TN 1.
    row = dx.set_index("run").loc["unet"]
    assert (row["tp"], row["fn"], row["fp"], row["tn"]) == (1, 3, 1, 1)
    assert row["sensitivity"] == pytest.approx(0.25) and row["ppv"] == pytest.approx(0.5)
    assert ex.diagnosis_display(dx).loc[1, "Accuracy (%)"] == "33.33"


def test_pick_cases_small_moderate_large_and_negative():
    df = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(9)],
            "label": [1, 1, 1, 1, 1, 1, 1, 0, 0],
            "true_area": [70, 10, 60, 20, 50, 30, 40, 0, 0],
        }
    )
    # Ranked areas 10..70 (7 positives): 15th percentile -> rank round(0.9) = 1 (20), 50th -> 3 (40), 85th -> 5 (60).
    assert ex.pick_cases(df) == [
        ("small PTX (20 px)", "s3"),
        ("moderate PTX (40 px)", "s6"),
        ("large PTX (60 px)", "s2"),
        ("no PTX", "s7"),
    ]
    assert ex.pick_cases(df[df["label"] == 0]) == [("no PTX", "s7")]


def test_dsc_histogram_writes_png(tmp_path):
    path = ex.plot_dsc_histogram({"a": [0.05, 0.95, 0.97, np.nan], "b": [0.5]}, str(tmp_path / "h.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_write_tables_without_finished_runs_is_an_error(tmp_path):
    exp = ex.load_experiment(_grid(tmp_path))
    with pytest.raises(PtxError, match="No run of the experiment has finished"):
        ex.write_tables(exp, ex.plan_runs(exp, str(tmp_path / "out")), str(tmp_path / "t"))


def test_write_tables_of_a_fabricated_finished_run_without_figure_runs(tmp_path):
    from ptx_keras.models import build_model

    path = _grid(tmp_path, **{"description: Tiny grid": "description: Tiny grid\nfigure_runs: [unet]"})
    exp = ex.load_experiment(path)
    planned = ex.plan_runs(exp, str(tmp_path / "out"))
    fcd = planned[0].config
    save_config(fcd, os.path.join(fcd.run_dir, "config.yaml"))
    build_model("fc_densenet56", input_shape=(64, 64, 1), **fcd.model.options).save(
        os.path.join(fcd.run_dir, "best.keras")
    )
    os.makedirs(os.path.join(fcd.run_dir, "eval", "test"))
    _scores([1.0, 0.5], [1, 0], [1, 1]).to_csv(os.path.join(fcd.run_dir, "eval", "test", "per_image.csv"), index=False)
    paths = ex.write_tables(exp, ex.plan_runs(exp, str(tmp_path / "out")), str(tmp_path / "t"))
    assert "histogram" not in paths and "cases" not in paths  # the only figure run (unet) has not finished
    seg = pd.read_csv(paths["segmentation_csv"])
    assert list(seg["run"]) == ["fcd"] and seg.loc[0, "dsc1_mean"] == 0.75
    assert seg.loc[0, "trainable_params"] == sum(
        int(np.prod(w.shape))
        for w in build_model("fc_densenet56", input_shape=(64, 64, 1), **fcd.model.options).trainable_weights
    )
    assert "| FC-DenseNet tiny (reference) | 0.75 (0.35) |" in open(paths["segmentation_md"]).read()


# ----------------------------------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_run_grid_writes_tables_and_resumes_without_retraining(tmp_path, monkeypatch, capsys):
    grid, out = _grid(tmp_path), tmp_path / "out"
    rc = cli_main(["run", grid, "--output-dir", str(out), "--verbose", "0"])
    assert rc == 0, capsys.readouterr().err
    tables = out / "tables"
    with open(tables / "segmentation.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["fcd", "unet"] and [r["reference"] for r in rows] == ["fcd", "fcd"]
    assert int(rows[0]["trainable_params"]) > 0 and float(rows[1]["gmacs"]) > 0
    assert int(rows[0]["n_images"]) == 4  # 20 % of 24 phantoms
    for m in ex.TABLE_METRICS:
        assert rows[0][f"{m}_t_pvalue"] == "" and rows[1][f"{m}_t_significant"] in ("True", "False")
    md = (tables / "segmentation.md").read_text()
    assert "* marks a significant difference from the reference (FC-DenseNet tiny)" in md
    assert "Student's t-test" in md and "| FC-DenseNet tiny (reference) |" in md
    assert r"\begin{tabular}" in (tables / "segmentation.tex").read_text()
    assert r"\begin{tabular}" in (tables / "diagnosis.tex").read_text()
    assert len(pd.read_csv(tables / "diagnosis.csv")) == 2
    assert "| Model | Accuracy (%) |" in (tables / "diagnosis.md").read_text()
    for png in ("fig5_cases.png", "fig6_dsc_histogram.png"):
        assert (tables / png).stat().st_size > 1000, png

    best = out / "fcd" / "best.keras"
    mtime = best.stat().st_mtime_ns
    (tables / "segmentation.csv").unlink()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("ptx_keras.training.train", no_training)
    result = ex.run_experiment(grid, output_dir=str(out), verbose=0, progress=False)
    assert result.skipped == ["fcd", "unet"] and result.trained == []
    assert best.stat().st_mtime_ns == mtime
    assert (tables / "segmentation.csv").is_file()
