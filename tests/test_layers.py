"""Tests of ptx_keras.layers: shapes, hand-computed values, argument checks and serialisation."""

import keras
import numpy as np
import pytest

from ptx_keras.errors import ModelError
from ptx_keras.layers import (
    DenseBlock,
    DenseLayer,
    InputSizeCheck,
    MultiScaleConv2D,
    SCSEBlock,
    TransitionDown,
    TransitionUp,
    check_spatial_size,
)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _trainable(layer):
    return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


def _round_trip(layer, x, tmp_path):
    """Wraps `layer` in a model, checks from_config and a .keras save/load; returns the output."""
    inputs = keras.Input(shape=x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    expected = model(x, training=False)

    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    path = tmp_path / f"{layer.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: the layers are registered
    np.testing.assert_allclose(loaded(x, training=False), expected, rtol=1e-6, atol=1e-6)
    return np.asarray(expected)


# --- SCSEBlock ---------------------------------------------------------------------------------------


def _scse_reference(u, layer):
    ws, bs = [np.asarray(w) for w in layer.spatial_conv.weights]
    w2, b2 = [np.asarray(w) for w in layer.squeeze.weights]
    w1, b1 = [np.asarray(w) for w in layer.excite.weights]
    q = _sigmoid(u @ ws[0, 0] + bs)  # eq. 3: 1x1 conv to one channel
    z = u.mean(axis=(1, 2), keepdims=True)  # g(U)
    s = _sigmoid(np.maximum(z @ w2 + b2, 0) @ w1 + b1)  # eq. 4
    return u * q, u * s


@pytest.mark.parametrize("fusion", ["add", "max"])
def test_scse_matches_equations(fusion, rng):
    u = rng.normal(size=(2, 5, 6, 8)).astype("float32")
    layer = SCSEBlock(reduction=2, fusion=fusion)
    out = np.asarray(layer(u))
    sse, cse = _scse_reference(u, layer)
    expected = sse + cse if fusion == "add" else np.maximum(sse, cse)  # eq. 2
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_scse_with_zero_weights_halves_each_branch():
    layer = SCSEBlock()
    u = np.full((1, 4, 4, 6), 3.0, "float32")
    layer.build(u.shape)
    for w in layer.weights:
        w.assign(np.zeros(w.shape))
    # Both gates are sigmoid(0) = 0.5: add gives 0.5 U + 0.5 U = U, max gives 0.5 U.
    np.testing.assert_allclose(layer(u), u)
    layer_max = SCSEBlock(fusion="max")
    layer_max.build(u.shape)
    for w in layer_max.weights:
        w.assign(np.zeros(w.shape))
    np.testing.assert_allclose(layer_max(u), 0.5 * u)


def test_scse_parameter_count_and_shape():
    layer = SCSEBlock(reduction=2)
    out = layer(np.zeros((2, 8, 8, 12), "float32"))
    assert out.shape == (2, 8, 8, 12)
    # sSE 12 + 1, Dense 12 -> 6: 72 + 6, Dense 6 -> 12: 72 + 12.
    assert _trainable(layer) == 13 + 78 + 84
    no_bias = SCSEBlock(reduction=4, use_bias=False)
    no_bias(np.zeros((1, 4, 4, 12), "float32"))
    assert _trainable(no_bias) == 12 + 12 * 3 + 3 * 12
    assert layer.compute_output_shape((None, 8, 8, 12)) == (None, 8, 8, 12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"reduction": 0}, "reduction=0"),
        ({"reduction": 1.5}, "reduction=1.5"),
        ({"fusion": "mul"}, "fusion='mul'"),
        ({"use_bias": "yes"}, "use_bias='yes'"),
    ],
)
def test_scse_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SCSEBlock(**kwargs)


def test_scse_needs_known_channels():
    with pytest.raises(ValueError, match="channel"):
        SCSEBlock().build((None, 8, 8, None))


def test_scse_round_trip(tmp_path, rng):
    x = rng.random((2, 8, 8, 6)).astype("float32")
    _round_trip(SCSEBlock(reduction=3, fusion="max", name="scse"), x, tmp_path)


def _kernel_initializers(layer):
    return {
        name: type(sub.kernel_initializer).__name__
        for name, sub in (("sse", layer.spatial_conv), ("squeeze", layer.squeeze), ("excite", layer.excite))
    }


def test_scse_kernels_are_he_uniform_and_configurable():
    layer = SCSEBlock()
    layer.build((None, 8, 8, 6))
    assert _kernel_initializers(layer) == dict.fromkeys(("sse", "squeeze", "excite"), "HeUniform")
    assert layer.get_config()["kernel_initializer"]["class_name"] == "HeUniform"
    glorot = SCSEBlock(kernel_initializer="glorot_uniform")
    glorot.build((None, 8, 8, 6))
    assert set(_kernel_initializers(glorot).values()) == {"GlorotUniform"}
    # Each sublayer gets its own instance: a seeded initializer shared by the three would repeat values.
    seeded = SCSEBlock(kernel_initializer=keras.initializers.HeUniform(seed=1))
    seeded.build((None, 4, 4, 4))
    squeeze, excite = np.asarray(seeded.squeeze.kernel), np.asarray(seeded.excite.kernel)
    assert not np.allclose(squeeze.ravel()[:4], excite.ravel()[:4])
    with pytest.raises(ValueError, match="nope"):
        SCSEBlock(kernel_initializer="nope")


def test_scse_saved_without_kernel_initializer_still_loads(tmp_path, rng):
    """A .keras file written before `kernel_initializer` existed (no such key) loads with the default."""
    import json
    import zipfile

    x = rng.random((2, 8, 8, 6)).astype("float32")
    inputs = keras.Input(shape=(8, 8, 6))
    model = keras.Model(inputs, SCSEBlock(name="scse")(inputs))
    expected = model(x)
    new, old = tmp_path / "new.keras", tmp_path / "old.keras"
    model.save(new)
    with zipfile.ZipFile(new) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                (layer,) = [lay for lay in config["config"]["layers"] if lay["class_name"] == "SCSEBlock"]
                del layer["config"]["kernel_initializer"]
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    loaded = keras.saving.load_model(old)
    assert type(loaded.get_layer("scse").kernel_initializer).__name__ == "HeUniform"
    np.testing.assert_allclose(loaded(x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["ms_scse_fc_densenet103", "ms_scse_unet"])
def test_every_kernel_of_the_papers_models_is_he_uniform(name):
    """Paper: HeUniform initialisation of the network, scSE included (full architecture, 32 x 32 input)."""
    from ptx_keras.models import build_model

    model = build_model(name, input_shape=(32, 32, 3))
    with_kernel = []
    # _flatten_layers walks custom layers' sublayers too; Keras has no public recursive equivalent.
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if hasattr(layer, "kernel_initializer"):  # Conv2D, Dense, Conv2DTranspose and the custom layers
            assert isinstance(layer.kernel_initializer, keras.initializers.HeUniform), layer.path
        if getattr(layer, "kernel", None) is not None:
            with_kernel.append(layer)
    kernels = [v for v in model.trainable_variables if v.name == "kernel"]
    assert len(with_kernel) == len(kernels)  # every kernel belongs to a layer checked above
    assert {type(layer).__name__ for layer in with_kernel} >= {"Conv2D", "Dense"}
    blocks = [layer for layer in model._flatten_layers() if isinstance(layer, SCSEBlock)]
    assert blocks and all(
        any(sub is checked for checked in with_kernel) for b in blocks for sub in (b.spatial_conv, b.squeeze, b.excite)
    )


# --- MultiScaleConv2D --------------------------------------------------------------------------------


def test_multiscale_shapes_and_parameters():
    layer = MultiScaleConv2D(16)
    out = layer(np.zeros((2, 16, 16, 3), "float32"))
    assert out.shape == (2, 16, 16, 48)
    # 3x3, 5x5 and 7x7 branches of 16 filters on 3 channels, with biases.
    assert _trainable(layer) == (9 + 25 + 49) * 3 * 16 + 3 * 16
    assert layer.compute_output_shape((None, None, None, 1)) == (None, None, None, 48)


def test_multiscale_branches_have_their_receptive_fields():
    layer = MultiScaleConv2D(1, kernel_sizes=(3, 5, 7), kernel_initializer="ones", use_bias=False)
    out = np.asarray(layer(np.ones((1, 16, 16, 2), "float32")))
    # At the centre each branch sums k * k taps over 2 channels; at the corner only the in-image taps.
    np.testing.assert_allclose(out[0, 8, 8], [18, 50, 98])
    np.testing.assert_allclose(out[0, 0, 0], [2 * 4, 2 * 9, 2 * 16])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"filters": 0}, "filters=0"),
        ({"filters": 4, "kernel_sizes": ()}, "kernel_sizes"),
        ({"filters": 4, "kernel_sizes": (3, 4)}, "odd"),
        ({"filters": 4, "kernel_sizes": (3, -1)}, "kernel_sizes=-1"),
        ({"filters": 4, "use_bias": 1}, "use_bias=1"),
    ],
)
def test_multiscale_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiScaleConv2D(**kwargs)


def test_multiscale_round_trip(tmp_path, rng):
    x = rng.random((2, 8, 8, 1)).astype("float32")
    out = _round_trip(MultiScaleConv2D(2, kernel_sizes=(1, 3), name="ms"), x, tmp_path)
    assert out.shape == (2, 8, 8, 4)


# --- Dense layer and block ---------------------------------------------------------------------------


def test_dense_layer_outputs_only_new_maps():
    layer = DenseLayer(growth_rate=4, dropout_rate=0.0)
    out = layer(np.zeros((2, 8, 8, 6), "float32"))
    assert out.shape == (2, 8, 8, 4)
    # BN gamma/beta 2 * 6, 3x3 conv 6 -> 4 with bias.
    assert _trainable(layer) == 12 + 9 * 6 * 4 + 4
    assert layer.compute_output_shape([(None, 8, 8, 2), (None, 8, 8, 4)]) == (None, 8, 8, 4)


def test_dense_layer_list_input_equals_concatenated_input(rng):
    a = rng.random((2, 8, 8, 3)).astype("float32")
    b = rng.random((2, 8, 8, 2)).astype("float32")
    layer = DenseLayer(growth_rate=3, scse=True)
    np.testing.assert_allclose(layer([a, b]), layer(np.concatenate([a, b], axis=-1)), rtol=1e-6)


def test_dense_layer_with_scse_adds_its_parameters():
    plain = DenseLayer(growth_rate=12)
    plain(np.zeros((1, 4, 4, 8), "float32"))
    with_scse = DenseLayer(growth_rate=12, scse=True)
    with_scse(np.zeros((1, 4, 4, 8), "float32"))
    assert _trainable(with_scse) - _trainable(plain) == 175


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"growth_rate": 0}, "growth_rate=0"),
        ({"growth_rate": 4, "dropout_rate": 1.0}, "dropout_rate=1.0"),
        ({"growth_rate": 4, "dropout_rate": -0.1}, "dropout_rate=-0.1"),
        ({"growth_rate": 4, "scse": "yes"}, "scse='yes'"),
        ({"growth_rate": 4, "scse_fusion": "sum"}, "scse_fusion='sum'"),
        ({"growth_rate": 4, "scse_reduction": 0}, "scse_reduction=0"),
        ({"growth_rate": 4, "memory_efficient": None}, "memory_efficient=None"),
    ],
)
def test_dense_layer_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DenseLayer(**kwargs)


@pytest.mark.parametrize("return_new_only, channels", [(False, 5 + 3 * 4), (True, 3 * 4)])
def test_dense_block_shapes(return_new_only, channels):
    block = DenseBlock(3, 4, return_new_only=return_new_only)
    out = block(np.zeros((2, 8, 8, 5), "float32"))
    assert out.shape == (2, 8, 8, channels)
    assert block.compute_output_shape((None, 8, 8, 5)) == (None, 8, 8, channels)
    # Layer i sees 5 + 4 i channels: BN 2 c, conv 9 c 4 + 4.
    assert _trainable(block) == sum(2 * c + 36 * c + 4 for c in (5, 9, 13))


def test_dense_block_concatenates_input_first(rng):
    x = rng.random((1, 4, 4, 3)).astype("float32")
    out = np.asarray(DenseBlock(2, 2)(x))
    np.testing.assert_allclose(out[..., :3], x)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_layers": 0, "growth_rate": 4}, "num_layers=0"),
        ({"num_layers": 2, "growth_rate": -1}, "growth_rate=-1"),
        ({"num_layers": 2, "growth_rate": 4, "return_new_only": "no"}, "return_new_only='no'"),
    ],
)
def test_dense_block_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DenseBlock(**kwargs)


def test_dense_block_round_trip(tmp_path, rng):
    x = rng.random((2, 8, 8, 3)).astype("float32")
    block = DenseBlock(2, 3, return_new_only=True, scse=True, scse_fusion="max", name="block")
    _round_trip(block, x, tmp_path)


def test_dense_layer_round_trip(tmp_path, rng):
    x = rng.random((2, 8, 8, 3)).astype("float32")
    _round_trip(DenseLayer(3, memory_efficient=True, name="dense_layer"), x, tmp_path)


@pytest.mark.parametrize("layer_class", ["dense", "transition"])
def test_dropout_drops_the_rate_and_rescales(layer_class):
    # Both layers draw their own dropout mask (so that a recomputation can reuse it): check that it
    # behaves as inverted dropout: about `rate` of the values zeroed, the rest scaled by 1 / (1 - rate),
    # the mean kept, a new mask per call, and no dropout at inference.
    rate = 0.25
    if layer_class == "dense":
        layer = DenseLayer(64, dropout_rate=rate, kernel_initializer="ones")
        layer.build((4, 16, 16, 1))
    else:
        layer = TransitionDown(dropout_rate=rate, kernel_initializer="ones")
        layer.pool = keras.layers.Identity()  # look at the dropout output itself
        layer.build((4, 16, 16, 64))
    x = np.ones((4, 16, 16, 1 if layer_class == "dense" else 64), "float32")
    # A constant input gives BN output 0 and ELU 0; the bias makes the convolution output constant.
    layer.conv.bias.assign(np.full(layer.conv.bias.shape, 2.0, "float32"))
    first = np.asarray(layer(x, training=True))
    second = np.asarray(layer(x, training=True))
    assert set(np.unique(first)) <= {0.0, np.float32(2.0 / (1 - rate))}
    assert abs((first == 0).mean() - rate) < 0.02
    assert abs(first.mean() - 2.0) < 0.1
    assert (first != second).any()
    # Inference: no dropout (BN now uses its moving statistics, so the values are no longer 2).
    inference = np.asarray(layer(x, training=False))
    assert (inference > 0).all()
    np.testing.assert_array_equal(layer(x, training=False), inference)


# --- Transitions -------------------------------------------------------------------------------------


def test_transition_down_halves_and_keeps_channels():
    layer = TransitionDown()
    out = layer(np.zeros((2, 8, 6, 10), "float32"))
    assert out.shape == (2, 4, 3, 10)
    assert _trainable(layer) == 2 * 10 + 10 * 10 + 10
    assert layer.compute_output_shape((None, 8, 6, 10)) == (None, 4, 3, 10)


def test_transition_down_pools_the_maximum():
    layer = TransitionDown(dropout_rate=0.0, kernel_initializer="ones")
    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    layer.build(x.shape)
    # Inference BN with fresh statistics is x / sqrt(1 + eps); ELU keeps these non-negative values; the
    # 1x1 conv (weight 1, bias 0) is the identity; so each 2x2 window gives its bottom-right pixel.
    out = np.asarray(layer(x, training=False))
    expected = x[:, 1::2, 1::2, :] / np.sqrt(1.0 + layer.norm.epsilon)
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_transition_up_doubles():
    layer = TransitionUp()
    out = layer(np.zeros((2, 4, 5, 6), "float32"))
    assert out.shape == (2, 8, 10, 6)
    assert _trainable(layer) == 9 * 6 * 6 + 6
    assert TransitionUp(filters=3).compute_output_shape((None, None, 4, 6)) == (None, None, 8, 3)


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (TransitionDown, {"dropout_rate": 2}, "dropout_rate=2"),
        (TransitionDown, {"memory_efficient": "no"}, "memory_efficient='no'"),
        (TransitionUp, {"filters": 0}, "filters=0"),
        (TransitionUp, {"filters": "many"}, "filters='many'"),
    ],
)
def test_transition_invalid_arguments(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_transitions_round_trip(tmp_path, rng):
    x = rng.random((2, 8, 8, 4)).astype("float32")
    _round_trip(TransitionDown(name="td"), x, tmp_path)
    _round_trip(TransitionDown(memory_efficient=True, name="td_me"), x, tmp_path)
    _round_trip(TransitionUp(filters=2, name="tu"), x, tmp_path)


# --- Input size check --------------------------------------------------------------------------------


def test_check_spatial_size_message():
    with pytest.raises(ModelError, match=r"height 100 is not divisible by 32 \(5 poolings\); use e.g. 96 or 128"):
        check_spatial_size(100, 96, 5)
    with pytest.raises(ModelError, match=r"width 20 is not divisible by 32 .* use e.g. 32\.$"):
        check_spatial_size(64, 20, 5)
    check_spatial_size(None, 64, 5)  # unknown sizes pass; no exception means accepted


def test_input_size_check_refuses_at_build_and_call():
    with pytest.raises(ModelError, match="height 40 is not divisible by 16"):
        InputSizeCheck(4)(keras.Input(shape=(40, 32, 1)))
    inputs = keras.Input(shape=(None, None, 1))
    model = keras.Model(inputs, InputSizeCheck(4)(inputs))
    np.testing.assert_array_equal(model(np.ones((1, 32, 48, 1), "float32")), np.ones((1, 32, 48, 1)))
    with pytest.raises(ModelError, match="width 40 is not divisible by 16"):
        model(np.ones((1, 32, 40, 1), "float32"))
    with pytest.raises(ValueError, match="num_pools=-1"):
        InputSizeCheck(-1)


def test_input_size_check_round_trip(tmp_path, rng):
    x = rng.random((1, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(_round_trip(InputSizeCheck(3, name="check"), x, tmp_path), x)


# --- SCSEBlock's fast formulation against the literal one ---------------------------------------------------


def _scse_literal(layer, u):
    """Eq. 2-4 written as before the speed-up: the 1x1 Conv2D sublayer called, two products, then the fusion."""
    from keras import ops

    u_sse = u * layer.spatial_conv(u)
    u_cse = u * layer.excite(layer.squeeze(ops.mean(u, axis=(1, 2), keepdims=True)))
    return u_sse + u_cse if layer.fusion == "add" else ops.maximum(u_sse, u_cse)


@pytest.mark.parametrize("fusion, use_bias", [("add", True), ("add", False), ("max", True)])
def test_scse_fast_path_equals_literal_equations_with_gradients(fusion, use_bias, rng):
    import tensorflow as tf

    layer = SCSEBlock(fusion=fusion, use_bias=use_bias)
    u = tf.constant(rng.normal(size=(2, 5, 6, 8)).astype("float32"))
    layer.build(u.shape)
    if use_bias:  # non-zero biases, so that their gradients are compared too
        for var in (layer.spatial_conv.bias, layer.squeeze.bias, layer.excite.bias):
            var.assign(rng.normal(size=var.shape).astype("float32"))
    weights = rng.normal(size=(2, 5, 6, 8)).astype("float32")
    results = []
    for fn in (layer, lambda x: _scse_literal(layer, x)):
        with tf.GradientTape() as tape:
            tape.watch(u)
            y = fn(u)
            loss = tf.reduce_sum(y * weights)
        results.append([y, *tape.gradient(loss, [u, *layer.trainable_variables])])
    assert len(results[0]) == 2 + (6 if use_bias else 3)
    for fast, literal in zip(*results):
        np.testing.assert_allclose(fast, literal, rtol=1e-5, atol=1e-5)


def test_scse_fast_path_under_mixed_precision(rng):
    layer = SCSEBlock(dtype="mixed_float16")
    u = rng.normal(size=(1, 4, 4, 6)).astype("float32")
    out = layer(u)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    np.testing.assert_allclose(
        np.asarray(out, "float32"), np.asarray(_scse_literal(layer, u), "float32"), rtol=1e-2, atol=1e-2
    )
