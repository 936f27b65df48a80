"""Uncertainty: MC-dropout and TTA samples, the per-pixel standard deviation maps of ptx-predict, and the
calibration of image-level probabilities (ECE)."""

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import tiny

SIZE = 16


def dropout_fc(dropout_rate=0.2, seed=5):
    return tiny.small_fc(SIZE, seed=seed, dropout_rate=dropout_rate)


def images(n=2, seed=0):
    return np.random.default_rng(seed).random((n, SIZE, SIZE, 1)).astype(np.float32)


def scramble_batch_norm(model, seed=0):
    """Moving statistics far from any batch's, so that normalizing with the batch's would show."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, c).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype(np.float32))


def batch_norm_state(model):
    import keras

    return [
        (layer.trainable, layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def test_mc_dropout_samples_differ_and_keep_batch_norm_in_inference_mode():
    from ptx_keras.inference import ModelRunner, batch_norm_frozen

    model = dropout_fc()
    scramble_batch_norm(model)
    before = batch_norm_state(model)
    x = images()
    probs, aux = ModelRunner.from_keras(model).sample(x, "mc_dropout", 4)
    assert probs.shape == (4, 2, SIZE, SIZE) and probs.dtype == np.float32 and aux is None
    assert not np.allclose(probs[0], probs[1])  # a new dropout mask each pass
    after = batch_norm_state(model)  # moving statistics untouched, trainability restored
    assert all(a[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2]) for a, b in zip(after, before))
    # Without dropout, training=True with frozen BatchNormalization is the inference output (batch statistics
    # would differ by O(1) here: the moving statistics were scrambled). Fused and Keras kernels: float32 rounding.
    plain = dropout_fc(dropout_rate=0.0)
    scramble_batch_norm(plain)
    with batch_norm_frozen(plain):
        train_mode = plain(x, training=True).numpy()
    np.testing.assert_allclose(train_mode, plain(x, training=False).numpy(), atol=1e-5)
    assert not np.allclose(plain(x, training=True).numpy(), train_mode, atol=1e-2)  # the batch's statistics
    with pytest.raises(ValueError, match="no dropout|none"):
        ModelRunner.from_keras(plain).sample(x, "mc_dropout", 4)


def test_mc_dropout_mean_converges_to_the_scaled_deterministic_output():
    """A dense layer's output is linear in its dropout mask: out = conv * keep / (1 - p), keep ~ Bernoulli(1 - p)
    per element, so E[out] = conv, the deterministic (inference) output, and each element's standard deviation
    is |conv| * sqrt(p / (1 - p)). The mean of N passes is within 5 standard errors, 5 * |conv| *
    sqrt(p / (1 - p)) / sqrt(N), of it (per element; by the normal approximation of the binomial count, 5
    standard errors are exceeded with probability ~6e-7 per element, ~3e-4 over the 512 elements here); with
    N = 200 and p = 0.2 that is 17.7 % of |conv|. The full FC-DenseNet is not linear in its masks: there the mean
    of 32 passes must be closer to the deterministic output than the mean of 4, and that closer than a single pass
    (the standard error shrinks by sqrt(N); the nonlinearity's bias does not)."""
    import keras

    from ptx_keras.inference import ModelRunner, mc_dropout_samples
    from ptx_keras.layers import DenseLayer

    p, n = 0.2, 200
    inp = keras.Input((SIZE, SIZE, 1))
    linear = keras.Model(
        inp, DenseLayer(4, dropout_rate=p, name="dense")(keras.layers.Conv2D(5, 3, padding="same")(inp))
    )
    scramble_batch_norm(linear)
    x = images()
    deterministic = linear(x, training=False).numpy()[..., 1]
    samples = np.stack([prob for prob, _ in mc_dropout_samples(linear, x, n)])
    kept = np.isclose(samples, deterministic / (1 - p), rtol=1e-5, atol=1e-6) | (samples == 0)
    assert kept.all()  # each pass: the element kept and scaled by 1 / (1 - p), or dropped
    standard_error = np.abs(deterministic) * np.sqrt(p / (1 - p)) / np.sqrt(n)
    assert (np.abs(samples.mean(axis=0) - deterministic) <= 5 * standard_error + 1e-6).all()

    model = dropout_fc()
    deterministic = ModelRunner.from_keras(model)(x)
    probs, _ = ModelRunner.from_keras(model).sample(x, "mc_dropout", 32)
    single = np.abs(probs - deterministic).mean()
    of_4 = np.abs(probs[:4].mean(axis=0) - deterministic).mean()
    of_32 = np.abs(probs.mean(axis=0) - deterministic).mean()
    # The nonlinearity's bias does not shrink with N, so how much closer the mean gets depends on the weights
    # (0.56 of a single pass with one initialisation, under 0.5 with another): it asks for convergence, not a ratio.
    assert of_32 < of_4 < single


def test_tta_samples_are_the_mirror_pair_then_gamma_views():
    from ptx_keras.inference import ModelRunner, tta_gammas

    model = dropout_fc()
    runner = ModelRunner.from_keras(model)
    x = images()
    probs, _ = runner.sample(x, "tta", 2)
    np.testing.assert_array_equal(probs.mean(axis=0), runner.with_tta("hflip")(x))
    assert tta_gammas(3) == [1.0, pytest.approx(0.8), pytest.approx(1.25)]
    probs, _ = runner.sample(x, "tta", 5)
    assert probs.shape[0] == 5
    np.testing.assert_allclose(probs[2], runner(x ** np.float32(0.8)), atol=1e-7)
    np.testing.assert_allclose(probs[3], runner(x[:, :, ::-1] ** np.float32(0.8))[:, :, ::-1], atol=1e-7)
    with pytest.raises(ValueError, match="samples"):
        runner.sample(x, "tta", 1)
    with pytest.raises(ValueError, match="method"):
        runner.sample(x, "ensemble", 4)


def test_expected_calibration_error_by_hand():
    from ptx_keras.diagnosis import calibration

    p = [0.05, 0.15, 0.12, 0.55, 0.95, 0.91, 1.0]
    y = [0, 0, 1, 1, 1, 0, 1]
    # Bins of width 0.1: [0.05] conf 0.05 acc 0; [0.15, 0.12] 0.135 vs 0.5; [0.55] 0.55 vs 1;
    # [0.95, 0.91, 1.0] 0.95333 vs 2/3 (1.0 falls in the last bin).
    ece = (1 * 0.05 + 2 * 0.365 + 1 * 0.45 + 3 * (2.86 / 3 - 2 / 3)) / 7
    out = calibration(y, p)
    assert out["ece"] == pytest.approx(ece) and out["ece"] == pytest.approx(2.09 / 7)
    assert out["mce"] == pytest.approx(0.45)
    assert out["brier"] == pytest.approx(1.8325 / 7)
    bins = out["bins"]
    np.testing.assert_array_equal(bins["n"], [1, 2, 0, 0, 0, 1, 0, 0, 0, 3])
    assert np.isnan(bins.loc[2, "mean_probability"])
    assert calibration(y, p, n_bins=1)["ece"] == pytest.approx(abs(np.mean(p) - 4 / 7))
    with pytest.raises(ValueError, match="n_bins"):
        calibration(y, p, n_bins=0)
    with pytest.raises(ValueError, match="probabilities"):
        calibration(y, [1.5] * 7)
    with pytest.raises(ValueError, match="labels"):
        calibration([2] * 7, p)


def test_uncertainty_summary_by_hand():
    from ptx_keras.diagnosis import Thresholds
    from ptx_keras.predict import uncertainty_summary

    probs = np.zeros((4, SIZE, SIZE), np.float32)
    probs[:, :2, :2] = np.array([0.9, 0.7, 0.3, 0.9])[:, None, None]  # 4 pixels above 0.5 in 3 of 4 samples
    u = uncertainty_summary(probs, None, Thresholds(0.5, 3, SIZE), diagnosis=1)
    np.testing.assert_allclose(u["std_map"][0, 0], np.std([0.9, 0.7, 0.3, 0.9]), rtol=1e-6)
    assert u["std_map"][5, 5] == 0
    assert u["image_probability_std"] == pytest.approx(np.std([0.9, 0.7, 0.3, 0.9]), rel=1e-6)
    assert u["diagnosis_agreement"] == 0.75
    aux = np.array([0.2, 0.4, 0.6, 0.8])
    u = uncertainty_summary(probs, aux, Thresholds(0.5, 3, SIZE, gate="aux"), diagnosis=0)
    assert u["image_probability_std"] == pytest.approx(np.std(aux)) and u["diagnosis_agreement"] == 0.5


@pytest.fixture(scope="module")
def dropout_run(tmp_path_factory):
    from ptx_keras.config import load_config, save_config

    run = tmp_path_factory.mktemp("run")
    cfg = load_config(extra={"model": {"name": "fc_densenet56"}, "data": {"image_size": SIZE, "channels": 1}})
    save_config(cfg, str(run / "config.yaml"))
    dropout_fc().save(str(run / "best.keras"))
    folder = run / "images"
    folder.mkdir()
    for i, size in enumerate([(40, 30), (16, 16), (64, 48)]):
        Image.fromarray((np.random.default_rng(i).random(size) * 255).astype(np.uint8)).save(folder / f"im{i}.png")
    return run, folder


def test_predict_writes_uncertainty_maps_and_columns_and_keeps_the_prediction(dropout_run, tmp_path):
    from ptx_keras.cli.predict import main as predict_main
    from ptx_keras.predict import UNCERTAINTY_PNG_SCALE, predict_paths

    run, folder = dropout_run
    plain = predict_paths([str(folder)], str(run), str(tmp_path / "plain"), overlays=False, progress=False)
    assert plain["uncertainty"] is None and plain["uncertainty_dir"] is None
    assert (
        predict_main(
            [
                str(folder),
                "--model",
                str(run),
                "--output",
                str(tmp_path / "mc"),
                "--uncertainty",
                "mc_dropout",
                "--samples",
                "5",
                "--no-overlays",
                "--no-progress",
            ]
        )
        == 0
    )
    a = pd.read_csv(plain["predictions"])
    b = pd.read_csv(tmp_path / "mc" / "predictions.csv")
    pd.testing.assert_frame_equal(a[["diagnosis", "score", "area_px"]], b[["diagnosis", "score", "area_px"]])
    assert a["uncertainty_map"].isna().all()
    assert b["image_probability_std"].between(0, 0.5).all() and b["diagnosis_agreement"].between(0, 1).all()
    for row in b.itertuples():
        std = np.asarray(Image.open(tmp_path / "mc" / row.uncertainty_map))
        assert std.shape == (row.height, row.width) and std.dtype == np.uint8
    assert np.asarray(Image.open(tmp_path / "mc" / b.loc[0, "uncertainty_map"])).max() > 0  # dropout varies it
    s = predict_paths([str(folder)], str(run), str(tmp_path / "tta"), overlays=False, progress=False, uncertainty="tta")
    assert s["uncertainty"]["method"] == "tta" and s["uncertainty"]["samples"] == 2
    assert f"{UNCERTAINTY_PNG_SCALE:g} x std" in s["uncertainty"]["map"]


def test_uncertainty_invalid_requests(dropout_run, tmp_path):
    from ptx_keras.errors import ConfigError
    from ptx_keras.predict import predict_paths

    run, folder = dropout_run
    kw = dict(overlays=False, progress=False)
    with pytest.raises(ConfigError, match="samples"):
        predict_paths([str(folder)], str(run), str(tmp_path / "a"), uncertainty="tta", samples=1, **kw)
    with pytest.raises(ConfigError, match="only with uncertainty"):
        predict_paths([str(folder)], str(run), str(tmp_path / "b"), samples=4, **kw)
    with pytest.raises(ConfigError, match="uncertainty method"):
        predict_paths([str(folder)], str(run), str(tmp_path / "c"), uncertainty="bayes", **kw)
    # A model without dropout (the bright-pixel model of the prediction tests) cannot give MC-dropout samples.
    from ptx_keras.config import load_config, save_config

    from tiny import bright_is_ptx_model

    nodrop = tmp_path / "nodrop"
    nodrop.mkdir()
    save_config(
        load_config(extra={"model": {"name": "bright"}, "data": {"image_size": 32, "channels": 1}}),
        str(nodrop / "config.yaml"),
    )
    bright_is_ptx_model().save(str(nodrop / "best.keras"))
    with pytest.raises(ConfigError, match="has none"):
        predict_paths([str(folder)], str(nodrop), str(tmp_path / "d"), uncertainty="mc_dropout", **kw)
    assert not os.path.exists(tmp_path / "d" / "uncertainty")
