"""`python train.py` without `--config`: the paper's model when a GPU is visible, the quick start on a CPU, and the
first printed line that says which and why, printed before TensorFlow is imported (the GPU list is mocked)."""

import os
import subprocess
import sys
import textwrap

import pytest

from ptx_keras.cli import train as cli

SMI = [
    "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-11111111-aaaa)",
    "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-22222222-bbbb)",
    "MIG 3g.40gb     Device  0: (UUID: MIG-33333333-cccc)",  # GPU 1 split into MIG devices
]


def _fake_gpus(monkeypatch, gpus, mask=None):
    """`nvidia-smi -L` lists `gpus` GPUs (0: no nvidia-smi and no driver folder); `mask`: CUDA_VISIBLE_DEVICES."""
    calls = []

    def nvidia_smi():
        calls.append("nvidia-smi")
        return SMI[:gpus] + SMI[2:] * (gpus == 2) if gpus else None

    monkeypatch.setattr(cli, "_nvidia_smi_list", nvidia_smi)
    monkeypatch.setattr(cli, "PROC_GPUS", os.path.join(os.sep, "nonexistent", "ptx-test-gpus"))
    if mask is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mask)
    return calls


def test_a_visible_gpu_selects_the_papers_configuration(monkeypatch):
    _fake_gpus(monkeypatch, 2)
    path, line = cli.choose_config(None, None)
    assert path == cli.GPU_CONFIG and os.path.basename(path) == "ms_scse_fc_densenet103.yaml"
    assert line.startswith("Configuration: ") and "the paper's model" in line
    assert "2 GPU(s) visible: GPU 0: NVIDIA H100 80GB HBM3; GPU 1: NVIDIA H100 80GB HBM3)" in line
    assert "--config" in line and "UUID" not in line


def test_a_cpu_selects_the_quick_start(monkeypatch):
    _fake_gpus(monkeypatch, 0)
    path, line = cli.choose_config(None, None)
    assert path == cli.DEFAULT_CONFIG and os.path.basename(path) == "quickstart.yaml"
    assert "quick start" in line and "no GPU visible" in line and "small_cpu" not in line


def test_data_on_a_cpu_points_to_the_cpu_recipe(monkeypatch):
    _fake_gpus(monkeypatch, 0)
    path, line = cli.choose_config(None, "/data/siim")
    assert path == cli.DEFAULT_CONFIG
    assert "finetune_cpu.yaml" in line and os.path.isfile(cli.CPU_RECIPE)


@pytest.mark.parametrize("gpus", [0, 1])
def test_config_always_wins(monkeypatch, gpus):
    calls = _fake_gpus(monkeypatch, gpus)
    path, line = cli.choose_config("my.yaml", "/data")
    assert path == "my.yaml" and line == "Configuration: my.yaml (--config)"
    assert calls == []  # the devices are not even looked at


@pytest.mark.parametrize(
    "mask, expected",
    [
        ("", []),
        ("-1", []),
        ("1", ["GPU 1: NVIDIA H100 80GB HBM3"]),
        ("GPU-22222222-bbbb,0", ["GPU 1: NVIDIA H100 80GB HBM3", "GPU 0: NVIDIA H100 80GB HBM3"]),
        ("0,7,1", ["GPU 0: NVIDIA H100 80GB HBM3"]),  # CUDA stops at the first invalid entry
        ("7", []),
        ("MIG-33333333-cccc", ["MIG 3g.40gb Device 0"]),
        ("MIG-9", []),
    ],
)
def test_cuda_visible_devices_filters_the_gpus(monkeypatch, mask, expected):
    _fake_gpus(monkeypatch, 2, mask=mask)
    assert cli.visible_gpus() == expected


def test_without_nvidia_smi_the_driver_folder_is_read(monkeypatch, tmp_path):
    _fake_gpus(monkeypatch, 0)
    for bus, model in (("0000:3b:00.0", "NVIDIA A100-SXM4-40GB"), ("0000:1a:00.0", None)):
        (tmp_path / bus).mkdir()
        if model:
            (tmp_path / bus / "information").write_text(f"Model: \t\t {model}\nIRQ:   42\n")
    monkeypatch.setattr(cli, "PROC_GPUS", str(tmp_path))
    # In bus order; a folder without an `information` file still counts as a GPU.
    assert cli.visible_gpus() == ["GPU 0: NVIDIA GPU", "GPU 1: NVIDIA A100-SXM4-40GB"]
    assert cli.choose_config(None, None)[0] == cli.GPU_CONFIG


@pytest.mark.parametrize("gpus, expected", [(1, "ms_scse_fc_densenet103.yaml"), (0, "quickstart.yaml")])
def test_the_first_printed_line_says_which_and_why(monkeypatch, capsys, gpus, expected):
    """Through `main`: the line comes first, before the configuration is even loaded (an unknown key then stops
    the command before any training)."""
    _fake_gpus(monkeypatch, gpus)
    assert cli.main(["--set", "train.no_such_key=1"]) == 2
    out, err = capsys.readouterr()
    first = out.splitlines()[0]
    assert first.startswith("Configuration: ") and expected in first
    assert ("no GPU visible" in first) == (gpus == 0)
    assert "no_such_key" in err


# Runs train.py's main in a fresh process, first with a (mocked) GPU, then with none (CUDA_VISIBLE_DEVICES=-1), with an
# import hook that prints a line when TensorFlow is first imported (and TensorFlow's own start-up logging on),
# stdout and stderr in one stream; then imports TensorFlow itself, so that the hook is seen to work.
_PROBE = textwrap.dedent(
    """
    import importlib.abc, os, sys

    class Probe(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow":
                print("PROBE: tensorflow imported", flush=True)
                sys.meta_path.remove(self)
            return None

    sys.meta_path.insert(0, Probe())
    from ptx_keras.cli import train as cli
    smi = cli._nvidia_smi_list
    cli._nvidia_smi_list = lambda: ["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)"]
    rcs = [cli.main(["--set", "train.no_such_key=1"])]
    cli._nvidia_smi_list = smi
    os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    rcs.append(cli.main(["--set", "train.no_such_key=1"]))
    import tensorflow
    sys.exit(0 if rcs == [2, 2] else 1)
    """
)


def test_the_line_comes_before_tensorflow_is_imported():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        env=env,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout[-3000:]
    assert lines[0].startswith("Configuration: ") and "ms_scse_fc_densenet103.yaml" in lines[0], done.stdout[-3000:]
    configuration = [i for i, line in enumerate(lines) if line.startswith("Configuration: ")]
    assert len(configuration) == 2 and "quickstart.yaml" in lines[configuration[1]]
    assert lines.index("PROBE: tensorflow imported") > configuration[1]  # nothing before imported TensorFlow


def test_the_default_configurations_exist():
    for path in (cli.DEFAULT_CONFIG, cli.GPU_CONFIG, cli.CPU_RECIPE):
        assert os.path.isfile(path), path
