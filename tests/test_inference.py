"""`ptx_keras.inference`: the TTA check, the input contract, mirror and gamma views, the dropout and batch-norm helpers of
MC dropout (expected values by hand; TTA's averages are tests/test_tta.py's, MC dropout's statistics
tests/test_uncertainty.py's)."""

import numpy as np
import pytest

import tiny


def test_one_tta_check_raises_the_callers_error_class():
    from ptx_keras.constants import TTA_MODES
    from ptx_keras.errors import ConfigError, ModelError
    from ptx_keras.inference import check_tta

    assert [check_tta(t) for t in TTA_MODES] == list(TTA_MODES)
    with pytest.raises(ModelError, match=r"tta must be one of \('none', 'hflip'\). Received: tta='vflip'"):
        check_tta("vflip")
    with pytest.raises(ConfigError, match="Received: tta=None"):
        check_tta(None, ConfigError)


def test_input_contract_reads_size_and_channels_once():
    import keras

    from ptx_keras.errors import ModelError
    from ptx_keras.inference import input_contract

    assert input_contract(tiny.small_fc(32, seed=3)) == (32, 1)
    free = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 1)])
    assert input_contract(free) == (None, 3)
    with pytest.raises(ModelError, match="fixed square input"):
        input_contract(free, "the export", fixed=True)
    oblong = keras.Sequential([keras.Input((8, 16, 1)), keras.layers.Conv2D(2, 1)])
    with pytest.raises(ModelError, match=r"square input .*input_shape=\(None, 8, 16, 1\)"):
        input_contract(oblong)


def test_flip_images_reverses_the_width_axis():
    from ptx_keras.inference import flip_images

    x = np.arange(12).reshape(1, 2, 3, 2)  # (batch, height, width, channels)
    out = flip_images(x)
    np.testing.assert_array_equal(out[0, :, :, 0], [[4, 2, 0], [10, 8, 6]])
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(flip_images(flip_images(x)), x)


def test_tta_gammas_by_hand():
    from ptx_keras.inference import TTA_GAMMA_MAX, tta_gammas

    assert TTA_GAMMA_MAX == 1.25
    assert tta_gammas(0) == [] and tta_gammas(1) == [1.0]
    # 4 pairs: 1, then 1.25^(-1/2), 1.25^(1/2), 1.25^(-1): alternately below and above 1, log-evenly spread.
    np.testing.assert_allclose(tta_gammas(4), [1.0, 0.894427191, 1.118033989, 0.8], rtol=1e-9)
    np.testing.assert_allclose(tta_gammas(3), [1.0, 0.8, 1.25], rtol=1e-12)


def _dropout_model():
    import keras

    inp = keras.Input((8, 8, 1))
    x = keras.layers.BatchNormalization(name="bn")(inp)
    x = keras.layers.Dropout(0.3, name="drop")(x)
    x = keras.layers.Dropout(0.0, name="no_drop")(x)
    return keras.Model(inp, keras.layers.Softmax()(keras.layers.Conv2D(2, 1)(x)), name="dropout_model")


def test_dropout_layers_finds_positive_rates_only():
    from ptx_keras.inference import dropout_layers

    assert [layer.name for layer in dropout_layers(_dropout_model())] == ["drop"]
    assert dropout_layers(tiny.bright_is_ptx_model()) == []


def test_batch_norm_frozen_restores_trainability():
    from ptx_keras.inference import batch_norm_frozen

    model = _dropout_model()
    bn = model.get_layer("bn")
    with batch_norm_frozen(model):
        assert bn.trainable is False
    assert bn.trainable is True
    bn.trainable = False  # a layer frozen before stays frozen
    with batch_norm_frozen(model):
        pass
    assert bn.trainable is False


def test_mc_dropout_needs_dropout():
    from ptx_keras.inference import mc_dropout_samples

    with pytest.raises(ValueError, match="MC dropout needs a model with dropout; bright_is_ptx has none"):
        mc_dropout_samples(tiny.bright_is_ptx_model(), np.zeros((1, tiny.BRIGHT_SIZE, tiny.BRIGHT_SIZE, 1)), 2)
