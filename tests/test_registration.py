"""`import ptx_keras` registers every Keras class of the package with Keras, without importing Keras itself.

Each case runs in a fresh Python process: registration happens once per process, at the first import of Keras.
Loading damaged `.keras` files through `ptx_keras.loading` is tested here too.
"""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from ptx_keras.errors import ModelError


def _run(code, cwd, extra_env=None):
    """Runs `code` in a fresh interpreter; returns (stdout, stderr). Fails the test on a non-zero exit."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", **(extra_env or {}))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr


# Prints the registered "ptx_keras>..." names, then whether register_all adds any, then whether the hook is gone.
_REPORT = """
    import sys
    from keras.src.saving.object_registration import GLOBAL_CUSTOM_OBJECTS
    before = sorted(k for k in GLOBAL_CUSTOM_OBJECTS if k.startswith("ptx_keras>"))
    from ptx_keras import _registration
    _registration.register_all()
    after = sorted(k for k in GLOBAL_CUSTOM_OBJECTS if k.startswith("ptx_keras>"))
    hooks = [f for f in sys.meta_path if isinstance(f, _registration._KerasImportHook)]
    print(json.dumps({"before": before, "after": after, "hooks": len(hooks)}))
"""


_NO_KERAS_YET = """
    import json, sys
    import ptx_keras, ptx_keras.data.prepare  # what data-preparation workers (spawn) import
    from ptx_keras import _registration
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("keras", "tensorflow"))
    hooks = [f for f in sys.meta_path if isinstance(f, _registration._KerasImportHook)]
    print(json.dumps({"heavy": heavy, "hooks": len(hooks)}))
"""


@pytest.mark.parametrize(
    "first_import",
    [
        "import ptx_keras.layers.checks",  # Keras imported half-way through ptx_keras.layers
        "from ptx_keras.models import build_model",  # ... and through ptx_keras.models
    ],
)
def test_keras_imported_by_a_ptx_keras_module_registers_everything(tmp_path, first_import):
    """Preparation imports no Keras; the first import of Keras, wherever it happens, registers every class."""
    code = "import logging\nlogging.basicConfig()\n" + textwrap.dedent(_NO_KERAS_YET) + first_import + "\n"
    out, err = _run(code + textwrap.dedent(_REPORT), tmp_path)
    assert json.loads(out.splitlines()[0]) == {"heavy": [], "hooks": 1}
    report = json.loads(out.splitlines()[-1])
    assert report["before"] == report["after"]  # nothing was left for register_all to do
    for name in ("SCSEBlock", "InputSizeCheck", "DenseBlock", "MaxUnpooling2D", "AdamL2", "DSC1"):
        assert f"ptx_keras>{name}" in report["before"]
    assert report["hooks"] == 0  # the hook removed itself
    assert "could not register" not in err


def test_a_failed_registration_warns_and_never_breaks_import_keras(tmp_path):
    out, err = _run(
        """
        import logging
        logging.basicConfig()
        from ptx_keras import _registration
        _registration.REGISTERING_MODULES += ("ptx_keras.no_such_module",)
        import keras
        print("keras", keras.__version__)
        """,
        tmp_path,
    )
    assert out.startswith("keras ")
    assert "ptx_keras could not register its Keras classes (ModuleNotFoundError" in err


def _tiny_options():
    """Small options for every registered model (the model tests' tiny configurations)."""
    from tiny import BASELINES as TINY_BASELINES
    from tiny import MODELS as TINY_MODELS

    options = {name: dict(opts) for name, opts in TINY_MODELS.items()}
    options.update({name: dict(opts, input_shape=(32, 32, 3)) for name, opts in TINY_BASELINES.items()})
    return {name: dict(opts, input_shape=list(opts["input_shape"])) for name, opts in options.items()}


_SAVE_ALL = """
    import json, sys
    import numpy as np
    import keras
    import ptx_keras
    from ptx_keras.errors import ModelError
    from ptx_keras.losses import get_loss
    from ptx_keras.metrics import DSC1, MPA
    from ptx_keras.optimizers import make_optimizer

    folder, options = sys.argv[1], json.loads(sys.argv[2])

    def build(name):
        if name in options:
            return ptx_keras.build_model(name, **options[name])
        for size in (32, 64, 128, 256, 512):  # a model without tiny options: its smallest valid input
            try:
                return ptx_keras.build_model(name, input_shape=(size, size, 3))
            except ModelError:
                continue
        raise AssertionError(f"no valid input size for {name}")

    keras.utils.set_random_seed(0)
    names = sorted(ptx_keras.list_models())
    for name in names:
        model = build(name)
        model.compile(optimizer=make_optimizer(), loss=get_loss("sw_cel"), metrics=[DSC1(), MPA()])
        x = np.random.default_rng(0).random((1, *model.input_shape[1:])).astype("float32")
        np.save(f"{folder}/{name}.x.npy", x)
        np.save(f"{folder}/{name}.y.npy", np.asarray(model(x, training=False)))
        model.save(f"{folder}/{name}.keras")
    print(json.dumps(names))
"""

_LOAD_ALL = """
    import json, sys
    import numpy as np
    folder, names = sys.argv[1], json.loads(sys.argv[2])
    for name in names:
        model = keras.saving.load_model(f"{folder}/{name}.keras")  # compile=True: loss, metrics, optimizer too
        x = np.load(f"{folder}/{name}.x.npy")
        np.testing.assert_allclose(model(x, training=False), np.load(f"{folder}/{name}.y.npy"), rtol=1e-5, atol=1e-6)
        assert type(model.optimizer).__name__ == "AdamL2", (name, model.optimizer)
        assert type(model.loss).__name__ == "SpatialWeightedCE", (name, model.loss)
    print("loaded", len(names))
"""


@pytest.mark.slow  # three fresh processes (import, build, save, load of every registered model): ~20-40 s
@pytest.mark.parametrize("order", ["import keras, ptx_keras", "import ptx_keras\nimport keras"])
def test_keras_load_model_reloads_every_registered_model(tmp_path_factory, order):
    folder = tmp_path_factory.getbasetemp() / "registration_models"
    if not (folder / "names.json").exists():
        folder.mkdir(exist_ok=True)
        code = textwrap.dedent(_SAVE_ALL)
        env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run(
            [sys.executable, "-c", code, str(folder), json.dumps(_tiny_options())],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        (folder / "names.json").write_text(proc.stdout.splitlines()[-1])
    names = json.loads((folder / "names.json").read_text())
    import ptx_keras

    assert names == sorted(ptx_keras.list_models())
    code = textwrap.dedent(_LOAD_ALL)
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", f"{order}\n{code}", str(folder), json.dumps(names)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path_factory.getbasetemp(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-2:] == ["loaded", str(len(names))]


# --- ptx_keras.loading.load_model on damaged files ----------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    path = tmp_path_factory.mktemp("saved") / "m.keras"
    model.save(path)
    return path


def test_truncated_keras_file_is_reported_as_such(saved, tmp_path):
    from ptx_keras.loading import load_model

    data = saved.read_bytes()
    for keep in (len(data) // 2, len(data) - 20):
        truncated = tmp_path / f"t{keep}.keras"
        truncated.write_bytes(data[:keep])
        with pytest.raises(ModelError, match=r"is not a valid, complete \.keras archive .*truncated or damaged"):
            load_model(str(truncated))
    assert load_model(str(saved)).output_shape == (None, 3)


def test_damaged_and_foreign_archives_are_reported(saved, tmp_path):
    from ptx_keras.loading import load_model

    with zipfile.ZipFile(saved) as archive:
        info = archive.getinfo("model.weights.h5")
    data = bytearray(saved.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)  # the member's stored bytes
    data[start : start + info.compress_size] = bytes(b ^ 0xFF for b in data[start : start + info.compress_size])
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="is damaged"):
        load_model(str(damaged))
    foreign = tmp_path / "foreign.keras"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    with pytest.raises(ModelError, match=r"not a \.keras model \(no config\.json"):
        load_model(str(foreign))
    with pytest.raises(ModelError, match="No model file"):
        load_model(str(tmp_path / "missing.keras"))
    np.testing.assert_array_equal(np.asarray(load_model(str(saved)).get_weights()[1]), np.zeros(3))
