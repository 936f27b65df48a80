"""Tests of the training optimizer: coupled L2 (PyTorch Adam semantics) and decoupled (AdamW) weight decay."""

import keras
import numpy as np
import pytest

from ptx_keras import constants as C
from ptx_keras.optimizers import ADAM_EPSILON, AdamL2, make_optimizer

LR, WD = 1e-3, 1e-2


def _variable(values):
    return keras.Variable(np.asarray(values, np.float32), name="w")


def _numpy_adam_l2(w, lr, wd, steps, b1=C.BETA_1, b2=C.BETA_2, eps=ADAM_EPSILON, data_grad=0.0):
    """Reference in float64: Keras' Adam update on the gradient `data_grad + wd * w` (PyTorch's coupling)."""
    w = np.asarray(w, np.float64).copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t in range(1, steps + 1):
        g = data_grad + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        w = w - alpha * m / (np.sqrt(v) + eps)
    return w


def test_coupled_one_step_by_hand():
    # Step 1 of Adam on g = wd * w: m = (1 - b1) g, v = (1 - b2) g^2, so the step is
    # lr * sqrt(1 - b2) * g / (sqrt(1 - b2) * |g| + eps): nearly lr * sign(w), whatever the size of wd.
    w0 = np.array([0.5, -0.25, 2.0, 0.0], np.float32)
    var = _variable(w0)
    opt = AdamL2(learning_rate=LR, weight_decay=WD)
    opt.apply([np.zeros(4, np.float32)], [var])
    g = WD * w0.astype(np.float64)
    s = np.sqrt(1 - C.BETA_2)
    expected = w0 - LR * s * g / (s * np.abs(g) + ADAM_EPSILON)
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-6, atol=0)
    assert var.numpy()[3] == 0.0  # a zero weight gets no decay gradient
    # With the paper's values the first step moves a weight of 0.5 by 0.94 * lr, ten thousand times what
    # AdamW's lr * wd * w = 5e-9 would.
    var = _variable([0.5])
    AdamL2(learning_rate=1e-4, weight_decay=1e-4).apply([np.zeros(1, np.float32)], [var])
    step = 0.5 - float(var.numpy()[0])
    assert step == pytest.approx(1e-4 * s * 5e-5 / (s * 5e-5 + ADAM_EPSILON), rel=1e-3)
    assert 0.9e-4 < step < 1e-4


@pytest.mark.parametrize("data_grad", [0.0, 0.3])
def test_coupled_several_steps_match_the_reference(data_grad):
    w0 = np.array([0.5, -0.25, 2.0, 1e-3], np.float32)
    var = _variable(w0)
    opt = AdamL2(learning_rate=LR, weight_decay=WD)
    for _ in range(25):
        opt.apply([np.full(4, data_grad, np.float32)], [var])
    np.testing.assert_allclose(var.numpy(), _numpy_adam_l2(w0, LR, WD, 25, data_grad=data_grad), rtol=2e-6, atol=5e-7)


def test_coupled_equals_keras_adam_fed_the_coupled_gradient(rng):
    w0 = rng.normal(size=(3, 5)).astype(np.float32)
    grads = [rng.normal(size=(3, 5)).astype(np.float32) for _ in range(6)]
    ours, theirs = _variable(w0), _variable(w0)
    opt = AdamL2(learning_rate=LR, weight_decay=WD)
    adam = keras.optimizers.Adam(learning_rate=LR, epsilon=ADAM_EPSILON)
    for g in grads:
        opt.apply([g], [ours])
        coupled = keras.ops.add(g, keras.ops.multiply(np.float32(WD), theirs))
        adam.apply([coupled], [theirs])
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_decoupled_shrinks_by_lr_times_wd_per_step():
    # AdamW with a zero gradient: the Adam step is 0 / (0 + eps) = 0 and each step multiplies w by 1 - lr * wd.
    lr, wd = 0.1, 0.5
    w0 = np.array([0.5, -0.25, 2.0], np.float32)
    var = _variable(w0)
    opt = make_optimizer(learning_rate=lr, weight_decay=wd, weight_decay_mode="decoupled")
    assert isinstance(opt, keras.optimizers.AdamW)
    opt.apply([np.zeros(3, np.float32)], [var])
    np.testing.assert_allclose(var.numpy(), w0 * 0.95, rtol=1e-6)
    for _ in range(4):
        opt.apply([np.zeros(3, np.float32)], [var])
    np.testing.assert_allclose(var.numpy(), w0 * 0.95**5, rtol=1e-6)


def test_decoupled_at_the_papers_values_is_a_float32_no_op():
    # The reason coupled is the default: lr * wd = 1e-8 is below float32's relative resolution (6e-8).
    w0 = np.random.default_rng(1).uniform(0.05, 1.0, 1000).astype(np.float32)
    var = _variable(w0)
    opt = make_optimizer(learning_rate=1e-4, weight_decay=1e-4, weight_decay_mode="decoupled")
    for _ in range(20):
        opt.apply([np.zeros(1000, np.float32)], [var])
    np.testing.assert_array_equal(var.numpy(), w0)


def test_zero_decay_is_plain_adam(rng):
    for mode in C.WEIGHT_DECAY_MODES:
        opt = make_optimizer(learning_rate=LR, weight_decay=0, weight_decay_mode=mode)
        assert type(opt) is keras.optimizers.Adam and opt.weight_decay is None
    w0 = rng.normal(size=6).astype(np.float32)
    grads = [rng.normal(size=6).astype(np.float32) for _ in range(4)]
    ours, theirs = _variable(w0), _variable(w0)
    opt, adam = AdamL2(learning_rate=LR, weight_decay=0.0), keras.optimizers.Adam(learning_rate=LR)
    for g in grads:
        opt.apply([g], [ours])
        adam.apply([g], [theirs])
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_make_optimizer_defaults_are_the_papers():
    opt = make_optimizer(loss_scale=False)
    assert isinstance(opt, AdamL2)
    assert opt.l2_weight_decay == C.WEIGHT_DECAY and opt.weight_decay is None  # no decoupled decay on top
    assert float(opt.learning_rate) == pytest.approx(C.LEARNING_RATE)
    assert (opt.beta_1, opt.beta_2) == (C.BETA_1, C.BETA_2)
    wrapped = make_optimizer(loss_scale=True)
    assert isinstance(wrapped, keras.optimizers.LossScaleOptimizer)
    assert isinstance(wrapped.inner_optimizer, AdamL2)


def test_mixed_precision_policy_wraps_in_loss_scaling():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        opt = make_optimizer()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(opt, keras.optimizers.LossScaleOptimizer) and isinstance(opt.inner_optimizer, AdamL2)
    assert isinstance(make_optimizer(), AdamL2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weight_decay": -1e-4}, "weight_decay=-0.0001"),
        ({"weight_decay": float("nan")}, "weight_decay=nan"),
        ({"weight_decay": True}, "weight_decay=True"),
        ({"weight_decay": "1e-4"}, "weight_decay='1e-4'"),
        ({"learning_rate": 0.0}, "learning_rate=0.0"),
        ({"beta_1": 1.0}, "beta_1=1.0"),
        ({"beta_2": -0.1}, "beta_2=-0.1"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        AdamL2(**kwargs)
    with pytest.raises(ValueError, match=message):
        make_optimizer(**kwargs)


def test_invalid_mode_and_epsilon():
    with pytest.raises(ValueError, match="weight_decay_mode='adamw'"):
        make_optimizer(weight_decay_mode="adamw")
    with pytest.raises(ValueError, match="epsilon=0"):
        AdamL2(epsilon=0)


def test_serialization_round_trip(rng):
    opt = AdamL2(learning_rate=3e-4, weight_decay=2e-3, beta_1=0.8, amsgrad=True, clipnorm=1.0)
    config = keras.optimizers.serialize(opt)
    assert config["registered_name"] == "ptx_keras>AdamL2"
    clone = keras.optimizers.deserialize(config)
    assert type(clone) is AdamL2 and clone.get_config() == opt.get_config()
    assert clone.l2_weight_decay == 2e-3 and clone.weight_decay is None and clone.amsgrad
    w0 = rng.normal(size=4).astype(np.float32)
    a, b = _variable(w0), _variable(w0)
    for _ in range(3):
        g = rng.normal(size=4).astype(np.float32)
        opt.apply([g], [a])
        clone.apply([g], [b])
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_compiled_model_saves_and_reloads_with_its_optimizer(tmp_path, rng):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer=make_optimizer(learning_rate=1e-3, weight_decay=1e-3), loss="mse")
    x, y = rng.random((8, 3)).astype(np.float32), rng.random((8, 2)).astype(np.float32)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=True)
    assert isinstance(loaded.optimizer, AdamL2) and loaded.optimizer.l2_weight_decay == 1e-3
    assert int(loaded.optimizer.iterations) == 4
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The next step is the same in both: the moments were restored, not re-initialised.
    model.train_on_batch(x[:4], y[:4])
    loaded.train_on_batch(x[:4], y[:4])
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_loss_scaled_optimizer_saves_and_reloads(tmp_path, rng):
    """What mixed precision compiles with: LossScaleOptimizer around AdamL2, restored from a .keras file."""
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer=make_optimizer(weight_decay=1e-3, loss_scale=True), loss="mse")
    model.fit(rng.random((4, 3)).astype(np.float32), rng.random((4, 2)).astype(np.float32), verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=True)
    assert isinstance(loaded.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(loaded.optimizer.inner_optimizer, AdamL2)
    assert loaded.optimizer.inner_optimizer.l2_weight_decay == 1e-3


def _train_tiny(weight_decay, weight_decay_mode="coupled", steps=30):
    """A small conv net trained for `steps` steps (batch 4) on a fixed random data set, as `Model.fit` does.

    The second input channel is always zero, so the first kernel's weights on it get an exactly zero data
    gradient: only weight decay can move them. Returns `(first kernel before, trainable weights after)`.
    """
    keras.utils.set_random_seed(3)
    data = np.random.default_rng(3)
    x = np.zeros((8, 16, 16, 2), np.float32)
    x[..., 0] = data.random((8, 16, 16))
    y = (x[..., :1] > 0.6).astype(np.float32)
    inputs = keras.Input((16, 16, 2))
    h = keras.layers.Conv2D(8, 3, padding="same", kernel_initializer="he_uniform")(inputs)
    h = keras.layers.BatchNormalization()(keras.layers.ELU()(h))
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", kernel_initializer="he_uniform")(h)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=make_optimizer(
            learning_rate=C.LEARNING_RATE, weight_decay=weight_decay, weight_decay_mode=weight_decay_mode
        ),
        loss="binary_crossentropy",
    )
    before = model.trainable_weights[0].numpy()
    model.fit(x, y, batch_size=4, epochs=steps // 2, shuffle=False, verbose=0)
    return before, [w.numpy() for w in model.trainable_weights]


def test_the_papers_decay_changes_trained_weights():
    """train.weight_decay 1e-4 (coupled) against 0, same seed and data, 30 steps at lr 1e-4."""
    before, plain = _train_tiny(0.0)
    _, coupled = _train_tiny(C.WEIGHT_DECAY)
    _, decoupled = _train_tiny(C.WEIGHT_DECAY, "decoupled")
    dead_before = before[:, :, 1, :]
    # Without decay a weight with a zero gradient never moves (Adam's m stays 0)...
    np.testing.assert_array_equal(plain[0][:, :, 1, :], dead_before)
    # ...with the paper's coupled decay it moves towards 0 by what Adam on wd * w gives: about lr per step.
    expected = _numpy_adam_l2(dead_before, C.LEARNING_RATE, C.WEIGHT_DECAY, 30)
    np.testing.assert_allclose(coupled[0][:, :, 1, :], expected, rtol=1e-5, atol=1e-8)
    moved = np.abs(dead_before) - np.abs(coupled[0][:, :, 1, :])
    assert np.all(moved[np.abs(dead_before) > 0.1] > 0.85 * 30 * C.LEARNING_RATE)
    # The weights that do see data move too: 1e-5 is over 100 float32 steps of these weights (|w| < 1).
    assert np.max(np.abs(coupled[0][:, :, 0, :] - plain[0][:, :, 0, :])) > 1e-5
    # AdamW at the same values shrinks by lr * wd = 1e-8 of a weight per step: no weight changes at all.
    assert all(np.array_equal(a, b) for a, b in zip(decoupled, plain))
