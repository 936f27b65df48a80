"""`python train.py` without `--config`: the paper's model when a GPU is visible, the quick start on a CPU, and the
first printed line that says which and why (the device list is mocked)."""

import os

import pytest

from ptx_keras.cli import train as cli


def _fake_devices(monkeypatch, gpus):
    import tensorflow as tf

    devices = [tf.config.PhysicalDevice(name=f"/physical_device:GPU:{i}", device_type="GPU") for i in range(gpus)]
    calls = []

    def list_physical_devices(device_type=None):
        calls.append(device_type)
        return list(devices) if device_type == "GPU" else []

    monkeypatch.setattr(tf.config, "list_physical_devices", list_physical_devices)
    return calls


def test_a_visible_gpu_selects_the_papers_configuration(monkeypatch):
    _fake_devices(monkeypatch, 2)
    path, line = cli.choose_config(None, None)
    assert path == cli.GPU_CONFIG and os.path.basename(path) == "ms_scse_fc_densenet103.yaml"
    assert line.startswith("Configuration: ") and "the paper's model" in line
    assert "2 GPU(s) visible: GPU:0, GPU:1" in line and "--config" in line


def test_a_cpu_selects_the_quick_start(monkeypatch):
    _fake_devices(monkeypatch, 0)
    path, line = cli.choose_config(None, None)
    assert path == cli.DEFAULT_CONFIG and os.path.basename(path) == "quickstart.yaml"
    assert "quick start" in line and "no GPU visible" in line and "small_cpu" not in line


def test_data_on_a_cpu_points_to_the_cpu_recipe(monkeypatch):
    _fake_devices(monkeypatch, 0)
    path, line = cli.choose_config(None, "/data/siim")
    assert path == cli.DEFAULT_CONFIG
    assert "small_cpu.yaml" in line and os.path.isfile(cli.CPU_RECIPE)


@pytest.mark.parametrize("gpus", [0, 1])
def test_config_always_wins(monkeypatch, gpus):
    calls = _fake_devices(monkeypatch, gpus)
    path, line = cli.choose_config("my.yaml", "/data")
    assert path == "my.yaml" and line == "Configuration: my.yaml (--config)"
    assert calls == []  # the devices are not even looked at


@pytest.mark.parametrize("gpus, expected", [(1, "ms_scse_fc_densenet103.yaml"), (0, "quickstart.yaml")])
def test_the_first_printed_line_says_which_and_why(monkeypatch, capsys, gpus, expected):
    """Through `main`: the line comes first, before the configuration is even loaded (an unknown key then stops
    the command before any training)."""
    _fake_devices(monkeypatch, gpus)
    assert cli.main(["--set", "train.no_such_key=1"]) == 2
    out, err = capsys.readouterr()
    first = out.splitlines()[0]
    assert first.startswith("Configuration: ") and expected in first
    assert ("no GPU visible" in first) == (gpus == 0)
    assert "no_such_key" in err


def test_the_default_configurations_exist():
    for path in (cli.DEFAULT_CONFIG, cli.GPU_CONFIG, cli.CPU_RECIPE):
        assert os.path.isfile(path), path
