"""SavedModel export: in-graph preprocessing and diagnosis, reload without ptx_keras, versions, metadata."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ptx_keras.errors import ModelError
from ptx_keras.runs import RunDir

from tiny import smooth_picture

SIZE = 64


def tiny_fc_densenet(channels=3):
    from ptx_keras import build_model

    return build_model(
        "fc_densenet56",
        input_shape=(SIZE, SIZE, channels),
        growth_rate=2,
        layers_per_block=1,
        num_pools=2,
        first_conv_filters=4,
    )


def brightness_model(channels=1):
    """PTX probability = sigmoid(20 * (mean intensity - 0.5)): bright pixels are 'pneumothorax'."""
    import keras

    inp = keras.Input((SIZE, SIZE, channels))
    conv = keras.layers.Conv2D(2, 1, name="logits")
    out = keras.layers.Softmax(name="softmax")(conv(inp))
    model = keras.Model(inp, out, name="brightness")
    kernel = np.zeros((1, 1, channels, 2), np.float32)
    kernel[..., 0], kernel[..., 1] = -10.0 / channels, 10.0 / channels
    conv.set_weights([kernel, np.array([5.0, -5.0], np.float32)])
    return model


def make_run(run_dir, model, **diagnosis):
    from ptx_keras.config import load_config, save_config

    cfg = load_config(
        extra={
            "model": {"name": model.name},
            "data": {"image_size": SIZE, "channels": int(model.input_shape[-1])},
            "diagnosis": diagnosis,
        }
    )
    os.makedirs(run_dir, exist_ok=True)
    save_config(cfg, RunDir(run_dir).config_file)
    model.save(RunDir(run_dir).best_model)
    return run_dir


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(1)
    model = tiny_fc_densenet()
    base = tmp_path_factory.mktemp("export") / "saved_model"
    result = export_model(model, base)
    return model, result


def export_model(model, base, **kwargs):
    from ptx_keras.export import export_saved_model

    return export_saved_model(model, str(base), **kwargs)


# Runs in a fresh interpreter where `import ptx_keras` fails: what a TF Serving host sees.
_RELOAD_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["ptx_keras"] = None
    try:
        import ptx_keras  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("ptx_keras must not be importable here")
    import numpy as np
    import tensorflow as tf

    path, inputs, outputs = sys.argv[1:4]
    data = np.load(inputs)
    loaded = tf.saved_model.load(path)
    sig = loaded.signatures
    result = {"signatures": np.array(sorted(sig))}
    result["preprocessed"] = sig["serve_preprocessed"](images=tf.constant(data["preprocessed"]))["probabilities"]
    for name, key, signature in [
        ("model_size", "model_size", "serving_default"),
        ("odd", "odd", "serving_default"),
        ("odd4d", "odd4d", "serving_default"),
        ("u8", "u8", "serve_uint8"),
        ("u16", "u16", "serve_uint16"),
        ("big", "big", "serve_uint8"),
    ]:
        for out_name, value in sig[signature](images=tf.constant(data[key])).items():
            result[f"{name}/{out_name}"] = value
    np.savez(outputs, **{k: np.asarray(v) for k, v in result.items()})
    """
)


@pytest.mark.slow
def test_reload_without_ptx_keras_matches_keras(exported, tmp_path):
    import tensorflow as tf

    from ptx_keras.serving import preprocess_images

    model, result = exported
    rng = np.random.default_rng(0)
    preprocessed = rng.random((2, SIZE, SIZE, 3)).astype(np.float32)
    # float32 values on the 8-bit grid go through the quantisation unchanged at the model size.
    model_size = (np.round(smooth_picture((2, SIZE, SIZE)) * 255) / 255).astype(np.float32)
    odd = smooth_picture((1, 300, 417), seed=1).astype(np.float32)
    u8 = np.round(smooth_picture((2, 160, 200), seed=2) * 255).astype(np.uint8)
    inputs = dict(
        preprocessed=preprocessed,
        model_size=model_size,
        odd=odd,
        odd4d=odd[..., None],
        u8=u8,
        u16=u8.astype(np.uint16) * 257,  # the same picture at 16 bits
        big=np.round(smooth_picture((1, 1024, 1024), seed=3) * 255).astype(np.uint8),
    )
    np.savez(tmp_path / "in.npz", **inputs)
    proc = subprocess.run(
        [sys.executable, "-c", _RELOAD_SCRIPT, result.path, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    assert set(out["signatures"]) == {"serving_default", "serve_uint8", "serve_uint16", "serve_preprocessed"}

    expected = model(preprocessed, training=False).numpy()
    np.testing.assert_allclose(out["preprocessed"], expected, atol=1e-5)

    keras_ptx = model(preprocess_images(tf.constant(model_size), SIZE, 3), training=False).numpy()[..., 1]
    np.testing.assert_allclose(out["model_size/probability"], keras_ptx, atol=1e-5)
    np.testing.assert_array_equal(out["model_size/mask"], (keras_ptx > 0.5).astype(np.uint8))

    for name, shape in [
        ("odd", (1, 300, 417)),
        ("odd4d", (1, 300, 417)),
        ("u8", (2, 160, 200)),
        ("big", (1, 1024, 1024)),
    ]:
        assert out[f"{name}/probability"].shape == shape
        assert out[f"{name}/mask"].shape == shape and out[f"{name}/mask"].dtype == np.uint8
        assert out[f"{name}/area"].tolist() == out[f"{name}/mask"].sum(axis=(1, 2)).tolist()
        assert out[f"{name}/diagnosis"].dtype == np.int32 and set(out[f"{name}/diagnosis"]) <= {0, 1}
    np.testing.assert_array_equal(out["odd/probability"], out["odd4d/probability"])
    for key in ("diagnosis", "area", "score", "mask"):
        np.testing.assert_array_equal(out[f"u8/{key}"], out[f"u16/{key}"])


def test_serving_rejects_colour_input(exported):
    import tensorflow as tf

    _, result = exported
    loaded = tf.saved_model.load(result.path)
    with pytest.raises(tf.errors.InvalidArgumentError, match="grayscale"):
        loaded.signatures["serve_uint8"](images=tf.zeros((1, 40, 40, 3), tf.uint8))


def test_metadata_and_layout(exported):
    _, result = exported
    base = result.base_dir
    assert result.path == os.path.join(base, "1") and result.version == 1
    assert os.path.isfile(os.path.join(result.path, "saved_model.pb"))
    with open(result.metadata) as f:
        meta = json.load(f)
    with open(os.path.join(result.path, "assets.extra", "export.json")) as f:
        assert json.load(f) == meta
    assert meta["model_name"] == "fc_densenet56"
    assert (meta["input_size"], meta["channels"], meta["bit_depth"]) == (SIZE, 3, 8)
    assert meta["thresholds"] == {"min_area": 50.0, "mask_threshold": 0.5, "reference_size": 256}
    assert meta["thresholds_source"] == "ptx_keras.constants"
    assert meta["min_area_pixels_at_model_size"] == pytest.approx(50 * 64 * 64 / 256**2)
    sigs = meta["signatures"]
    assert list(sigs)[0] == "serving_default"
    assert sigs["serve_uint16"]["inputs"]["images"]["dtype"] == "uint16"
    assert sigs["serve_preprocessed"]["inputs"]["images"] == {"dtype": "float32", "shape": [None, SIZE, SIZE, 3]}
    assert sigs["serve_preprocessed"]["outputs"]["probabilities"]["shape"] == [None, SIZE, SIZE, 2]
    outs = sigs["serving_default"]["outputs"]
    assert {k: v["dtype"] for k, v in outs.items()} == {
        "probability": "float32",
        "mask": "uint8",
        "area": "int64",
        "score": "float32",
        "max_probability": "float32",
        "diagnosis": "int32",
    }
    assert meta["package_version"] and meta["source_run"] is None


def test_reexport_replaces_the_version(tmp_path):
    model = brightness_model()
    base = tmp_path / "models"
    first = export_model(model, base, version=3)
    from ptx_keras.diagnosis import Thresholds

    marker = os.path.join(first.path, "stale.txt")
    open(marker, "w").close()
    second = export_model(
        model, base, version=3, thresholds=Thresholds(min_area=10, mask_threshold=0.4, reference_size=64)
    )
    assert second.path == first.path and not os.path.exists(marker)
    assert sorted(os.listdir(base)) == ["3", "export.json"]  # no temporary directories left
    with open(second.metadata) as f:
        assert json.load(f)["thresholds"] == {"min_area": 10.0, "mask_threshold": 0.4, "reference_size": 64}


def _diagnoses(version_dir, images):
    import tensorflow as tf

    loaded = tf.saved_model.load(version_dir)
    return loaded.signatures["serving_default"](images=tf.constant(images))["diagnosis"].numpy().tolist()


def test_run_thresholds_are_baked_in(tmp_path):
    from ptx_keras.export import export_saved_model

    model = brightness_model()
    run = make_run(str(tmp_path / "run"), model, min_area=50, mask_threshold=0.5, reference_size=256)
    # Images whose bright square covers 2 and 16 model pixels (at 64 x 64 the rule needs more than 3.125).
    images = np.zeros((2, SIZE, SIZE), np.float32)
    images[0, :2, :1] = 1.0
    images[1, 20:24, 20:24] = 1.0
    result = export_saved_model(run)
    assert result.path == os.path.join(os.path.abspath(run), "saved_model", "1")
    assert _diagnoses(result.path, images) == [0, 1]
    with open(result.metadata) as f:
        meta = json.load(f)
    assert meta["source_run"] == os.path.abspath(run) and meta["model_name"] == "brightness"
    assert meta["thresholds_source"].endswith("config.yaml")

    # Thresholds chosen on the validation split win over the configuration.
    os.makedirs(os.path.join(run, "eval", "val"))
    with open(os.path.join(run, "eval", "val", "thresholds.json"), "w") as f:
        json.dump({"min_area": 400, "mask_threshold": 0.5, "reference_size": 256}, f)
    result = export_saved_model(run, version=2)
    assert _diagnoses(result.path, images) == [0, 0]  # 400 / 16 = 25 pixels needed now
    with open(result.metadata) as f:
        assert json.load(f)["thresholds"]["min_area"] == 400.0


def test_invalid_arguments(tmp_path):
    import keras

    from ptx_keras.export import export_saved_model

    model = brightness_model()
    for version in (0, -1, 1.5, "1", True):
        with pytest.raises(ModelError, match="version"):
            export_saved_model(model, str(tmp_path), version=version)
    with pytest.raises(ModelError, match="output is required"):
        export_saved_model(model)
    with pytest.raises(ModelError, match="not found"):
        export_saved_model(str(tmp_path / "missing"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ModelError, match="no config.yaml"):
        export_saved_model(str(tmp_path / "empty"))
    run = make_run(str(tmp_path / "run"), model)
    os.remove(RunDir(run).best_model)
    with pytest.raises(ModelError, match="best.keras"):
        export_saved_model(run)
    inp = keras.Input((None, None, 1))
    free = keras.Model(inp, keras.layers.Conv2D(2, 1, activation="softmax")(inp))
    with pytest.raises(ModelError, match="fixed square input"):
        export_saved_model(free, str(tmp_path / "free"))
    with pytest.raises(ModelError, match="Thresholds"):
        export_saved_model(
            model, str(tmp_path), thresholds={"min_area": 50, "mask_threshold": 0.5, "reference_size": 256}
        )
    # An invalid thresholds file of the run names the file.
    os.makedirs(os.path.join(run, "eval", "val"))
    with open(os.path.join(run, "eval", "val", "thresholds.json"), "w") as f:
        json.dump({"min_area": 50, "mask_threshold": 1.5, "reference_size": 256}, f)
    keras_model = brightness_model()
    keras_model.save(RunDir(run).best_model)
    with pytest.raises(ModelError, match="thresholds.json.*mask_threshold"):
        export_saved_model(run)


def test_cli(tmp_path, capsys):
    from ptx_keras.cli.export import main

    run = make_run(str(tmp_path / "run"), brightness_model())
    assert main([run, "--output", str(tmp_path / "out"), "--version", "7"]) == 0
    assert os.path.isfile(tmp_path / "out" / "7" / "saved_model.pb")
    assert "SavedModel:" in capsys.readouterr().out
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nope" in err[0]
    assert main([run, "--version", "0"]) == 2
    assert "version" in capsys.readouterr().err
