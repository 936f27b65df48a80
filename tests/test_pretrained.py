"""Shipped checkpoints (`ptx_keras.pretrained`): the file and its hash, resolution of a name by `train.init_from`,
refusals, and that the shipped phantom checkpoint loads whole into the model of its configuration."""

import dataclasses
import os

import numpy as np
import pytest

from ptx_keras import finetune, pretrained
from ptx_keras.errors import ModelError
from ptx_keras.runs import file_sha256

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mask(outputs):
    """The mask probabilities of a model's outputs (a dict where the model has an aux head)."""
    return np.asarray(outputs["mask"] if isinstance(outputs, dict) else outputs)


def _tiny_model(seed):
    import keras

    from ptx_keras.models import build_model

    keras.utils.set_random_seed(seed)
    return build_model(
        "ms_scse_fc_densenet103",
        input_shape=(16, 16, 1),
        num_classes=2,
        layers_per_block=1,
        num_pools=2,
        growth_rate=4,
        multiscale_filters=4,
        dropout_rate=0.0,
    )


def _tiny_checkpoint(tmp_path, monkeypatch, name="tiny_ckpt", sha256=None):
    """Registers a checkpoint of a tiny model written to tmp_path; returns (model, Checkpoint)."""
    model = _tiny_model(3)
    path = tmp_path / f"{name}.keras"
    model.save(str(path))
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", str(tmp_path))
    ckpt = pretrained.Checkpoint(
        name=name,
        filename=path.name,
        sha256=file_sha256(str(path)) if sha256 is None else sha256,
        config="quickstart.yaml",
        command="(test)",
        description="a tiny test model",
    )
    monkeypatch.setitem(pretrained.CHECKPOINTS, name, ckpt)
    return model, ckpt


def test_a_checkpoint_name_resolves_to_its_verified_file(tmp_path, monkeypatch):
    _, ckpt = _tiny_checkpoint(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path / "..")
    assert pretrained.is_checkpoint_name("tiny_ckpt")
    assert pretrained.checkpoint_file("tiny_ckpt") == str(tmp_path / "tiny_ckpt.keras") == ckpt.path
    assert finetune.source_model_file("tiny_ckpt") == ckpt.path


def test_fine_tuning_from_a_name_loads_every_layer_and_records_the_name(tmp_path, monkeypatch):
    source, _ = _tiny_checkpoint(tmp_path, monkeypatch)
    target = _tiny_model(9)
    monkeypatch.chdir(tmp_path / "..")
    report = finetune.initialize_from(target, "tiny_ckpt")
    assert report.source == "tiny_ckpt"  # the name, not a path under the working directory
    assert report.model_file == str(tmp_path / "tiny_ckpt.keras")
    counts = report.counts()
    assert counts["skipped"] == counts["unused"] == counts["reshaped"] == 0 and counts["loaded"] > 10
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(_mask(target(x)), _mask(source(x)), atol=1e-6)


def test_an_existing_path_wins_over_a_checkpoint_name(tmp_path, monkeypatch):
    _tiny_checkpoint(tmp_path, monkeypatch)
    work = tmp_path / "work"
    (work / "tiny_ckpt").mkdir(parents=True)
    monkeypatch.chdir(work)
    assert not pretrained.is_checkpoint_name("tiny_ckpt")
    with pytest.raises(ModelError, match="tiny_ckpt"):  # read as a run directory, which has no model
        finetune.source_model_file("tiny_ckpt")


def test_a_changed_file_is_refused(tmp_path, monkeypatch):
    _tiny_checkpoint(tmp_path, monkeypatch, sha256="0" * 64)
    with pytest.raises(ModelError, match="is not the file shipped.*expected 0000"):
        pretrained.checkpoint_file("tiny_ckpt")


def test_a_missing_file_and_an_unknown_name_are_refused(tmp_path, monkeypatch):
    _, ckpt = _tiny_checkpoint(tmp_path, monkeypatch)
    os.remove(ckpt.path)
    with pytest.raises(ModelError, match="is missing.*reinstall"):
        pretrained.checkpoint_file("tiny_ckpt")
    with pytest.raises(ModelError, match="No shipped checkpoint named 'nope'. Shipped: .*phantom_small_cpu"):
        pretrained.checkpoint_file("nope")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="no run directory or .keras file at nope.*shipped: .*phantom_small_cpu"):
        finetune.source_model_file("nope")


def test_checkpoint_is_frozen():
    ckpt = pretrained.CHECKPOINTS["phantom_small_cpu"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ckpt.sha256 = "x"


def test_the_shipped_phantom_checkpoint_loads_whole_into_its_configuration(tmp_path, monkeypatch):
    """The file in the package is the one registered, and every layer of the model its configuration builds
    takes its weights: the fine-tuned model starts with the checkpoint's outputs."""
    from ptx_keras.config import load_config
    from ptx_keras.loading import load_model
    from ptx_keras.models import build_model

    ckpt = pretrained.CHECKPOINTS["phantom_small_cpu"]
    assert file_sha256(pretrained.checkpoint_file(ckpt.name)) == ckpt.sha256
    size_mb = os.path.getsize(ckpt.path) / 2**20
    assert size_mb < 10, f"{ckpt.path} is {size_mb:.1f} MiB: ship the model without its optimizer"
    cfg = load_config(os.path.join(ROOT, "configs", ckpt.config))
    size = cfg.data.image_size
    model = build_model(cfg.model.name, input_shape=(size, size, cfg.data.channels), num_classes=2, **cfg.model.options)
    monkeypatch.chdir(tmp_path)
    report = finetune.initialize_from(model, ckpt.name)
    counts = report.counts()
    assert counts["skipped"] == counts["unused"] == counts["reshaped"] == 0, report.describe()
    source = load_model(ckpt.path, compile=False)
    x = np.random.default_rng(1).uniform(0, 1, (1, size, size, 1)).astype("float32")
    np.testing.assert_allclose(_mask(model(x)), _mask(source(x)), atol=1e-5)
