"""Tests of the FC-DenseNet / U-Net family: exact parameter counts, shapes, input refusal, presets,
serialisation, mixed precision and the memory-efficient (rematerialised) dense layers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ptx_keras.errors import ModelError
from ptx_keras.layers import DenseLayer, SCSEBlock, TransitionDown
from ptx_keras.models import FCDenseNet, UNet, build_model, count_parameters, list_models

import tiny

PAPER_FC_DENSENET = 5_415_278
PAPER_UNET = 7_764_098
SCSE_PER_K12_LAYER = 13 + 78 + 84  # sSE 1x1 conv 12 -> 1, Dense 12 -> 6, Dense 6 -> 12 (with biases)
FC_DENSENET103_LAYERS = 4 + 5 + 7 + 10 + 12 + 15 + 12 + 10 + 7 + 5 + 4
MULTISCALE_EXTRA = (9 + 25 + 49) * 3 * 16 + 48 - (9 * 3 * 48 + 48)  # 3/5/7 branches instead of one 3x3 conv

TINY = tiny.MODELS


def _unet_params(base=32, depth=4, channels=3, classes=2, batch_norm=True):
    """Hand count: two 3x3 convs (+ BN gamma/beta) per level, 2x2 transposed convs up, 1x1 head."""

    def conv(cin, cout, k=3):
        return k * k * cin * cout + cout + (2 * cout if batch_norm else 0)

    total, cin = 0, channels
    for i in range(depth + 1):
        f = base * 2**i
        total += conv(cin, f) + conv(f, f)
        cin = f
    for i in reversed(range(depth)):
        f = base * 2**i
        total += 2 * 2 * cin * f + f  # transposed conv, no BN
        total += conv(2 * f, f) + conv(f, f)
        cin = f
    return total + cin * classes + classes


@pytest.mark.slow
def test_fc_densenet103_has_exactly_the_papers_parameters():
    model = build_model("fc_densenet103", input_shape=(None, None, 3), num_classes=2)
    assert count_parameters(model) == (PAPER_FC_DENSENET, 5_494_886)


def test_unet_within_a_thousandth_of_the_paper():
    model = build_model("unet", input_shape=(None, None, 3))
    trainable, _ = count_parameters(model)
    assert trainable == _unet_params() == 7_766_018
    assert abs(trainable - PAPER_UNET) / PAPER_UNET < 1e-3
    no_bn, _ = count_parameters(UNet(input_shape=(None, None, 3), batch_norm=False))
    assert no_bn == _unet_params(batch_norm=False) == 7_760_130  # docs/architecture.md, U-Net notes


@pytest.mark.slow
def test_ms_scse_fc_densenet103_breakdown():
    model = build_model("ms_scse_fc_densenet103", input_shape=(None, None, 3))
    trainable, _ = count_parameters(model)
    assert trainable == PAPER_FC_DENSENET + MULTISCALE_EXTRA + FC_DENSENET103_LAYERS * SCSE_PER_K12_LAYER
    assert trainable == 5_433_891


def test_ms_scse_unet_adds_the_papers_scse_difference():
    plain, _ = count_parameters(build_model("unet", input_shape=(None, None, 3), batch_norm=False))
    scse_only, _ = count_parameters(build_model("unet", input_shape=(None, None, 3), batch_norm=False, scse=True))
    # The paper's MS_scSE_U-Net minus U-Net is 8,204,011 - 7,764,098 = 439,913: one scSE per conv block.
    assert scse_only - plain == 439_913
    both, _ = count_parameters(build_model("ms_scse_unet", input_shape=(None, None, 3), batch_norm=False))
    # Multi-scale: 3/5/7 branches of 16 (4,032) instead of 3 -> 32 (896), then 48 -> 32 instead of 32 -> 32.
    assert both - scse_only == (4032 - 896) + 9 * 16 * 32


def test_presets_are_registered():
    assert set(TINY) <= set(list_models())
    with pytest.raises(ModelError, match="Known models: .*fc_densenet103"):
        build_model("fc_densenet_99")


@pytest.mark.parametrize("name", sorted(TINY))
def test_preset_round_trip(name, tmp_path, rng):
    model = build_model(name, **TINY[name])
    x = rng.random((2, 32, 32, 3)).astype("float32")
    expected = model(x, training=False)
    assert expected.shape == (2, 32, 32, 2)
    np.testing.assert_allclose(np.sum(expected, axis=-1), 1.0, rtol=1e-5)

    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(x, training=False), expected, rtol=1e-5, atol=1e-6)

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # without custom_objects
    np.testing.assert_allclose(loaded(x, training=False), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("builder", [FCDenseNet, UNet])
def test_grayscale_and_rgb_inputs(builder, channels, rng):
    kwargs = dict(num_classes=3, input_shape=(None, None, channels))
    if builder is FCDenseNet:
        kwargs.update(
            layers_per_block=1,
            num_pools=3,
            growth_rate=2,
            first_conv_filters=4,
            multiscale=True,
            multiscale_filters=2,
            scse=True,
        )
    else:
        kwargs.update(base_filters=2, depth=3, multiscale=True, multiscale_filters=2, scse=True)
    model = builder(**kwargs)
    out = model(rng.random((1, 16, 24, channels)).astype("float32"))
    assert out.shape == (1, 16, 24, 3)


def test_fc_densenet_channel_bookkeeping():
    model = FCDenseNet(input_shape=(32, 32, 1), layers_per_block=[2, 3, 4], growth_rate=3, first_conv_filters=5)
    shapes = {layer.name: layer.output.shape for layer in model.layers}
    assert shapes["down_block_0"] == (None, 32, 32, 5 + 2 * 3)
    assert shapes["transition_down_0"] == (None, 16, 16, 11)
    assert shapes["bottleneck"] == (None, 16, 16, 3 * 3)  # new maps only
    assert shapes["transition_up_0"] == (None, 32, 32, 9)
    assert shapes["up_block_0"] == (None, 32, 32, 9 + 11 + 4 * 3)  # last up block: full stack
    assert model.get_layer("softmax").dtype_policy.name == "float32"


def test_scse_per_block_placement_adds_one_module_per_block():
    kwargs = dict(input_shape=(None, None, 3), layers_per_block=[1, 1, 1], growth_rate=4, first_conv_filters=8)
    plain, _ = count_parameters(FCDenseNet(**kwargs))
    model = FCDenseNet(scse=True, scse_placement="per_block", scse_fusion="max", **kwargs)
    per_block, _ = count_parameters(model)

    def scse(c):
        return c + 1 + c * (c // 2) + c // 2 + (c // 2) * c + c

    # Down block output 8 + 4 = 12; bottleneck new maps 4; last up block 4 + 12 + 4 = 20.
    assert per_block - plain == scse(12) + scse(4) + scse(20)
    assert [layer.name for layer in model.layers if "scse" in layer.name] == [
        "down_block_0_scse",
        "bottleneck_scse",
        "up_block_0_scse",
    ]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(input_shape=(100, 96, 3)),
            ModelError,
            r"height 100 is not divisible by 32 \(5 poolings\); use e.g. 96 or 128",
        ),
        (
            dict(input_shape=(64, 36, 3), num_pools=3, layers_per_block=1),
            ModelError,
            "width 36 is not divisible by 8 .*use e.g. 32 or 40",
        ),
        (dict(input_shape=(64, 64)), ModelError, "input_shape"),
        (dict(input_shape=(64, 64, 0)), ModelError, "channels"),
        (dict(growth_rate=0), ValueError, "growth_rate=0"),
        (dict(layers_per_block=[4, 5]), ValueError, "2 \\* num_pools \\+ 1"),
        (dict(layers_per_block=[1, 2, 1], num_pools=2), ValueError, "num_pools=2"),
        (dict(layers_per_block=0), ValueError, "layers_per_block=0"),
        (dict(num_pools=0, layers_per_block=2), ValueError, "num_pools=0"),
        (dict(first_conv_filters=-1), ValueError, "first_conv_filters=-1"),
        (dict(scse=True, scse_placement="everywhere"), ValueError, "scse_placement='everywhere'"),
        (dict(scse=True, scse_fusion="mean"), ValueError, "fusion='mean'"),
        (dict(multiscale=True, multiscale_kernel_sizes=(3, 6)), ValueError, "odd"),
        (dict(dropout_rate=1.5), ValueError, "dropout_rate=1.5"),
        (dict(num_classes=1), ValueError, "num_classes=1"),
        (dict(memory_efficient="yes"), ValueError, "memory_efficient='yes'"),
    ],
)
def test_fc_densenet_invalid_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        FCDenseNet(**{"growth_rate": 2, **kwargs})


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(input_shape=(40, 64, 3)),
            ModelError,
            "height 40 is not divisible by 16 \\(4 poolings\\); use e.g. 32 or 48",
        ),
        (dict(base_filters=0), ValueError, "base_filters=0"),
        (dict(depth=0), ValueError, "depth=0"),
        (dict(batch_norm="no"), ValueError, "batch_norm='no'"),
        (dict(scse=True, scse_reduction=0), ValueError, "reduction=0"),
        (dict(multiscale=True, multiscale_filters=0), ValueError, "filters=0"),
    ],
)
def test_unet_invalid_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        UNet(**{"base_filters": 2, **kwargs})


def test_unknown_override_is_refused():
    with pytest.raises(ModelError, match="growth_rte.*Accepted: .*growth_rate"):
        build_model("fc_densenet103", growth_rte=4)


def test_dynamic_input_refused_at_call_time(rng):
    model = build_model("fc_densenet56", input_shape=(None, None, 1), growth_rate=2, layers_per_block=1, num_pools=3)
    assert model(np.zeros((1, 24, 16, 1), "float32")).shape == (1, 24, 16, 2)
    with pytest.raises(ModelError, match="height 20 is not divisible by 8 \\(3 poolings\\); use e.g. 16 or 24"):
        model(np.zeros((1, 20, 16, 1), "float32"))
    with pytest.raises(ModelError, match="width 12 is not divisible by 8"):
        model.predict(np.zeros((1, 16, 12, 1), "float32"), verbose=0)


def test_mixed_precision_keeps_softmax_float32(rng):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for name in ("ms_scse_fc_densenet103", "ms_scse_unet"):
            model = build_model(name, **TINY[name])
            out = model(rng.random((1, 32, 32, 3)).astype("float32"), training=True)
            assert out.dtype == "float32"
            assert model.get_layer("logits").compute_dtype == "float16"
            assert np.all(np.isfinite(out))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _fc_pair(dropout_rate):
    kwargs = dict(
        input_shape=(16, 16, 3),
        layers_per_block=2,
        num_pools=2,
        growth_rate=3,
        first_conv_filters=4,
        scse=True,
        dropout_rate=dropout_rate,
    )
    # The same Python seed before each model gives their dropout seed generators the same states.
    keras.utils.set_random_seed(7)
    default = FCDenseNet(**kwargs)
    keras.utils.set_random_seed(7)
    efficient = FCDenseNet(memory_efficient=True, **kwargs)
    efficient.set_weights(default.get_weights())
    return default, efficient


def _training_step(model, x):
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = keras.ops.mean(keras.ops.square(out[..., 1] - 0.3))
    return out, tape.gradient(loss, model.trainable_weights)


@pytest.mark.parametrize("dropout_rate", [0.0, 0.2])
def test_memory_efficient_matches_default_outputs_gradients_and_statistics(rng, dropout_rate):
    # With dropout the recomputation must reuse the forward pass's masks, and both models draw the same.
    default, efficient = _fc_pair(dropout_rate=dropout_rate)
    x = rng.random((2, 16, 16, 3)).astype("float32")
    out_a, grads_a = _training_step(default, x)
    out_b, grads_b = _training_step(efficient, x)
    np.testing.assert_allclose(out_b, out_a, rtol=1e-5, atol=1e-6)
    scale = max(float(np.abs(g).max()) for g in grads_a)
    for ga, gb in zip(grads_a, grads_b):
        # Biases in front of a BatchNorm have zero true gradient; compare on the scale of all gradients.
        np.testing.assert_allclose(gb, ga, rtol=1e-4, atol=1e-5 * scale)
    # The recomputation must not move the BN moving averages a second time.
    for wa, wb in zip(default.weights, efficient.weights):
        np.testing.assert_allclose(wb, wa, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dropout_rate", [0.0, 0.2])
def test_memory_efficient_matches_default_in_a_compiled_training_step(rng, dropout_rate):
    # Training runs the step as a tf.function (keras.remat becomes tf.recompute_grad in a graph): the
    # outputs, all gradients and the BN moving statistics must still equal the default model's.
    default, efficient = _fc_pair(dropout_rate=dropout_rate)
    x = rng.random((2, 16, 16, 3)).astype("float32")
    out_a, grads_a = tf.function(lambda x: _training_step(default, x))(x)
    out_b, grads_b = tf.function(lambda x: _training_step(efficient, x))(x)
    np.testing.assert_allclose(out_b, out_a, rtol=1e-5, atol=1e-6)
    scale = max(float(np.abs(g).max()) for g in grads_a)
    assert scale > 0
    for ga, gb in zip(grads_a, grads_b):
        np.testing.assert_allclose(gb, ga, rtol=1e-4, atol=1e-5 * scale)
    for wa, wb in zip(default.weights, efficient.weights):
        np.testing.assert_allclose(wb, wa, rtol=1e-6, atol=1e-7)


def test_memory_efficient_recomputes_dense_layers_and_transitions_down(rng):
    _, efficient = _fc_pair(dropout_rate=0.2)
    layers = list(efficient._flatten_layers())
    recomputed = {id(layer.conv) for layer in layers if isinstance(layer, (DenseLayer, TransitionDown))}
    recomputed |= {id(layer.spatial_conv) for layer in layers if isinstance(layer, SCSEBlock)}
    calls = []
    original = keras.layers.Conv2D.call

    def counting_call(self, *args, **kwargs):
        calls.append(id(self))
        return original(self, *args, **kwargs)

    x = rng.random((1, 16, 16, 3)).astype("float32")
    keras.layers.Conv2D.call = counting_call
    try:
        efficient(x, training=True)
        forward = list(calls)
        calls.clear()
        _, grads = _training_step(efficient, x)
    finally:
        keras.layers.Conv2D.call = original
    # 5 blocks x 2 dense layers (each with an scSE convolution) and 2 transitions down: every one of
    # their convolutions runs again in the backward pass; the first convolution does not.
    assert len(recomputed) == 5 * 2 * 2 + 2
    assert sorted(forward) == sorted(set(forward))
    assert {c for c in calls if calls.count(c) == 2} == recomputed
    assert set(forward) - recomputed == {c for c in calls if calls.count(c) == 1}
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_every_kernel_of_the_papers_model_is_he_uniform():
    """Paper: the whole network is initialised with HeUniform, the scSE convolution and dense layers included."""
    import keras

    model = build_model("ms_scse_fc_densenet103", input_shape=(64, 64, 3))
    kernels = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        for attr in ("kernel_initializer", "depthwise_initializer", "pointwise_initializer"):
            init = getattr(layer, attr, None)
            if init is not None:
                kernels[f"{layer.path}.{attr}"] = type(keras.initializers.get(init)).__name__
    scse = [k for k in kernels if "scse" in k.lower()]
    assert len(kernels) > 100 and len(scse) >= 3 * 4 * 15, (len(kernels), len(scse))
    assert {k: v for k, v in kernels.items() if v != "HeUniform"} == {}
