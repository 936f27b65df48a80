"""Horizontal-flip test-time augmentation: in the shared prediction loop (Keras) and in the exported graph.

TTA output = (model(x) + mirror(model(mirror(x)))) / 2, compared bit for bit with that average made by hand from
the same model calls; and TTA is flip-equivariant: TTA(mirror(x)) == mirror(TTA(x)) exactly (float addition is
commutative).
"""

import json
import os

import numpy as np
import pytest

import tiny

SIZE = 32


def tiny_model(aux_head=False, seed=3):
    return tiny.small_fc(SIZE, seed=seed, aux_head=aux_head)


def images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, SIZE, SIZE, 1)).astype(np.float32)
    x[:, 4:12, 2:10] += 0.5  # asymmetric content: the mirror is a different image
    return np.clip(x, 0, 1)


def mirror(a):
    return np.ascontiguousarray(np.asarray(a)[:, :, ::-1])


def test_keras_runner_tta_is_the_hand_made_average_and_flip_equivariant():
    from ptx_keras.inference import ModelRunner

    model = tiny_model()
    x = images()
    plain = ModelRunner.from_keras(model)
    tta = ModelRunner.from_keras(model, tta="hflip")
    by_hand = (model.predict_on_batch(x)[..., 1] + mirror(model.predict_on_batch(mirror(x)))[..., 1]) / np.float32(2)
    out = tta(x)
    assert out.dtype == np.float32 and out.shape == (3, SIZE, SIZE)
    np.testing.assert_array_equal(out, by_hand)
    assert not np.array_equal(out, plain(x))  # the mirror does change this model's output
    np.testing.assert_array_equal(tta(mirror(x)), mirror(out))
    np.testing.assert_array_equal(plain.with_tta("hflip")(x), out)


def test_keras_runner_tta_averages_the_aux_probability_and_the_loop_carries_it():
    from ptx_keras.inference import ModelRunner, predict_batches

    model = tiny_model(aux_head=True)
    x = images()
    out, flipped = model.predict_on_batch(x), model.predict_on_batch(mirror(x))
    prob, aux = ModelRunner.from_keras(model, tta="hflip").outputs(x)
    np.testing.assert_array_equal(aux, (out["aux"][:, 0] + flipped["aux"][:, 0]) / np.float32(2))
    np.testing.assert_array_equal(prob, (out["mask"][..., 1] + mirror(flipped["mask"])[..., 1]) / np.float32(2))
    (batch,) = list(predict_batches(ModelRunner.from_keras(model, tta="hflip"), [{"image": x}], progress=False))
    np.testing.assert_array_equal(batch["prob"], prob)
    np.testing.assert_array_equal(batch["aux"], aux)
    (plain,) = list(predict_batches(ModelRunner.from_keras(tiny_model()), [{"image": x}], progress=False))
    assert "aux" not in plain


def test_graph_model_function_tta_is_the_hand_made_average_and_flip_equivariant():
    from ptx_keras.serving import model_function

    model = tiny_model(aux_head=True)
    x = images()
    none = model_function(model, SIZE, 1)
    hflip = model_function(model, SIZE, 1, tta="hflip")
    a, b = none(x), none(mirror(x))
    out = hflip(x)
    np.testing.assert_array_equal(
        out["probabilities"].numpy(), (a["probabilities"].numpy() + mirror(b["probabilities"].numpy())) / np.float32(2)
    )
    np.testing.assert_array_equal(
        out["aux_probability"].numpy(), (a["aux_probability"].numpy() + b["aux_probability"].numpy()) / np.float32(2)
    )
    np.testing.assert_array_equal(hflip(mirror(x))["probabilities"].numpy(), mirror(out["probabilities"].numpy()))
    # The graph and the Keras runner agree (different kernels' rounding: float32 tolerance).
    from ptx_keras.inference import ModelRunner

    prob, aux = ModelRunner.from_keras(model, tta="hflip").outputs(x)
    np.testing.assert_allclose(out["probabilities"].numpy()[..., 1], prob, atol=1e-6)
    np.testing.assert_allclose(out["aux_probability"].numpy(), aux, atol=1e-6)
    with pytest.raises(ValueError, match="tta"):
        model_function(model, SIZE, 1, tta="vflip")
    with pytest.raises(ValueError, match="tta"):
        ModelRunner.from_keras(model, tta="dihedral")


@pytest.fixture(scope="module")
def exported_tta(tmp_path_factory):
    """An aux-head model exported with TTA and an aux-gated diagnosis (the graph carries both)."""
    from ptx_keras.diagnosis import Thresholds
    from ptx_keras.export import export_saved_model

    model = tiny_model(aux_head=True)
    base = tmp_path_factory.mktemp("tta") / "saved_model"
    thresholds = Thresholds(mask_threshold=0.5, min_area=0, reference_size=SIZE, gate="aux", aux_threshold=0.5)
    result = export_saved_model(model, str(base), thresholds=thresholds, tta="hflip")
    return model, result


def test_exported_savedmodel_tta_is_the_hand_made_average(exported_tta):
    import tensorflow as tf

    from ptx_keras.serving import model_function

    model, result = exported_tta
    meta = json.loads(open(result.metadata).read())
    assert meta["tta"] == "hflip" and meta["aux_head"] is True and meta["thresholds"]["gate"] == "aux"
    loaded = tf.saved_model.load(result.path)
    x = images()
    out = loaded.signatures["serve_preprocessed"](images=tf.constant(x))
    none = model_function(model, SIZE, 1)
    a, b = none(x), none(mirror(x))
    by_hand = (a["probabilities"].numpy() + mirror(b["probabilities"].numpy())) / np.float32(2)
    np.testing.assert_array_equal(out["probabilities"].numpy(), by_hand)
    aux = (a["aux_probability"].numpy() + b["aux_probability"].numpy()) / np.float32(2)
    np.testing.assert_array_equal(out["aux_probability"].numpy(), aux)
    flipped = loaded.signatures["serve_preprocessed"](images=tf.constant(mirror(x)))
    np.testing.assert_array_equal(flipped["probabilities"].numpy(), mirror(out["probabilities"].numpy()))
    # The raw signature (preprocessing: 8-bit levels) diagnoses by the averaged aux probability (gate aux).
    from ptx_keras.serving import preprocess_images

    pre = preprocess_images(x[..., 0], SIZE, 1).numpy()
    a, b = none(pre), none(mirror(pre))
    aux = (a["aux_probability"].numpy() + b["aux_probability"].numpy()) / np.float32(2)
    raw = loaded.signatures["serving_default"](images=tf.constant(x[..., 0]))
    # (the preprocessing traced into the signature may round differently from its eager run by an ulp)
    np.testing.assert_allclose(raw["aux_probability"].numpy(), aux, atol=1e-6)
    np.testing.assert_array_equal(raw["diagnosis"].numpy(), (aux > 0.5).astype(np.int32))
    by_hand = (a["probabilities"].numpy() + mirror(b["probabilities"].numpy())) / np.float32(2)
    np.testing.assert_allclose(raw["probability"].numpy(), by_hand[..., 1], atol=1e-6)


def test_predict_from_the_tta_export_and_from_outside_tta_agree(exported_tta, tmp_path):
    from PIL import Image

    from ptx_keras.errors import ConfigError
    from ptx_keras.predict import load_predictor, predict_paths

    model, result = exported_tta
    folder = tmp_path / "in"
    folder.mkdir()
    for i, x in enumerate(images(2)):
        Image.fromarray((x[..., 0] * 255).round().astype(np.uint8)).save(folder / f"im{i}.png")
    predictor = load_predictor(result.path)
    assert predictor.tta == "hflip" and predictor.graph_tta == "hflip"
    s = predict_paths([str(folder)], predictor, str(tmp_path / "out"), overlays=False, progress=False)
    assert s["model"]["tta"] == "hflip"
    with pytest.raises(ConfigError, match="exported with tta=hflip"):
        predict_paths([str(folder)], predictor, str(tmp_path / "out2"), tta="none", progress=False)
    import pandas as pd

    table = pd.read_csv(s["predictions"])
    assert table["aux_probability"].between(0, 1).all()
    assert set(table["diagnosis"]) <= {0, 1}
    assert os.path.isfile(s["summary"])
