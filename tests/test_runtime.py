"""ptx_keras.runtime: the process settings are set before TensorFlow starts, never over the user's own.

Each case runs in a fresh Python process (the settings concern a process's start), with an environment cleaned
of the variables involved.
"""

import json
import os
import subprocess
import sys

import pytest

from ptx_keras import runtime

NAMES = (*runtime.PROCESS_SETTINGS, runtime.TUNING_VARIABLE, runtime.DEFAULTS_VARIABLE)
REPORT = "print(json.dumps([{k: os.environ.get(k) for k in PROCESS_SETTINGS}, 'tensorflow' in sys.modules]))"
TRAIN = {"TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_ENABLE_ONEDNN_OPTS": "1"}


def _run_fresh(code, **env):
    """Runs `code` (after `import json, os, sys`) in a new interpreter with an environment cleaned of the
    variables involved; returns (JSON of its last line, stderr)."""
    clean = {k: v for k, v in os.environ.items() if k not in NAMES}
    clean["KERAS_BACKEND"] = "tensorflow"
    out = subprocess.run(
        [sys.executable, "-c", f"import json, os, sys\n{code}"],
        capture_output=True,
        text=True,
        env={**clean, **env},
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def _fresh_process(code, **env):
    """`_run_fresh(code)` that reports the process settings in effect and whether TensorFlow started."""
    return _run_fresh(f"{code}\nfrom ptx_keras.runtime import PROCESS_SETTINGS\n{REPORT}", **env)


def test_import_sets_the_settings_before_tensorflow_starts():
    (environment, tensorflow_imported), stderr = _fresh_process("import ptx_keras")
    assert environment == TRAIN
    assert not tensorflow_imported  # importing the package must not start TensorFlow
    assert "ptx_keras" not in stderr


def test_configure_process_is_idempotent():
    code = "from ptx_keras.runtime import configure_process\nr = configure_process()\nassert configure_process() == r"
    (environment, _), _ = _fresh_process(code)
    assert environment == TRAIN


def test_import_leaves_the_users_own_values_alone():
    (environment, _), _ = _fresh_process("import ptx_keras", TF_ENABLE_ONEDNN_OPTS="0")
    assert environment == {"TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_ENABLE_ONEDNN_OPTS": "0"}
    # Nor does a serving process change it.
    code = "import ptx_keras\nptx_keras.runtime.configure_process(purpose='serve', batch_size=8)"
    (environment, _), _ = _fresh_process(code, TF_ENABLE_ONEDNN_OPTS="0", TF_CPU_ALLOCATOR_USE_BFC="false")
    assert environment == {"TF_CPU_ALLOCATOR_USE_BFC": "false", "TF_ENABLE_ONEDNN_OPTS": "0"}


def test_tuning_off_changes_nothing():
    code = "import ptx_keras\nassert ptx_keras.runtime.configure_process() == {'tuning': 'off'}"
    (environment, _), _ = _fresh_process(code, PTX_KERAS_PROCESS_TUNING="0")
    assert environment == {"TF_CPU_ALLOCATOR_USE_BFC": None, "TF_ENABLE_ONEDNN_OPTS": None}


def test_one_warning_with_the_fix_when_keras_came_first():
    code = (
        "import keras\nimport ptx_keras\nfrom ptx_keras.runtime import configure_process\n"
        "r = configure_process()\nassert 'TF_ENABLE_ONEDNN_OPTS=1' in r['not_applied'], r\n"
        "from ptx_keras.training import configure_execution\nfrom ptx_keras.config import TrainConfig\n"
        "configure_execution(TrainConfig())"  # calls configure_process again: no second warning
    )
    (environment, _), stderr = _fresh_process(code, TF_CPP_MIN_LOG_LEVEL="3")
    assert environment == {"TF_CPU_ALLOCATOR_USE_BFC": None, "TF_ENABLE_ONEDNN_OPTS": None}  # too late: untouched
    assert stderr.count("TensorFlow started before ptx_keras could set") == 1, stderr
    assert "Fix: import ptx_keras before keras and tensorflow" in stderr
    assert "PTX_KERAS_PROCESS_TUNING=0" in stderr


def test_no_warning_when_keras_came_first_with_the_settings_already_set():
    _, stderr = _fresh_process("import keras\nimport ptx_keras", TF_CPP_MIN_LOG_LEVEL="3", **TRAIN)
    assert "ptx_keras could set" not in stderr


def test_serving_a_single_image_turns_onednn_off_after_import():
    code = "import ptx_keras\nptx_keras.runtime.configure_process(purpose='serve', batch_size=1)"
    (environment, _), _ = _fresh_process(code)
    assert environment == {"TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_ENABLE_ONEDNN_OPTS": "0"}
    code = "import ptx_keras\nptx_keras.runtime.configure_process(purpose='serve', batch_size=8)"
    (environment, _), _ = _fresh_process(code)
    assert environment == TRAIN


def test_a_child_process_may_choose_again():
    # The parent's `import ptx_keras` set the training values; a serving child inherits them, marked as ptx_keras'.
    parent = {**TRAIN, runtime.DEFAULTS_VARIABLE: "TF_CPU_ALLOCATOR_USE_BFC=true,TF_ENABLE_ONEDNN_OPTS=1"}
    code = "import ptx_keras\nptx_keras.runtime.configure_process(purpose='serve', batch_size=1)"
    (environment, _), _ = _fresh_process(code, **parent)
    assert environment["TF_ENABLE_ONEDNN_OPTS"] == "0"
    # The same value without the mark is the user's.
    (environment, _), _ = _fresh_process(code, **TRAIN)
    assert environment["TF_ENABLE_ONEDNN_OPTS"] == "1"


def test_predict_cli_chooses_serving_settings_before_tensorflow(tmp_path):
    image = tmp_path / "one.png"
    image.write_bytes(b"")
    code = (
        "import ptx_keras.cli.predict as cli\nfrom ptx_keras import runtime\nseen = {}\n"
        "runtime_configure = runtime.configure_process\n"
        "def spy(**kw):\n    seen['tf'] = 'tensorflow' in sys.modules\n    return runtime_configure(**kw)\n"
        "cli.configure_process = spy\ncli.run_cli = lambda fn, args: 0\n"
        f"assert cli.main([{str(image)!r}, '--model', 'none']) == 0\nassert seen == {{'tf': False}}, seen"
    )
    (environment, tensorflow_imported), _ = _fresh_process(code)
    assert environment["TF_ENABLE_ONEDNN_OPTS"] == "0"  # one file: batch 1
    assert not tensorflow_imported


def test_serving_batch_size(tmp_path):
    files = [tmp_path / f"{i}.png" for i in range(3)]
    for f in files:
        f.write_bytes(b"")
    assert runtime.serving_batch_size([str(files[0])], 8) == 1
    assert runtime.serving_batch_size([str(f) for f in files], 2) == 2
    assert runtime.serving_batch_size([str(tmp_path)], 8) == 8  # a folder: as many as the batch takes


def test_process_settings_by_purpose():
    assert runtime.process_settings() == TRAIN
    assert runtime.process_settings("serve", 1)["TF_ENABLE_ONEDNN_OPTS"] == "0"
    assert runtime.process_settings("serve", runtime.ONEDNN_MIN_BATCH) == TRAIN
    assert runtime.process_settings("serve") == TRAIN


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"purpose": "infer"}, "purpose='infer'"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"batch_size": True}, "batch_size=True"),
        ({"batch_size": 1.0}, "batch_size=1.0"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        runtime.process_settings(**kwargs)


def test_too_late_once_tensorflow_started(monkeypatch, caplog):
    import tensorflow  # noqa: F401  (the test process has started it)

    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runtime, "_warned", set())
    result = runtime.configure_process()
    assert "TF_CPU_ALLOCATOR_USE_BFC=true, TF_ENABLE_ONEDNN_OPTS=1" in result["not_applied"]
    assert all(name not in os.environ for name in runtime.PROCESS_SETTINGS)
    assert "import ptx_keras before keras and tensorflow" in caplog.text


@pytest.mark.parametrize("value, enabled", [("0", False), ("off", False), ("1", True), ("", True)])
def test_tuning_variable(monkeypatch, value, enabled):
    monkeypatch.setenv(runtime.TUNING_VARIABLE, value)
    assert runtime.tuning_enabled() is enabled


# ---------------------------------------------------------------------------------------------------------
# tf.data's autotuning thread (its lost wake-up stalls the end of each pass over the data)
# ---------------------------------------------------------------------------------------------------------

ARRAY_DATASET = (
    "import numpy as np\n"
    "from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter\n"
    "ds = ArrayDataAdapter(np.zeros((4, 2), 'float32'), batch_size=2).get_tf_dataset()\n"
    "print(json.dumps([ds.options().autotune.enabled, len(list(ds))]))\n"
)


def _last_json(code, **env):
    return _run_fresh(code, TF_CPP_MIN_LOG_LEVEL="3", **env)[0]


@pytest.mark.parametrize("imports", ["import ptx_keras\nimport keras", "import keras\nimport ptx_keras"])
def test_keras_array_datasets_run_without_the_autotuning_thread_in_either_import_order(imports):
    # Keras' own datasets from arrays (fit, evaluate, predict) get the option; the data are unchanged (2 batches).
    assert _last_json(f"{imports}\n{ARRAY_DATASET}") == [False, 2]


def test_keras_array_datasets_untouched_with_tuning_off():
    assert _last_json(f"import ptx_keras\nimport keras\n{ARRAY_DATASET}", PTX_KERAS_PROCESS_TUNING="0") == [None, 2]


def test_installing_the_array_dataset_fix_twice_wraps_once():
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    import ptx_keras.models  # noqa: F401 - installs the fix (this test process runs with tuning on)

    first = ArrayDataAdapter.get_tf_dataset
    assert runtime.keras_array_datasets_without_autotune() is True
    assert ArrayDataAdapter.get_tf_dataset is first
    assert not getattr(first.__wrapped__, "_ptx_keras_without_autotune", False)


def test_dataset_options_turn_the_autotuning_model_off_and_keep_the_datasets_own_options():
    import tensorflow as tf

    assert runtime.dataset_options().autotune.enabled is False
    own = tf.data.Options()
    own.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = tf.data.Dataset.range(4).with_options(own).with_options(runtime.dataset_options())
    assert ds.options().autotune.enabled is False
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
    assert list(ds.as_numpy_iterator()) == [0, 1, 2, 3]
