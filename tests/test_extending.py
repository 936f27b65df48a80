"""The FC-DenseNet builder's extension points: `dense_layer` (DenseBlock, FCDenseNet) and `dense_block` (FCDenseNet).

A user's registered layer class replaces `DenseLayer` or `DenseBlock`; the model is built, saved to `.keras` and
reloaded with identical outputs. docs/extending.md shows the same from the user's side (run by
tests/test_docs_examples.py).
"""

import keras
import numpy as np
import pytest
from keras import ops

from ptx_keras import build_model
from ptx_keras.layers import DenseBlock, DenseLayer
from ptx_keras.layers.dense_block import resolve_layer_class
from ptx_keras.models import FCDenseNet

TINY = dict(input_shape=(8, 8, 1), layers_per_block=[1, 1, 1], growth_rate=2, first_conv_filters=4, dropout_rate=0.0)


@keras.saving.register_keras_serializable(package="ptx_keras_tests")
class ReluDenseLayer(DenseLayer):
    """DenseLayer with ReLU instead of ELU (and no dropout): the smallest useful replacement."""

    def call(self, inputs, training=None):
        x = ops.concatenate(list(inputs), axis=-1)
        x = self.conv(ops.relu(self.norm(x, training=training)))
        return x if self.attention is None else self.attention(x)


@keras.saving.register_keras_serializable(package="ptx_keras_tests")
class ScaledDenseBlock(DenseBlock):
    """DenseBlock whose output is halved: a block class of one's own with DenseBlock's arguments."""

    def call(self, inputs, training=None):
        return 0.5 * super().call(inputs, training=training)


class UnregisteredLayer(DenseLayer):
    pass


def _round_trip(model, x, path):
    expected = ops.convert_to_numpy(model(x, training=False))
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(ops.convert_to_numpy(reloaded(x, training=False)), expected)
    return reloaded


def test_dense_block_builds_the_given_layer_class():
    block = DenseBlock(2, 3, dense_layer=ReluDenseLayer)
    y = block(np.ones((1, 4, 4, 5), np.float32))
    assert tuple(y.shape) == (1, 4, 4, 5 + 2 * 3)
    assert all(type(layer) is ReluDenseLayer for layer in block.dense_layers)
    assert block.get_config()["dense_layer"] == "ptx_keras_tests>ReluDenseLayer"


def test_dense_block_takes_the_registered_name():
    block = DenseBlock(1, 2, dense_layer="ptx_keras_tests>ReluDenseLayer")
    assert block.dense_layer is ReluDenseLayer


def test_dense_block_default_config_has_no_dense_layer_key():
    # Files saved before the extension point existed have no such key, and plain blocks keep writing none.
    assert "dense_layer" not in DenseBlock(1, 2).get_config()


def test_dense_block_config_round_trip_keeps_the_class():
    block = DenseBlock(2, 3, scse=True, dense_layer=ReluDenseLayer)
    clone = DenseBlock.from_config(block.get_config())
    assert clone.dense_layer is ReluDenseLayer
    assert clone.get_config() == block.get_config()


@pytest.mark.parametrize(
    "value, message",
    [
        (UnregisteredLayer, "must be registered"),
        (keras.layers.Dense, "must be registered"),
        ("ptx_keras_tests>NoSuchLayer", "must be a keras.layers.Layer subclass"),
        (np.mean, "must be a keras.layers.Layer subclass"),
        (DenseLayer(2), "must be a keras.layers.Layer subclass"),  # an instance, not a class
    ],
)
def test_invalid_layer_classes_are_refused(value, message):
    with pytest.raises(ValueError, match=message):
        DenseBlock(1, 2, dense_layer=value)
    with pytest.raises(ValueError, match=message):
        FCDenseNet(**TINY, dense_block=value)
    with pytest.raises(ValueError, match=message):
        FCDenseNet(**TINY, dense_layer=value)


def test_resolve_layer_class_default_for_none():
    assert resolve_layer_class("dense_layer", None, DenseLayer) is DenseLayer


def test_fc_densenet_with_own_dense_layer_round_trips(tmp_path, rng):
    model = FCDenseNet(**TINY, scse=True, dense_layer=ReluDenseLayer)
    layers = [layer for block in model.layers if isinstance(block, DenseBlock) for layer in block.dense_layers]
    assert len(layers) == 3 and all(type(layer) is ReluDenseLayer for layer in layers)
    x = rng.random((2, 8, 8, 1)).astype("float32")
    reloaded = _round_trip(model, x, tmp_path / "relu.keras")
    assert type(reloaded.get_layer("bottleneck").dense_layers[0]) is ReluDenseLayer


def test_fc_densenet_with_own_dense_block_round_trips(tmp_path, rng):
    model = FCDenseNet(**TINY, dense_block=ScaledDenseBlock)
    assert [type(layer) for layer in model.layers if isinstance(layer, DenseBlock)] == [ScaledDenseBlock] * 3
    x = rng.random((2, 8, 8, 1)).astype("float32")
    reloaded = _round_trip(model, x, tmp_path / "scaled.keras")
    assert type(reloaded.get_layer("up_block_0")) is ScaledDenseBlock


def test_own_dense_block_changes_the_output():
    # Same seed and weights layout: only the block's halving differs.
    keras.utils.set_random_seed(1)
    plain = FCDenseNet(**TINY)
    keras.utils.set_random_seed(1)
    scaled = FCDenseNet(**TINY, dense_block=ScaledDenseBlock)
    scaled.set_weights(plain.get_weights())
    x = np.random.default_rng(0).random((1, 8, 8, 1)).astype("float32")
    assert not np.allclose(ops.convert_to_numpy(plain(x)), ops.convert_to_numpy(scaled(x)))


def test_presets_take_the_extension_points():
    model = build_model(
        "ms_scse_fc_densenet103", **TINY, multiscale_filters=2, dense_layer="ptx_keras_tests>ReluDenseLayer"
    )
    assert type(model.get_layer("down_block_0").dense_layers[0]) is ReluDenseLayer
    assert model.get_layer("down_block_0").dense_layers[0].attention is not None  # scSE still per layer
