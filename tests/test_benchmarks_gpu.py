"""benchmarks/gpu.py in its --dry-run mode: a tiny model on the CPU, so that the GPU run is known to start."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu.py")


def _run(*args):
    done = subprocess.run(
        [sys.executable, SCRIPT, *args], check=False, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_dry_run_times_every_policy_and_task():
    rc, lines = _run("--dry-run", "--backend", "tensorflow", "--policies", "float32", "mixed_bfloat16")
    assert rc == 0, lines
    assert [(line["policy"], line["task"]) for line in lines] == [
        ("float32", "train"),
        ("float32", "infer"),
        ("mixed_bfloat16", "train"),
        ("mixed_bfloat16", "infer"),
    ]
    for line in lines:
        assert line["backend"] == "tensorflow" and line["dry_run"] is True and line["model"] == "ms_scse_fc_densenet103"
        assert line["images_per_s"] > 0 and line["size"] == 32
        assert "cpu_flags" in line["machine"]


def test_full_run_refuses_without_a_gpu():
    import tensorflow as tf

    rc, lines = _run(
        "--backend", "tensorflow", "--steps", "1", "--warmup", "1", "--size", "32", "--policies", "float32"
    )
    if tf.config.list_physical_devices("GPU"):  # a GPU machine: the real run, at its smallest
        assert rc == 0 and {line["task"] for line in lines} == {"train", "infer"} and lines[0]["devices"]
    else:
        assert rc == 2 and len(lines) == 1
        assert "no GPU visible" in lines[0]["error"] and "--dry-run" in lines[0]["error"]


def test_missing_backend_is_refused(monkeypatch):
    sys.path.insert(0, ROOT)
    from benchmarks import gpu

    monkeypatch.setattr(gpu, "installed_backends", lambda: ["tensorflow"])
    assert gpu.main(["--backend", "jax"]) == 2
