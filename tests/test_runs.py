"""`ptx_keras.runs`: the run directory's paths and states, run.json, the saved thresholds, `latest_run` and
`external_name` (expected paths and hashes computed by hand)."""

import hashlib
import json
import os

import pytest

from ptx_keras.config import Config
from ptx_keras.diagnosis import Thresholds
from ptx_keras.errors import ConfigError, ModelError
from ptx_keras.runs import RunDir, SavedThresholds, external_name, latest_run


def _config_run(root):
    """A run directory with only its config.yaml (what reading thresholds needs)."""
    run = RunDir(str(root))
    run.save_config(Config())
    return run


def _write_thresholds(run, **values):
    path = run.thresholds_file()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(values, f)
    return path


def test_paths_of_a_run(tmp_path):
    root = str(tmp_path / "runs" / "r1")
    run = RunDir(root)
    assert run.name == "r1" and os.fspath(run) == str(run) == root and RunDir.of(run) is run
    assert RunDir.of(root) == run
    assert run.config_file == os.path.join(root, "config.yaml") and run.best_model == os.path.join(root, "best.keras")
    assert run.metadata_file == os.path.join(root, "run.json")
    assert run.backup_dir == os.path.join(root, "checkpoints", "backup")
    assert run.eval_dir("test") == os.path.join(root, "eval", "test")
    assert run.per_image_file("val") == os.path.join(root, "eval", "val", "per_image.csv")
    assert run.summary_file("test", markdown=True) == os.path.join(root, "eval", "test", "summary.md")
    assert run.thresholds_file() == os.path.join(root, "eval", "val", "thresholds.json")  # always the val split
    other = str(tmp_path / "other")
    assert run.eval_dir("test", data=other) == os.path.join(root, "eval", "external", external_name(other), "test")
    assert run.default_cache_dir == str(tmp_path / "runs" / "data_cache")  # beside the run


@pytest.mark.parametrize("path", ["", None, 3])
def test_a_run_needs_a_path(path):
    with pytest.raises(ValueError, match="path must be a non-empty path"):
        RunDir(path)


def test_an_unknown_split_is_refused(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        RunDir(str(tmp_path)).eval_dir("validation")


def test_external_name_is_the_folder_and_8_hex_of_the_absolute_path(tmp_path):
    path = str(tmp_path / "siim")
    assert external_name(path) == "siim-" + hashlib.sha1(path.encode()).hexdigest()[:8]
    assert external_name(path + os.sep) == external_name(path)  # the absolute path drops the trailing separator
    assert external_name(os.sep).startswith("data-")  # the root folder has no name


def test_status_follows_the_files(tmp_path):
    run = RunDir(str(tmp_path / "r"))
    assert run.status() == "new" and not run.exists()
    with pytest.raises(ModelError, match="Run directory not found"):
        run.require_model()
    run.save_config(Config())
    assert run.status() == "started" and run.is_run()
    with pytest.raises(ModelError, match="no trained model"):
        run.require_model()
    open(run.best_model, "wb").close()
    assert run.status() == "trained" and run.require_model() == run.best_model
    os.makedirs(run.eval_dir("test"))
    open(run.per_image_file("test"), "w").close()
    assert run.status() == "evaluated"


def test_a_folder_without_config_is_not_a_run(tmp_path):
    with pytest.raises(ConfigError, match="not a run directory"):
        RunDir(str(tmp_path)).load_config()
    with pytest.raises(ModelError, match="not a run directory"):
        RunDir(str(tmp_path)).require_model()


def test_update_metadata_merges_and_prepared_dir_reads_it(tmp_path):
    run = RunDir(str(tmp_path / "r"))
    assert run.read_metadata() == {} and run.prepared_dir() is None
    first = run.update_metadata(status="started", prepared_dir="/data/p")
    meta = run.update_metadata(status="trained")
    assert meta["status"] == "trained" and meta["prepared_dir"] == "/data/p"
    assert meta["created"] == first["created"] and meta["package_version"]
    assert run.read_metadata() == meta and run.prepared_dir() == "/data/p"


def test_prepared_dir_of_a_run_older_than_run_json(tmp_path):
    run = RunDir(str(tmp_path))
    with open(run.config_file, "w") as f:
        f.write("data:\n  prepared_dir: /old/prepared\n")
    assert run.prepared_dir() == "/old/prepared"


def test_latest_run_is_the_newest_best_model(tmp_path):
    assert latest_run(str(tmp_path / "none")) is None
    runs = tmp_path / "runs"
    for name, mtime in (("a", 100), ("b", 300), ("c", 200)):
        run = RunDir(str(runs / name))
        os.makedirs(run.path)
        open(run.best_model, "wb").close()
        os.utime(run.best_model, (mtime, mtime))
    os.makedirs(runs / "no_model")
    assert latest_run(str(runs)) == RunDir(str(runs / "b")).path


def test_read_thresholds_prefers_the_saved_search_and_flags_a_stale_one(tmp_path, caplog):
    run = _config_run(tmp_path)
    saved = run.read_thresholds()
    assert saved.thresholds == Thresholds() and saved.source == "configuration"
    assert saved.file == run.config_file and not saved.stale
    path = _write_thresholds(
        run,
        min_area=20,
        mask_threshold=0.6,
        reference_size=256,
        source="validation search",
        objective="f1",
        value=0.9,
        model_sha256="abc",
    )
    saved = run.read_thresholds(model_sha256="abc")
    assert saved.thresholds == Thresholds(0.6, 20, 256)
    assert (saved.source, saved.file, saved.stale) == ("validation search", str(path), False)
    assert saved.search["objective"] == "f1" and saved.search["value"] == 0.9
    with caplog.at_level("WARNING", logger="ptx_keras"):
        saved = run.read_thresholds(model_sha256="def")
    assert saved.stale is True
    assert "earlier best.keras" in caplog.text


@pytest.mark.parametrize(
    "values, match",
    [
        ({"min_area": 20, "reference_size": 256}, "missing key"),
        ({"min_area": 20, "mask_threshold": 1.5, "reference_size": 256}, "mask_threshold"),
        ({"min_area": "x", "mask_threshold": 0.5, "reference_size": 256}, "min_area"),
    ],
)
def test_read_thresholds_rejects_a_bad_file(tmp_path, values, match):
    run = _config_run(tmp_path)
    _write_thresholds(run, **values)
    with pytest.raises(ConfigError, match=f"thresholds.json.*{match}"):
        run.read_thresholds()


def test_write_thresholds_reads_back_and_describes_itself(tmp_path):
    import pandas as pd

    run = _config_run(tmp_path)
    grid = pd.DataFrame({"min_area": [10, 20], "f1": [0.5, 0.7]})
    written = run.write_thresholds(Thresholds(0.6, 20, 256), {"objective": "f1", "value": 0.7}, grid=grid)
    assert written == run.read_thresholds()
    assert pd.read_csv(run.threshold_grid_file()).equals(grid)
    assert written.describe() == {
        "objective": "f1",
        "value": 0.7,
        **Thresholds(0.6, 20, 256).to_dict(),
        "source": "validation search",
        "file": run.thresholds_file(),
        "stale": False,
    }
    other = str(tmp_path / "other")  # thresholds for other data leave the run's own alone
    run.write_thresholds(Thresholds(0.5, 5, 256), {}, data=other)
    assert run.read_thresholds(data=other).thresholds == Thresholds(0.5, 5, 256)
    assert run.read_thresholds().thresholds == Thresholds(0.6, 20, 256)


def test_saved_thresholds_from_the_configuration_describe_themselves():
    saved = SavedThresholds(Thresholds(), "configuration", "config.yaml")
    assert saved.describe() == {
        **Thresholds().to_dict(),
        "source": "configuration",
        "file": "config.yaml",
        "stale": False,
    }


def test_runs_keeps_the_json_helpers_importable():
    from ptx_keras import files, runs

    assert runs.write_json is files.write_json and runs.file_sha256 is files.file_sha256
