"""The fused kernels of ptx_keras.ops against Keras' own layers, and the layers' fast path against the plain one.

Tolerances: the fused kernel sums the batch statistics in another order (and in one pass) than Keras'
`ops.moments`, so the two agree to float32 rounding, not bit for bit: outputs to ~1e-6 relative, and
gradients of gamma and beta, sums over every pixel of the batch, to ~1e-5 of their scale.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ptx_keras import ops as ptx_ops
from ptx_keras.layers import DenseLayer, TransitionDown
from ptx_keras.layers.dense_block import _normalize
from ptx_keras.models import FCDenseNet
from ptx_keras.training import set_bn_momentum

RTOL, ATOL = 1e-5, 1e-5


def _bn_pair(channels, momentum=0.99):
    """Two built BatchNormalization layers with the same random gamma, beta and moving statistics."""
    rng = np.random.default_rng(3)
    layers = []
    for _ in range(2):
        bn = keras.layers.BatchNormalization(momentum=momentum)
        bn.build((None, None, None, channels))
        layers.append(bn)
    values = [
        rng.normal(1.0, 0.3, channels),
        rng.normal(0.0, 0.3, channels),
        rng.normal(0.5, 0.2, channels),
        rng.uniform(0.5, 2.0, channels),
    ]
    for bn in layers:
        bn.set_weights([v.astype("float32") for v in values])
    return layers


def _grads(fn, x, variables):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        # A loss that weights every output differently, so every gradient term matters.
        y32 = tf.cast(y, tf.float32)
        loss = tf.reduce_sum(0.5 * tf.square(y32) + y32 * _weights(y.shape))
    return y, tape.gradient(loss, [x] + list(variables))


def _weights(shape):
    return tf.constant(np.random.default_rng(9).normal(size=shape).astype("float32"))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("implementation", ["dispatch", "keras"])
def test_batch_normalization_matches_keras_layer(rng, training, implementation):
    # `dispatch` is the TensorFlow fused kernel here; `keras` is the keras.ops path other backends take.
    fn = ptx_ops.batch_normalization if implementation == "dispatch" else ptx_ops.keras_batch_normalization
    reference, twin = _bn_pair(5)
    x = rng.normal(2.0, 3.0, (2, 6, 4, 5)).astype("float32")
    stats = {}

    def ours(x):
        y, stats["mean"], stats["variance"] = fn(
            x, twin.gamma, twin.beta, twin.moving_mean, twin.moving_variance, training, twin.epsilon
        )
        return y

    y_ref, g_ref = _grads(lambda x: reference(x, training=training), x, [reference.gamma, reference.beta])
    y, g = _grads(ours, x, [twin.gamma, twin.beta])
    np.testing.assert_allclose(y, y_ref, rtol=RTOL, atol=ATOL)
    for name, a, b in zip(("x", "gamma", "beta"), g, g_ref):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL * float(np.abs(b).max()), err_msg=name)
    if training:
        # The batch's mean and BIASED variance (the fused kernel's own is Bessel-corrected).
        np.testing.assert_allclose(stats["mean"], x.mean(axis=(0, 1, 2)), rtol=1e-5)
        np.testing.assert_allclose(stats["variance"], x.var(axis=(0, 1, 2)), rtol=1e-5)
    else:
        assert stats["mean"] is None and stats["variance"] is None


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("update_statistics", [True, False])
def test_normalize_updates_moving_statistics_as_keras(rng, training, update_statistics):
    reference, twin = _bn_pair(4, momentum=0.75)
    x = rng.normal(-1.0, 2.0, (3, 5, 5, 4)).astype("float32")
    before = twin.moving_mean.numpy().copy(), twin.moving_variance.numpy().copy()
    with ptx_ops.fused_ops(False):
        y_ref = _normalize(reference, x, training, update_statistics)
    with ptx_ops.fused_ops(True):
        y = _normalize(twin, x, training, update_statistics)
    np.testing.assert_allclose(y, y_ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(twin.moving_mean, reference.moving_mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(twin.moving_variance, reference.moving_variance, rtol=1e-6, atol=1e-7)
    if training and update_statistics:  # Keras: moving = momentum * moving + (1 - momentum) * batch (biased)
        np.testing.assert_allclose(twin.moving_mean, 0.75 * before[0] + 0.25 * x.mean(axis=(0, 1, 2)), rtol=1e-5)
        np.testing.assert_allclose(twin.moving_variance, 0.75 * before[1] + 0.25 * x.var(axis=(0, 1, 2)), rtol=1e-5)
    else:  # inference and recomputations leave them alone
        np.testing.assert_array_equal(twin.moving_mean, before[0])
        np.testing.assert_array_equal(twin.moving_variance, before[1])


def test_normalize_respects_a_frozen_batch_normalization(rng):
    reference, twin = _bn_pair(3)
    for bn in (reference, twin):
        bn.trainable = False  # Keras then normalizes with the moving statistics, even in training
    x = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    with ptx_ops.fused_ops(False):
        y_ref = _normalize(reference, x, True, True)
    y = _normalize(twin, x, True, True)
    np.testing.assert_allclose(y, y_ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(twin.moving_mean, reference.moving_mean)


def test_mixed_precision_input_keeps_float32_statistics(rng):
    reference, twin = _bn_pair(6)
    x = rng.normal(1.0, 2.0, (2, 8, 8, 6)).astype("float16")
    with ptx_ops.fused_ops(False):
        y_ref = _normalize(reference, x, True, True)
    y = _normalize(twin, x, True, True)
    assert y.dtype == "float16" and twin.moving_mean.dtype == "float32"
    # float16 outputs: rounding at 2^-11 relative.
    np.testing.assert_allclose(np.float32(y), np.float32(y_ref), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(twin.moving_mean, reference.moving_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(twin.moving_variance, reference.moving_variance, rtol=1e-5, atol=1e-6)


def test_set_bn_momentum_applies_to_the_fused_path(rng):
    layer = TransitionDown(dropout_rate=0.0)
    layer.build((2, 4, 4, 3))
    model = keras.Sequential([keras.Input((4, 4, 3)), layer])
    assert set_bn_momentum(model, 0.5) == 1
    x = rng.normal(3.0, 1.0, (2, 4, 4, 3)).astype("float32")
    layer(x, training=True)
    # Moving mean starts at 0: after one step it is (1 - 0.5) * batch mean.
    np.testing.assert_allclose(layer.norm.moving_mean, 0.5 * x.mean(axis=(0, 1, 2)), rtol=1e-5)


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_dense_layer_fast_path_matches_plain_keras(rng, memory_efficient):
    x = rng.normal(size=(2, 6, 6, 5)).astype("float32")
    results = []
    for fused in (False, True):
        keras.utils.set_random_seed(4)
        layer = DenseLayer(3, dropout_rate=0.2, scse=True, memory_efficient=memory_efficient)
        layer.build(x.shape)
        with ptx_ops.fused_ops(fused):
            y, grads = _grads(lambda x: layer([x[..., :2], x[..., 2:]], training=True), x, layer.trainable_weights)
        results.append((y, grads, [w.numpy() for w in layer.non_trainable_weights]))
    (y_a, g_a, w_a), (y_b, g_b, w_b) = results
    np.testing.assert_allclose(y_b, y_a, rtol=RTOL, atol=ATOL)
    scale = max(float(np.abs(g).max()) for g in g_a)
    for a, b in zip(g_a, g_b):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=ATOL * scale)
    for a, b in zip(w_a, w_b):  # moving statistics (updated once) and the dropout seed state
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def _tiny_fc_densenet(memory_efficient=False, dropout_rate=0.2):
    """Every layer kind with a BatchNormalization (dense layers, transitions down) at the smallest size."""
    keras.utils.set_random_seed(11)
    return FCDenseNet(
        input_shape=(8, 8, 3),
        layers_per_block=2,
        num_pools=1,
        growth_rate=3,
        first_conv_filters=4,
        scse=True,
        dropout_rate=dropout_rate,
        memory_efficient=memory_efficient,
    )


def _train_step(model, x):
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = keras.ops.mean(keras.ops.square(out[..., 1] - 0.3))
    return out, tape.gradient(loss, model.trainable_weights)


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_tiny_fc_densenet_fast_path_matches_plain_keras_in_a_compiled_step(rng, memory_efficient):
    x = rng.random((2, 8, 8, 3)).astype("float32")
    runs = []
    for fused in (False, True):
        model = _tiny_fc_densenet(memory_efficient)  # same seed: same weights and dropout masks
        with ptx_ops.fused_ops(fused):  # read while tracing
            out, grads = tf.function(lambda x: _train_step(model, x))(x)
            inference = model.predict_on_batch(x)
        runs.append((out, grads, [w.numpy() for w in model.weights], inference))
    (out_a, g_a, w_a, i_a), (out_b, g_b, w_b, i_b) = runs
    np.testing.assert_allclose(out_b, out_a, rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(i_b, i_a, rtol=RTOL, atol=1e-6)
    scale = max(float(np.abs(g).max()) for g in g_a)
    assert scale > 0
    for a, b in zip(g_a, g_b):
        # Biases in front of a BatchNorm have zero true gradient; compare on the scale of all gradients.
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=ATOL * scale)
    for a, b in zip(w_a, w_b):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("saved_with", [True, False])
def test_keras_files_load_across_paths(rng, tmp_path, saved_with):
    x = rng.random((2, 8, 8, 3)).astype("float32")
    model = _tiny_fc_densenet()
    with ptx_ops.fused_ops(saved_with):
        model(x, training=True)  # moves the moving statistics away from their initial values
        expected = model.predict_on_batch(x)
        model.save(tmp_path / "model.keras")
    with ptx_ops.fused_ops(not saved_with):
        loaded = keras.saving.load_model(tmp_path / "model.keras")
        got = loaded.predict_on_batch(x)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=1e-6)


def test_fused_path_compiles_with_xla(rng):
    # GPUs train with XLA (jit_compile="auto"): the fused kernel must compile there, in training (gradients
    # and moving statistics) and in inference, and agree with the plain path.
    x = tf.constant(rng.normal(size=(2, 8, 8, 4)).astype("float32"))
    layers = []
    for _ in range(2):
        keras.utils.set_random_seed(5)
        layer = TransitionDown(dropout_rate=0.0)
        layer.build(x.shape)
        layers.append(layer)
    plain, fast = layers

    def step(layer):
        y, grads = _grads(lambda x: layer(x, training=True), x, layer.trainable_weights)
        return y, grads, layer(x, training=False)

    with ptx_ops.fused_ops(False):
        expected = tf.function(lambda: step(plain))()
    got = tf.function(lambda: step(fast), jit_compile=True)()
    for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(b).max())))
    np.testing.assert_allclose(fast.norm.moving_variance, plain.norm.moving_variance, rtol=1e-6)


def test_fused_ops_setting(monkeypatch):
    monkeypatch.delenv(ptx_ops.FUSED_OPS_VARIABLE, raising=False)
    assert ptx_ops.fused_ops_enabled()
    monkeypatch.setenv(ptx_ops.FUSED_OPS_VARIABLE, "0")
    assert not ptx_ops.fused_ops_enabled()
    with ptx_ops.fused_ops(True):
        assert ptx_ops.fused_ops_enabled()
    assert not ptx_ops.fused_ops_enabled()
    with pytest.raises(ValueError, match="Received: enabled='yes'"):
        ptx_ops.set_fused_ops("yes")


def test_small_batch_xla_setting(monkeypatch):
    monkeypatch.setattr(ptx_ops, "_onednn_enabled", lambda: True)
    monkeypatch.delenv(ptx_ops.SMALL_BATCH_XLA_VARIABLE, raising=False)
    assert ptx_ops.small_batch_xla_enabled(1)
    # Only batches below ONEDNN_MIN_BATCH (2), and never an unknown batch.
    assert not ptx_ops.small_batch_xla_enabled(2)
    assert not ptx_ops.small_batch_xla_enabled(None)
    monkeypatch.setenv(ptx_ops.SMALL_BATCH_XLA_VARIABLE, "0")
    assert not ptx_ops.small_batch_xla_enabled(1)
    ptx_ops.set_small_batch_xla(True)
    try:
        assert ptx_ops.small_batch_xla_enabled(1)
    finally:
        ptx_ops.set_small_batch_xla(None)
    monkeypatch.delenv(ptx_ops.SMALL_BATCH_XLA_VARIABLE)
    monkeypatch.setattr(ptx_ops, "_onednn_enabled", lambda: False)
    assert not ptx_ops.small_batch_xla_enabled(1)  # Eigen's kernels are already the fast ones
    with pytest.raises(ValueError, match="Received: enabled=1"):
        ptx_ops.set_small_batch_xla(1)


@pytest.mark.parametrize(
    ("x", "batch_size", "expected"),
    [
        (np.zeros((1, 8, 8, 3)), None, 1),
        (np.zeros((5, 8, 8, 3)), 1, 1),
        (np.zeros((5, 8, 8, 3)), 8, 5),
        (np.zeros((40, 8, 8, 3)), None, 32),  # Keras' default batch size
        ({"image": np.zeros((1, 8, 8, 3))}, None, 1),
        ([np.zeros((3, 8, 8, 3))], 2, 2),
        (tf.data.Dataset.from_tensors(np.zeros((1, 8, 8, 3))), None, None),  # not arrays: unknown
    ],
)
def test_prediction_batch(x, batch_size, expected):
    from ptx_keras.models.common import _prediction_batch

    assert _prediction_batch(x, batch_size) == expected


@pytest.mark.parametrize("aux_head", [False, True])
def test_segmentation_model_predicts_single_images_with_xla_as_keras_does(rng, monkeypatch, aux_head):
    from ptx_keras.models import common

    monkeypatch.setattr(ptx_ops, "_onednn_enabled", lambda: True)
    # The paper's additions (multi-scale first convolution, scSE) compile with XLA too.
    model = FCDenseNet(
        input_shape=(16, 16, 3),
        first_conv_filters=6,
        growth_rate=3,
        layers_per_block=1,
        num_pools=2,
        multiscale=True,
        multiscale_filters=2,
        scse=True,
        aux_head=aux_head,
    )
    assert isinstance(model, common.SegmentationModel)
    one = rng.random((1, 16, 16, 3)).astype("float32")
    three = rng.random((3, 16, 16, 3)).astype("float32")
    eight = rng.random((8, 16, 16, 3)).astype("float32")
    with ptx_ops.fused_ops(False):
        # Keras' own methods (the base class's, XLA off): what the model must reproduce.
        ptx_ops.set_small_batch_xla(False)
        try:
            expected = [
                keras.Model.predict_on_batch(model, one),
                keras.Model.predict(model, one, verbose=0),
                keras.Model.predict(model, three, batch_size=1, verbose=0),
                keras.Model.predict(model, eight, verbose=0),
            ]
        finally:
            ptx_ops.set_small_batch_xla(None)
        plain_function = model.predict_function
        assert model not in common._xla_predict_functions
        got = [
            model.predict_on_batch(one),  # XLA
            model.predict(one, verbose=0),  # one step: as predict_on_batch, XLA
            model.predict(three, batch_size=1, verbose=0),  # Keras' loop of three steps, XLA function swapped in
            model.predict(eight, verbose=0),  # one step of 8: Keras' own function
        ]
    # Single images ran the XLA function (kept apart); Keras' own is back in place.
    assert model in common._xla_predict_functions
    assert model.predict_function is plain_function and not model.jit_compile
    for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(expected)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_segmentation_model_keras_file_round_trip(rng, tmp_path):
    from ptx_keras.models import build_model
    from ptx_keras.models.common import SegmentationModel

    model = build_model("unet", input_shape=(16, 16, 1), base_filters=4, depth=2)
    x = rng.random((2, 16, 16, 1)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded) is SegmentationModel
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-6, atol=1e-7)
