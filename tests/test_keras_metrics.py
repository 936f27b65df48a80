"""Tests for ptx_keras.metrics.keras_metrics: streaming DSC1/MPA against the NumPy metrics."""

import keras
import numpy as np
import pytest

from ptx_keras.metrics import DSC1, MPA, GlobalDSC1, segmentation_scores
from ptx_keras.targets import pack_targets


def _softmax(p1):
    return np.stack([1.0 - p1, p1], axis=-1).astype("float32")


def _handmade():
    t = np.zeros((2, 4, 4), dtype="float32")
    p = np.zeros((2, 4, 4), dtype="float32")
    t[0, 0, :] = 1  # 4 true pixels
    p[0, 0, :2] = 1  # 2 of them found ...
    p[0, 3, :2] = 1  # ... and 2 false positives; image 1 is empty in both
    return pack_targets(t), _softmax(np.where(p > 0, 0.9, 0.2))


def test_handmade_values():
    y_true, y_pred = _handmade()
    dsc1, mpa, pooled = DSC1(), MPA(), GlobalDSC1()
    for m in (dsc1, mpa, pooled):
        m.update_state(y_true, y_pred)
    # image 0: Dice 2*2/8 = 0.5; image 1 empty/empty: 1.
    assert float(dsc1.result()) == pytest.approx(0.75)
    # image 0: PA1 2/4, PA0 10/12 -> 2/3; image 1: 1.
    assert float(mpa.result()) == pytest.approx(5 / 6)
    assert float(pooled.result()) == pytest.approx(0.5)
    assert dsc1.name == "dsc1" and mpa.name == "mpa" and pooled.name == "global_dsc1"


def _random_batch(rng, n, size=16):
    truth = np.zeros((n, size, size), dtype="float32")
    probs = rng.random((n, size, size)).astype("float32") * 0.45  # mostly background
    for i in range(n):
        kind = i % 4
        if kind in (1, 2):  # a true lesion
            r, c = rng.integers(0, size - 6, size=2)
            truth[i, r : r + 6, c : c + 5] = 1
        if kind in (2, 3):  # a predicted lesion (shifted), kind 3 = false positive on a negative
            r, c = rng.integers(0, size - 5, size=2)
            probs[i, r : r + 5, c : c + 5] = 0.5 + 0.5 * rng.random((5, 5))
        # kind 0: both empty; kind 1: missed lesion
    return truth, probs


def _numpy_means(truth, probs):
    rows = [segmentation_scores(t, p > 0.5) for t, p in zip(truth, probs)]
    return np.mean([r["dsc1"] for r in rows]), np.mean([r["mpa"] for r in rows])


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_streaming_matches_numpy(rng, batch_size):
    truth, probs = _random_batch(rng, 8)
    dsc1, mpa = DSC1(), MPA()
    for start in range(0, len(truth), batch_size):
        y_true = pack_targets(truth[start : start + batch_size])
        y_pred = _softmax(probs[start : start + batch_size])
        dsc1.update_state(y_true, y_pred)
        mpa.update_state(y_true, y_pred)
    want_dsc1, want_mpa = _numpy_means(truth, probs)
    assert float(dsc1.result()) == pytest.approx(want_dsc1, abs=1e-6)
    assert float(mpa.result()) == pytest.approx(want_mpa, abs=1e-6)
    dsc1.reset_state()
    assert float(dsc1.result()) == 0.0
    dsc1.update_state(pack_targets(truth[:1]), _softmax(probs[:1]))
    assert float(dsc1.result()) == pytest.approx(segmentation_scores(truth[0], probs[0] > 0.5)["dsc1"])


def test_float16_predictions_and_single_channel(rng):
    truth, probs = _random_batch(rng, 4)
    want_dsc1, _ = _numpy_means(truth, probs.astype("float16").astype("float32"))
    m = DSC1()
    m.update_state(pack_targets(truth), _softmax(probs).astype("float16"))
    result = m.result()
    assert keras.backend.standardize_dtype(result.dtype) == "float32"
    assert float(result) == pytest.approx(want_dsc1, abs=1e-6)
    sigmoid = MPA()
    sigmoid.update_state(pack_targets(truth), probs[..., None])
    assert float(sigmoid.result()) == pytest.approx(_numpy_means(truth, probs)[1], abs=1e-6)


def test_threshold_and_sample_weight():
    y_true, y_pred = _handmade()
    strict = DSC1(threshold=0.95)  # nothing predicted: image 0 scores 0, image 1 still 1
    strict.update_state(y_true, y_pred)
    assert float(strict.result()) == pytest.approx(0.5)
    weighted = DSC1()
    weighted.update_state(y_true, y_pred, sample_weight=np.array([3.0, 1.0]))
    assert float(weighted.result()) == pytest.approx((3 * 0.5 + 1.0) / 4)


def test_global_dsc1_empty_and_sample_weight():
    empty = pack_targets(np.zeros((2, 4, 4)))
    m = GlobalDSC1()
    m.update_state(empty, _softmax(np.zeros((2, 4, 4))))
    assert float(m.result()) == 1.0
    with pytest.raises(ValueError, match="sample_weight"):
        m.update_state(empty, _softmax(np.zeros((2, 4, 4))), sample_weight=np.ones(2))


@pytest.mark.parametrize("cls", [DSC1, MPA, GlobalDSC1])
def test_serialization_round_trip(cls):
    m = cls(threshold=0.3, name="custom")
    config = keras.saving.serialize_keras_object(m)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is cls
    assert restored.threshold == 0.3 and restored.name == "custom"
    y_true, y_pred = _handmade()
    m.update_state(y_true, y_pred)
    restored.update_state(y_true, y_pred)
    assert float(restored.result()) == pytest.approx(float(m.result()))


@pytest.mark.parametrize("cls", [DSC1, MPA, GlobalDSC1])
def test_invalid_arguments(cls):
    for bad in (1.0, -0.1, "0.5", True):
        with pytest.raises(ValueError, match="threshold"):
            cls(threshold=bad)
    m = cls()
    y_true, y_pred = _handmade()
    with pytest.raises(ValueError, match="channels"):
        m.update_state(y_true, np.concatenate([y_pred, y_pred[..., :1]], axis=-1))
    with pytest.raises(ValueError, match="channels"):
        m.update_state(y_true[..., :1], y_pred)


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_compiled_model_evaluate_save_and_load(tmp_path, rng):
    truth, probs = _random_batch(rng, 6)
    inputs = keras.Input((16, 16, 1))
    outputs = keras.layers.Conv2D(2, 1, activation="softmax")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(loss="mse", metrics=[DSC1(), MPA()])
    x = probs[..., None]
    y = pack_targets(truth)
    results = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    want_dsc1, want_mpa = _numpy_means(truth, model.predict(x, verbose=0)[..., 1])
    assert results["dsc1"] == pytest.approx(want_dsc1, abs=1e-6)
    assert results["mpa"] == pytest.approx(want_mpa, abs=1e-6)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    again = loaded.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    assert again["dsc1"] == pytest.approx(results["dsc1"]) and again["mpa"] == pytest.approx(results["mpa"])
