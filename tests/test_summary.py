"""Tests of ptx_keras.models.summary: hand-computed MACs per layer type, parameter counts, the table."""

import keras
import pytest

from ptx_keras.cli.summary import main
from ptx_keras.layers import SCSEBlock
from ptx_keras.models import build_model, count_macs, count_parameters, summary_table
from ptx_keras.models.summary import PAPER_ROW_OF_PRESET, layer_macs


def _single(layer, shape):
    inputs = keras.Input(shape=shape)
    return keras.Model(inputs, layer(inputs))


@pytest.mark.parametrize(
    "layer, shape, expected",
    [
        (keras.layers.Conv2D(4, 3, padding="same"), (8, 8, 3), 8 * 8 * 9 * 3 * 4),
        (keras.layers.Conv2D(4, 3), (8, 8, 3), 6 * 6 * 9 * 3 * 4),  # "valid": 6 x 6 outputs
        (keras.layers.Conv2D(4, 3, padding="same", dilation_rate=2), (8, 8, 3), 8 * 8 * 9 * 3 * 4),
        (keras.layers.Conv2D(4, 3, strides=2, padding="same"), (8, 8, 3), 4 * 4 * 9 * 3 * 4),
        (keras.layers.Conv2D(4, 1, groups=2), (8, 8, 4), 8 * 8 * 2 * 4),
        (keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same"), (4, 4, 2), 4 * 4 * 9 * 2 * 3),
        (keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (8, 8, 3), 8 * 8 * 9 * 3 * 2),
        (keras.layers.SeparableConv2D(4, 3, padding="same"), (8, 8, 3), 8 * 8 * (9 * 3 + 3 * 4)),
        (keras.layers.Dense(5), (10,), 50),
        (keras.layers.Dense(5), (7, 10), 7 * 50),
        (keras.layers.BatchNormalization(), (8, 8, 3), 0),  # not counted
    ],
)
def test_layer_macs_by_hand(layer, shape, expected):
    assert count_macs(_single(layer, shape)) == expected


def test_custom_layers_and_nested_models_are_counted():
    # scSE on 8 x 8 x 4: sSE 1x1 conv 8*8*4, Dense 4 -> 2 and 2 -> 4 on the pooled vector.
    scse = 8 * 8 * 4 + 4 * 2 + 2 * 4
    inner_in = keras.Input(shape=(8, 8, 3))
    inner = keras.Model(inner_in, keras.layers.Conv2D(4, 1)(inner_in), name="backbone")  # 8*8*3*4
    inputs = keras.Input(shape=(None, None, 3))
    model = keras.Model(inputs, SCSEBlock()(inner(inputs)))
    assert count_macs(model, (8, 8, 3)) == 8 * 8 * 3 * 4 + scse


def test_shared_layer_counts_each_call():
    conv = keras.layers.Conv2D(2, 1, use_bias=False)
    inputs = keras.Input(shape=(4, 4, 2))
    model = keras.Model(inputs, conv(conv(inputs)))
    assert count_macs(model) == 2 * (4 * 4 * 2 * 2)
    assert "call" not in conv.__dict__  # the recording wrapper is removed afterwards


def test_count_macs_needs_a_known_compatible_shape():
    inputs = keras.Input(shape=(None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
    with pytest.raises(ValueError, match="fully known input shape"):
        count_macs(model)
    assert count_macs(model, (4, 4, 3)) == 4 * 4 * 3 * 2
    fixed = _single(keras.layers.Conv2D(2, 1), (8, 8, 3))
    with pytest.raises(ValueError, match="built for inputs"):
        count_macs(fixed, (16, 16, 3))


def test_layer_macs_refuses_uncounted_types():
    with pytest.raises(TypeError, match="MaxPooling2D"):
        layer_macs(keras.layers.MaxPooling2D(), (1, 4, 4, 1), (1, 2, 2, 1))


def test_count_parameters_by_hand():
    inputs = keras.Input(shape=(4, 4, 3))
    x = keras.layers.Conv2D(2, 3)(inputs)  # 54 + 2
    outputs = keras.layers.BatchNormalization()(x)  # gamma, beta trainable; mean, variance not
    model = keras.Model(inputs, outputs)
    assert count_parameters(model) == (56 + 4, 56 + 8)


@pytest.mark.slow
def test_fc_densenet103_macs_at_256():
    model = build_model("fc_densenet103", input_shape=(None, None, 3))
    macs = count_macs(model, (256, 256, 3))
    assert abs(macs - 15.94e9) / 15.94e9 < 0.005
    # MACs scale with the pixel count: a quarter at 128 x 128.
    assert count_macs(model, (128, 128, 3)) * 4 == macs


def test_summary_table_columns_and_paper_values():
    table = summary_table(["fc_densenet56", "unet"], input_size=64, channels=1)
    assert list(table.columns) == [
        "preset",
        "trainable_params",
        "total_params",
        "gmacs",
        "paper_params",
        "paper_gflops",
    ]
    unet = table.set_index("preset").loc["unet"]
    assert unet.trainable_params == 7_766_018 - 2 * 9 * 32  # 1 input channel instead of 3
    assert unet.paper_params == 7_764_098 and unet.paper_gflops == 11.59
    assert table.set_index("preset").loc["fc_densenet56"].paper_params is __import__("pandas").NA
    assert PAPER_ROW_OF_PRESET["ms_scse_fc_densenet103"] == "MS_scSE_FC-DenseNet"


def test_main(capsys):
    assert main(["unet", "--input-size", "32", "--channels", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| preset | trainable_params |") and "| unet | 7,765,442 |" in out
    assert main(["no_such_model"]) == 2
    assert capsys.readouterr().err.startswith("error: Unknown model name: 'no_such_model'")
