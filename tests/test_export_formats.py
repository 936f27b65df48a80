"""ONNX and LiteRT exports: parity with the Keras graph at several input sizes, metadata, ptx-predict on every
artifact, errors."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from ptx_keras.errors import ModelError

PORTABLE = ("onnx", "litert")
# Raw input sizes: the model size, shrinking, enlarging, odd and non-square (the resize and the transposed
# convolutions' output shapes are what converters get wrong).
SHAPES = ((None, None), (100, 80), (37, 50), (131, 63))
TOLERANCE = 1e-4  # max abs difference of probabilities (issue 19's parity criterion)


def tiny_fc_densenet(size, channels=3):
    from ptx_keras import build_model

    return build_model(
        "fc_densenet56",
        input_shape=(size, size, channels),
        growth_rate=2,
        layers_per_block=1,
        num_pools=2,
        first_conv_filters=4,
    )


def smooth_batch(shape, seed, scale=255.0, dtype=np.uint8):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random((2,) + tuple(shape)), (0, 3, 3))
    x = (x - x.min()) / (x.max() - x.min())
    return np.round(x * scale).astype(dtype) if dtype != np.float32 else x.astype(np.float32)


# The preprocessing rounds the resized image to the training bit depth's grey levels
# (`ptx_keras.serving.preprocess_images`). Where a resized value lies within float32 rounding of a half level,
# runtimes with other matrix-product kernels round it to neighbouring levels: on an AVX-512 CI machine
# TensorFlow and ONNX Runtime/LiteRT did, for one pixel of a (100, 80) image, and the untrained network turned
# that grey level into a 1e-3 probability difference. Parity is about the graphs, not about such ties, so the
# test images are drawn until no resized value is within TIE_MARGIN grey levels of a half level (float64).
# 8-bit images enlarged from 37 x 50 land exactly on half levels whatever the draw (the filter's weights are
# dyadic fractions), so that one combination is left to the 16-bit and float images of the same size.
STRUCTURAL_TIES = {((37, 50), np.uint8)}
TIE_MARGIN = 1e-4  # float32 products of values up to 255 are off by a few 1e-5 levels


def _triangle_weights(n_in, n_out):
    """NumPy float64 twin of `ptx_keras.serving._triangle_weights`."""
    ratio = n_in / n_out
    centres = (np.arange(n_out) + 0.5) * ratio
    weights = np.maximum(0.0, 1.0 - np.abs(np.arange(n_in)[None, :] + 0.5 - centres[:, None]) / max(ratio, 1.0))
    return weights / weights.sum(axis=1, keepdims=True)


def tie_free_batch(shape, seed, size, scale=255.0, dtype=np.uint8, levels=255.0):
    """`smooth_batch` whose resized grey levels (`size` x `size`) are at least TIE_MARGIN from any tie."""
    wy, wx = _triangle_weights(shape[0], size), _triangle_weights(shape[1], size)
    for attempt in range(2000):  # 8-bit images shrunk from 100 x 80 need ~270 draws (exact ties are common)
        images = smooth_batch(shape, seed=1000 * seed + attempt, scale=scale, dtype=dtype)
        x = wy @ images.astype(np.float64) @ wx.T * (levels / scale)
        if np.abs(x - np.floor(x) - 0.5).min() > TIE_MARGIN:
            return images
    raise AssertionError(f"no tie-free batch of {shape} in 2000 draws")


def keras_reference(model, thresholds=None):
    """The deployment graph run by TensorFlow on the Keras model: what every artifact must reproduce."""
    from ptx_keras.export.graph import ServingGraph, resolve_deployed

    deployed, _ = resolve_deployed(model, thresholds)
    function = ServingGraph(deployed).portable_function()
    return lambda images, value_max: {k: v.numpy() for k, v in function(images, np.float32(value_max)).items()}


def assert_parity(out, ref, where):
    assert set(out) == set(ref), where
    for key, value in ref.items():
        assert out[key].shape == value.shape, (where, key)
    p_diff = np.abs(out["probability"].astype(np.float64) - ref["probability"]).max()
    assert p_diff <= TOLERANCE, (where, p_diff)
    assert np.abs(out["max_probability"] - ref["max_probability"]).max() <= TOLERANCE, where
    np.testing.assert_array_equal(out["mask"], ref["mask"], err_msg=where)
    np.testing.assert_array_equal(out["diagnosis"], ref["diagnosis"], err_msg=where)
    np.testing.assert_array_equal(out["area"], ref["area"], err_msg=where)
    np.testing.assert_allclose(out["score"], ref["score"], rtol=1e-5, atol=TOLERANCE, err_msg=where)


@pytest.fixture(scope="module", params=(64, 48), ids=("S64", "S48"))
def exported(request, tmp_path_factory):
    """A tiny FC-DenseNet (two transposed convolutions) exported in both portable formats."""
    import keras

    from ptx_keras.diagnosis import Thresholds
    from ptx_keras.export import export_model

    keras.utils.set_random_seed(3)
    size = request.param
    model = tiny_fc_densenet(size)
    thresholds = Thresholds(min_area=20.0)
    base = tmp_path_factory.mktemp(f"formats{size}")
    results = {fmt: export_model(model, fmt, str(base / fmt), thresholds=thresholds) for fmt in PORTABLE}
    return model, thresholds, results


@pytest.mark.parametrize("fmt", PORTABLE)
def test_parity_with_keras_at_several_sizes_and_types(exported, fmt):
    from ptx_keras.artifacts import ArtifactSession

    model, thresholds, results = exported
    size = model.input_shape[1]
    reference = keras_reference(model, thresholds)
    session = ArtifactSession(fmt, results[fmt].path)
    for i, (h, w) in enumerate(SHAPES):
        shape = (h or size, w or size)
        for scale, dtype in ((255.0, np.uint8), (4095.0, np.uint16), (1.0, np.float32)):
            if (shape, dtype) in STRUCTURAL_TIES:
                continue
            images = tie_free_batch(shape, seed=i, size=size, scale=scale, dtype=dtype)
            ref = reference(images.astype(np.float32), scale)
            assert_parity(session(images, scale), ref, f"{fmt} S={size} {shape} {dtype.__name__}")
    # the outputs come back at the input's size, whatever it is
    out = session(smooth_batch((size + 1, 2 * size), seed=9), 255.0)
    assert out["probability"].shape == out["mask"].shape == (2, size + 1, 2 * size)


@pytest.mark.parametrize("fmt", PORTABLE)
def test_metadata_describes_the_contract(exported, fmt):
    from ptx_keras.artifacts import ONNX_METADATA_KEY, PORTABLE_SIGNATURE, find_artifact, read_artifact_metadata

    model, thresholds, results = exported
    result = results[fmt]
    assert result.format == fmt and result.version is None and result.signatures == (PORTABLE_SIGNATURE,)
    assert os.path.basename(result.path) == {"onnx": "model.onnx", "litert": "model.tflite"}[fmt]
    with open(result.metadata, encoding="utf-8") as f:
        meta = json.load(f)
    assert meta["format"] == fmt and meta["input_size"] == model.input_shape[1] and meta["channels"] == 3
    assert meta["thresholds"]["min_area"] == 20.0 and meta["model_name"] == model.name
    batch = {"onnx": None, "litert": 1}[fmt]  # LiteRT: one image per call (ptx_keras.export.litert)
    assert meta["inputs"] == {
        "images": {"dtype": "float32", "shape": [batch, None, None]},
        "value_max": {"dtype": "float32", "shape": []},
    }
    outputs = meta["signatures"][PORTABLE_SIGNATURE]["outputs"]
    assert list(outputs)[:6] == ["probability", "mask", "area", "score", "max_probability", "diagnosis"]
    assert outputs["mask"]["dtype"] == "uint8" and outputs["diagnosis"]["dtype"] == "int32"
    assert meta["package"] == "ptx_keras" and meta["package_version"] and meta["training_data"] is None
    assert find_artifact(result.path) == (fmt, result.path)
    assert find_artifact(result.base_dir) == (fmt, os.path.join(result.base_dir, os.path.basename(result.path)))
    assert read_artifact_metadata(fmt, result.path)["thresholds"] == thresholds
    if fmt == "onnx":  # a copied .onnx file alone still describes itself
        import onnx

        props = {p.key: p.value for p in onnx.load(result.path).metadata_props}
        assert json.loads(props[ONNX_METADATA_KEY])["input_size"] == model.input_shape[1]


# The paper's network with 2 dense layers per block instead of (4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4): every layer kind
# of ms_scse_fc_densenet103 (the multi-scale first convolution, dense layers with per-layer scSE and their
# in-block concatenations, the five transitions down and up, the skip concatenations, dropout and the softmax head),
# the preset's growth rate and branch widths, at 256 x 256 (an 8 x 8 bottleneck). Converting the full 91-layer
# graph took ~2 minutes per format and adds no kind of operation the converters could get wrong.
PAPER_VARIANT = {"layers_per_block": 2}


@pytest.fixture(scope="module")
def paper_model():
    """ms_scse_fc_densenet103 (`PAPER_VARIANT`; untrained, seeded weights) at 256 x 256 and its Keras-graph outputs
    on two images."""
    import keras

    from ptx_keras import build_model

    keras.utils.set_random_seed(0)
    model = build_model("ms_scse_fc_densenet103", input_shape=(256, 256, 3), **PAPER_VARIANT)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"MultiScaleConv2D", "DenseBlock", "TransitionDown", "TransitionUp"} <= kinds, kinds
    blocks = [layer.get_config() for layer in model.layers if type(layer).__name__ == "DenseBlock"]
    assert len(blocks) == 11 and all(b["num_layers"] == 2 and b["scse"] for b in blocks)  # 5 pools, scSE per layer
    # At the model's size the resize is the identity (exact), so no grey level can tie (see TIE_MARGIN); the
    # resize itself is tested at several sizes on the tiny models.
    images = smooth_batch((256, 256), seed=1)
    return model, images, keras_reference(model)(images.astype(np.float32), 255.0)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", PORTABLE)
def test_paper_model_parity_at_256(paper_model, fmt, tmp_path):
    """The paper's network (`PAPER_VARIANT`) through ONNX Runtime / LiteRT vs Keras at 256 x 256."""
    from ptx_keras.artifacts import ArtifactSession
    from ptx_keras.export import export_model

    model, images, ref = paper_model
    result = export_model(model, fmt, str(tmp_path / fmt))
    session = ArtifactSession(fmt, result.path)
    for call in range(2):  # LiteRT's XNNPACK once got every call after the first wrong: call twice
        assert_parity(session(images, 255.0), ref, f"{fmt} ms_scse_fc_densenet103, call {call}")


# --- ptx-predict on every artifact ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_with_exports(tmp_path_factory):
    import keras

    from ptx_keras.config import load_config, save_config
    from ptx_keras.export import export_model
    from ptx_keras.runs import RunDir

    keras.utils.set_random_seed(5)
    run = str(tmp_path_factory.mktemp("run"))
    model = tiny_fc_densenet(64)
    cfg = load_config(
        extra={
            "model": {"name": "fc_densenet56"},
            "data": {"image_size": 64, "channels": 3},
            "diagnosis": {"min_area": 5},
        }
    )
    save_config(cfg, RunDir(run).config_file)
    model.save(RunDir(run).best_model)
    paths = {"run": run}
    for fmt in ("savedmodel", "onnx", "litert"):
        paths[fmt] = export_model(run, fmt).path
    return paths


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    from PIL import Image

    from ptx_keras.data.dicom import write_dicom

    d = tmp_path_factory.mktemp("studies")
    for i, shape in enumerate(((90, 70), (64, 64), (150, 120))):
        Image.fromarray(smooth_batch(shape, seed=20 + i)[0]).save(d / f"img{i}.png")
    write_dicom(
        str(d / "ct12.dcm"),
        smooth_batch((80, 96), seed=30, scale=4095.0, dtype=np.uint16)[0],
        photometric="MONOCHROME1",
        bits_stored=12,
        spacing=(0.2, 0.2),
    )
    return d


def test_predict_gives_the_same_table_with_every_artifact(run_with_exports, studies, tmp_path):
    from ptx_keras.predict import predict_paths

    tables = {}
    for kind, model in run_with_exports.items():
        summary = predict_paths([str(studies)], model, str(tmp_path / kind), overlays=False, progress=False)
        assert summary["n_ok"] == 4 and summary["images_per_second"] > 0 and summary["seconds"] > 0
        assert summary["model"]["kind"] == kind
        tables[kind] = pd.read_csv(os.path.join(tmp_path / kind, "predictions.csv"), keep_default_na=False)
    exact = ["file", "sample_id", "status", "error", "diagnosis", "area_px", "height", "width"]
    for kind, table in tables.items():
        assert list(table.columns) == list(tables["run"].columns), kind
        pd.testing.assert_frame_equal(table[exact], tables["run"][exact], obj=kind)
        for column in ("score", "max_probability"):
            np.testing.assert_allclose(
                table[column].astype(float),
                tables["run"][column].astype(float),
                rtol=1e-5,
                atol=TOLERANCE,
                err_msg=f"{kind} {column}",
            )


def test_cli_exports_each_format_and_predict_reports_speed(run_with_exports, studies, tmp_path, capsys):
    from ptx_keras.cli.export import main as export_main
    from ptx_keras.cli.predict import main as predict_main

    run = run_with_exports["run"]
    assert export_main([run, "--format", "onnx", "--output", str(tmp_path / "o")]) == 0
    line = capsys.readouterr().out
    assert line.startswith("ONNX: ") and "model.onnx" in line and "serve_value_max" in line
    assert export_main([run, "--format", "litert", "--version", "2"]) == 2
    assert "version applies to the SavedModel only" in capsys.readouterr().err
    assert (
        predict_main(
            [
                str(studies),
                "--model",
                str(tmp_path / "o"),
                "--output",
                str(tmp_path / "p"),
                "--no-progress",
                "--no-overlays",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "4/4 images predicted" in out and "images/s" in out
    with open(tmp_path / "o" / "export.json", encoding="utf-8") as f:
        meta = json.load(f)
    assert meta["source_run"] == os.path.abspath(run) and meta["training_data"]["note"]


# --- Errors ----------------------------------------------------------------------------------------------------
def test_invalid_arguments(run_with_exports, tmp_path):
    from ptx_keras.artifacts import ArtifactSession, find_artifact
    from ptx_keras.export import export_model, export_onnx
    from ptx_keras.predict import load_predictor

    run = run_with_exports["run"]
    with pytest.raises(ModelError, match="Unknown export format 'tflite'"):
        export_model(run, "tflite")
    with pytest.raises(ModelError, match="version applies to the SavedModel only"):
        export_model(run, "onnx", version=2)
    with pytest.raises(ModelError, match="opset must be an integer >= 13"):
        export_onnx(run, opset=9)
    with pytest.raises(ModelError, match="output is required"):
        export_onnx(tiny_fc_densenet(64))
    with pytest.raises(ModelError, match="tta must be one of"):
        export_model(run, "litert", tta="vflip")
    with pytest.raises(ModelError, match="format must be one of"):
        ArtifactSession("savedmodel", run_with_exports["onnx"])
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        ArtifactSession("onnx", run_with_exports["onnx"], threads=0)
    with pytest.raises(ValueError, match=r"\(batch, height, width\)"):
        ArtifactSession("onnx", run_with_exports["onnx"])(np.zeros((4, 4), np.float32))
    # a lone .tflite without its export.json; a damaged .onnx; a folder holding two formats
    lone = tmp_path / "lone"
    lone.mkdir()
    with open(run_with_exports["litert"], "rb") as src:
        (lone / "model.tflite").write_bytes(src.read())
    with pytest.raises(ModelError, match="no litert export metadata"):
        load_predictor(str(lone / "model.tflite"))
    (lone / "broken.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        load_predictor(str(lone / "broken.onnx"))
    (lone / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="holds several exported models"):
        find_artifact(str(lone))
    with pytest.raises(ModelError, match="no .onnx or .tflite file"):
        load_predictor(str(tmp_path))


def test_an_op_onnx_lacks_is_refused():
    """tf2onnx keeps an op it cannot convert (e.g. TensorFlow's antialiased resize, which the serving graph
    therefore does not use) and only logs it; the export refuses such a graph instead of writing it."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    from ptx_keras.export.onnx import _check_converted

    spec = [tf.TensorSpec([1, 16, 16, 1], tf.float32)]
    function = tf.function(lambda x: tf.image.resize(x, (8, 8), antialias=True), input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=17)
    with pytest.raises(ModelError, match="ops ONNX does not define: \\['ScaleAndTranslate'\\]"):
        _check_converted(proto, onnx)
