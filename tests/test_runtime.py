"""ptx_keras.runtime: the process settings are set before TensorFlow starts, never over the user's own."""

import json
import os
import subprocess
import sys

import pytest

from ptx_keras import runtime

SCRIPT = (
    "import json, os, sys; from ptx_keras.runtime import configure_process, PROCESS_SETTINGS; "
    "r = configure_process(); assert configure_process() == r; "
    "print(json.dumps([r, {k: os.environ.get(k) for k in PROCESS_SETTINGS}, 'tensorflow' in sys.modules]))"
)


def _fresh_process(**env):
    clean = {k: v for k, v in os.environ.items() if k not in runtime.PROCESS_SETTINGS and k != runtime.TUNING_VARIABLE}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env={**clean, **env}, check=True)
    return json.loads(out.stdout)


def test_sets_the_settings_before_tensorflow_starts():
    result, environment, tensorflow_imported = _fresh_process()
    assert environment == {"TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_ENABLE_ONEDNN_OPTS": "1"}
    assert result == environment
    assert not tensorflow_imported  # configure_process itself must not start TensorFlow


def test_the_users_own_values_win():
    result, environment, _ = _fresh_process(TF_ENABLE_ONEDNN_OPTS="0")
    assert environment == {"TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_ENABLE_ONEDNN_OPTS": "0"}
    assert result["TF_ENABLE_ONEDNN_OPTS"] == "0"


def test_tuning_off_changes_nothing():
    result, environment, _ = _fresh_process(PTX_KERAS_PROCESS_TUNING="0")
    assert result == {"tuning": "off"}
    assert environment == {"TF_CPU_ALLOCATOR_USE_BFC": None, "TF_ENABLE_ONEDNN_OPTS": None}


def test_too_late_once_tensorflow_started(monkeypatch, caplog):
    import tensorflow  # noqa: F401  (the test process has started it)

    monkeypatch.setattr(runtime, "_applied", {})
    for name in runtime.PROCESS_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(runtime.TUNING_VARIABLE, raising=False)
    result = runtime.configure_process()
    assert "TF_CPU_ALLOCATOR_USE_BFC, TF_ENABLE_ONEDNN_OPTS not set" in result["not_applied"]
    assert all(name not in os.environ for name in runtime.PROCESS_SETTINGS)
    assert "before importing TensorFlow" in caplog.text


@pytest.mark.parametrize("value, enabled", [("0", False), ("off", False), ("1", True), ("", True)])
def test_tuning_variable(monkeypatch, value, enabled):
    monkeypatch.setenv(runtime.TUNING_VARIABLE, value)
    assert runtime.tuning_enabled() is enabled
