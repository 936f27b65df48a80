"""The layers, losses, in-graph metrics, optimizers and models on every Keras backend (TensorFlow, JAX, PyTorch).

This module runs under whatever `KERAS_BACKEND` says (tests/conftest.py defaults it to tensorflow). `.ci/run` runs
it three times: in the main suite (TensorFlow), then with `KERAS_BACKEND=jax` and `KERAS_BACKEND=torch`
(`pytest -m backends tests/test_backends.py`). Everything here is written with `keras.ops` and NumPy; the only
backend-specific code is `_gradient` (each backend's own autodiff) and the subprocess that loads a `.keras` file
in another backend.

Tolerances:

* Same backend: NumPy references of the equations to float32 rounding (rtol 1e-5); a reloaded file gives
  bit-identical outputs (the same kernels run on the same weights).
* Across backends (`test_keras_files_load_in_every_other_backend`): the backends run different convolution and
  reduction kernels (oneDNN/Eigen, XLA, ATen) that sum in different orders. Each float32 sum of n terms carries a
  relative rounding error of up to about n * 2^-24; the tiny models chain ~10 convolutions of at most
  7 * 7 * 6 terms, BatchNormalization and a softmax, so the probabilities (in [0, 1]) agree to a few 1e-6: the
  test allows 1e-5 absolute (measured: at most 3.6e-7 over the six ordered pairs, docs/scaling.md).
"""

import importlib
import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from ptx_keras import losses as L
from ptx_keras.errors import BackendError, require_tensorflow
from ptx_keras.layers import (
    DenseBlock,
    DenseLayer,
    InputSizeCheck,
    MaxPoolingWithIndices2D,
    MaxUnpooling2D,
    MultiScaleConv2D,
    ResizeLike,
    SCSEBlock,
    TransitionDown,
    TransitionUp,
)
from ptx_keras.loading import load_model
from ptx_keras.metrics import DSC1, MPA, GlobalDSC1
from ptx_keras.models import FCDenseNet, build_model
from ptx_keras.optimizers import ADAM_EPSILON, AdamL2, make_optimizer
from ptx_keras.targets import pack_targets

pytestmark = pytest.mark.backends

BACKEND = keras.config.backend()
BACKENDS = ("tensorflow", "jax", "torch")
CROSS_BACKEND_ATOL = 1e-5  # see the module docstring
TENSORFLOW_ONLY_MODULES = ("ptx_keras.data.pipeline", "ptx_keras.serving", "ptx_keras.export", "ptx_keras.training")

# The smallest models that still contain every layer of the paper's: multi-scale first convolution, scSE in
# every dense layer, dense blocks, transitions down and up, the input-size check; and the scSE U-Net.
TINY_MODELS = {
    "ms_scse_fc_densenet103": dict(
        input_shape=(8, 8, 1),
        layers_per_block=[1, 1, 1],
        growth_rate=2,
        first_conv_filters=4,
        multiscale_filters=2,
        dropout_rate=0.0,
    ),
    "ms_scse_unet": dict(input_shape=(8, 8, 1), base_filters=2, depth=1, multiscale_filters=2),
}
CROSS_BACKEND_MODELS = ("ms_scse_fc_densenet103",)  # it holds every layer of the U-Net's too


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


def _gradient(fn, x):
    """d fn(x) / dx for a scalar `fn` of one float32 array, with the backend's own autodiff."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return tape.gradient(y, x).numpy()
    if BACKEND == "jax":
        import jax

        return np.asarray(jax.grad(fn)(ops.convert_to_tensor(x)))
    import torch

    x = torch.tensor(x, requires_grad=True)
    fn(x).backward()
    return x.grad.numpy()


def _targets(mask, weight=None):
    return _np(pack_targets(np.asarray(mask, np.float32), None if weight is None else np.asarray(weight, np.float32)))


def _data(rng, n=2, size=8, channels=1):
    x = rng.random((n, size, size, channels)).astype("float32")
    mask = np.zeros((n, size, size), np.float32)
    mask[:, 2:5, 1:4] = 1
    weight = 1.0 + 4.0 * mask  # a weight map with a heavier pneumothorax, as eq. 6 gives
    return x, _targets(mask, weight)


def test_runs_on_the_backend_it_was_asked_for():
    # .ci/run sets KERAS_BACKEND for its JAX and PyTorch runs; conftest.py must not override it.
    assert BACKEND == os.environ.get("KERAS_BACKEND", "tensorflow")


# --------------------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------------------
LAYERS = {
    "scse": (lambda: SCSEBlock(2), (2, 4, 4, 6), (2, 4, 4, 6)),
    "scse_max": (lambda: SCSEBlock(3, fusion="max"), (2, 4, 4, 6), (2, 4, 4, 6)),
    "multiscale": (lambda: MultiScaleConv2D(2), (2, 8, 8, 1), (2, 8, 8, 6)),
    "dense_layer": (lambda: DenseLayer(3, dropout_rate=0.2, scse=True), (2, 4, 4, 5), (2, 4, 4, 3)),
    "dense_layer_memory_efficient": (
        lambda: DenseLayer(3, dropout_rate=0.2, scse=True, memory_efficient=True),
        (2, 4, 4, 5),
        (2, 4, 4, 3),
    ),
    "dense_block": (lambda: DenseBlock(2, 3, dropout_rate=0.2), (2, 4, 4, 5), (2, 4, 4, 11)),
    "dense_block_new_only": (lambda: DenseBlock(2, 3, return_new_only=True), (2, 4, 4, 5), (2, 4, 4, 6)),
    "transition_down": (lambda: TransitionDown(dropout_rate=0.2), (2, 4, 4, 5), (2, 2, 2, 5)),
    "transition_down_memory_efficient": (
        lambda: TransitionDown(dropout_rate=0.2, memory_efficient=True),
        (2, 4, 4, 5),
        (2, 2, 2, 5),
    ),
    "transition_up": (lambda: TransitionUp(), (2, 2, 2, 5), (2, 4, 4, 5)),
    "transition_up_filters": (lambda: TransitionUp(3), (2, 2, 2, 5), (2, 4, 4, 3)),
    "input_size_check": (lambda: InputSizeCheck(2), (2, 8, 8, 1), (2, 8, 8, 1)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_runs_trains_and_reloads(name, rng, tmp_path):
    make, in_shape, out_shape = LAYERS[name]
    x = rng.normal(size=in_shape).astype("float32")
    model = keras.Sequential([keras.Input(in_shape[1:]), make()])
    assert _np(model(x, training=True)).shape == out_shape  # BatchNormalization moves its statistics
    inference = _np(model(x, training=False))
    assert inference.shape == out_shape and np.all(np.isfinite(inference))
    path = tmp_path / "layer.keras"
    model.save(path)
    reloaded = load_model(path)
    assert type(reloaded.layers[0]) is type(model.layers[0])
    np.testing.assert_array_equal(_np(reloaded(x, training=False)), inference)


def test_scse_matches_its_equations(rng):
    # Eqs. 2-4 in NumPy from the layer's own weights.
    layer = SCSEBlock(2)
    u = rng.normal(size=(2, 3, 3, 4)).astype("float32")
    out = _np(layer(u))
    (ws, bs), (w1, b1), (w2, b2) = [
        [_np(w) for w in sub.weights] for sub in (layer.spatial_conv, layer.squeeze, layer.excite)
    ]
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    u_sse = u * sigmoid(u @ ws.reshape(4, 1) + bs)
    z = u.mean(axis=(1, 2), keepdims=True)
    u_cse = u * sigmoid(np.maximum(z @ w1 + b1, 0.0) @ w2 + b2)
    np.testing.assert_allclose(out, u_sse + u_cse, rtol=1e-5, atol=1e-6)


def test_multiscale_concatenates_its_branches_in_kernel_order(rng):
    layer = MultiScaleConv2D(1, kernel_sizes=(1, 3))
    x = rng.normal(size=(1, 5, 5, 1)).astype("float32")
    out = _np(layer(x))
    (k1, b1), (k3, b3) = [[_np(w) for w in conv.weights] for conv in layer.branches]
    np.testing.assert_allclose(out[..., 0], x[..., 0] * k1[0, 0, 0, 0] + b1[0], rtol=1e-5, atol=1e-6)
    # The 3x3 branch at an interior pixel: the correlation of its 3x3 neighbourhood with the kernel.
    expected = float((x[0, 1:4, 1:4, 0] * k3[:, :, 0, 0]).sum() + b3[0])
    assert out[0, 2, 2, 1] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_transition_down_pools_the_maximum_of_its_convolution(rng):
    layer = TransitionDown(dropout_rate=0.0)
    x = rng.normal(size=(1, 4, 4, 2)).astype("float32")
    out = _np(layer(x, training=False))
    norm, conv = layer.norm, layer.conv
    gamma, beta, mean, var = (_np(v) for v in (norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance))
    y = gamma * (x - mean) / np.sqrt(var + norm.epsilon) + beta
    y = np.where(y > 0, y, np.expm1(np.minimum(y, 0.0)))  # ELU
    y = y @ _np(conv.kernel)[0, 0] + _np(conv.bias)
    np.testing.assert_allclose(out, y.reshape(1, 2, 2, 2, 2, 2).max(axis=(2, 4)), rtol=1e-5, atol=1e-6)


def test_input_size_check_refuses_sizes_the_poolings_cannot_divide():
    from ptx_keras.errors import ModelError

    with pytest.raises(ModelError, match="height 12 is not divisible by 8"):
        keras.Sequential([keras.Input((12, 16, 1)), InputSizeCheck(3)])


def test_baseline_layers_unpool_to_the_maxima(rng):
    # SegNet's max-pooling with indices and unpooling, and the resize DeepLab uses, on this backend.
    x = rng.normal(size=(1, 4, 4, 2)).astype("float32")
    pooled, indices = MaxPoolingWithIndices2D()(x)
    np.testing.assert_allclose(_np(pooled), x.reshape(1, 2, 2, 2, 2, 2).max(axis=(2, 4)))
    unpooled = _np(MaxUnpooling2D()([pooled, indices]))
    is_max = x == np.repeat(np.repeat(_np(pooled), 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(unpooled, np.where(is_max, x, 0.0))
    resized = _np(ResizeLike()([x, np.zeros((1, 8, 8, 1), np.float32)]))
    np.testing.assert_allclose(resized, _np(ops.image.resize(x, (8, 8), antialias=False)), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# Losses and metrics
# --------------------------------------------------------------------------------------------------------------
# One 2x2 image: pneumothorax in the top-left pixel, weight map 4 there (eq. 6 gives boundary pixels more).
MASK = np.array([[[1.0, 0.0], [0.0, 0.0]]], np.float32)
WEIGHT = np.array([[[4.0, 1.0], [1.0, 1.0]]], np.float32)
P_PTX = np.array([[[0.8, 0.3], [0.1, 0.6]]], np.float32)  # predicted pneumothorax probability per pixel


def _probs(p_ptx):
    return np.stack([1.0 - p_ptx, p_ptx], axis=-1).astype("float32")


def _hand_losses():
    p_true = np.where(MASK == 1, P_PTX, 1.0 - P_PTX)  # probability of the true class
    ce = -np.log(p_true)
    class_weight = np.where(MASK == 1, 4.0 / 1.0, 4.0 / 3.0)  # |N| / |T_c|: 1 pneumothorax, 3 background pixels
    dice = 1.0 - (2 * 0.8 + 1.0) / (P_PTX.sum() + 1.0 + 1.0)  # smooth 1
    return {
        "sw_cel": float((WEIGHT * ce).mean()),
        "wce": float((class_weight * ce).mean()),
        "ce": float(ce.mean()),
        "dice": dice,
        "sw_cel+dice": float((WEIGHT * ce).mean()) + dice,
    }


@pytest.mark.parametrize("name", sorted(_hand_losses()))
def test_losses_match_hand_computed_values(name):
    kwargs = {"smooth": 1.0} if "dice" in name else {}
    loss = L.get_loss(name, **kwargs)
    value = loss(_targets(MASK, WEIGHT), _probs(P_PTX))
    assert _dtype(value) == "float32"
    assert float(value) == pytest.approx(_hand_losses()[name], rel=1e-5)


@pytest.mark.parametrize("cls", [L.SpatialWeightedCE, L.WeightedCE, L.CE, L.DiceLoss])
def test_loss_gradients_are_finite_at_probabilities_zero_and_one(cls):
    y_true = _targets(MASK, WEIGHT)
    # Right and wrong with certainty, and one uncertain pixel (the clip gives the certain ones no gradient).
    probs = _probs(np.array([[[1.0, 0.0], [0.5, 0.0]]], np.float32))
    grad = _gradient(lambda p: cls()(y_true, p), probs)
    assert np.all(np.isfinite(grad)) and np.any(grad[0, 1, 0] != 0)


def test_float16_predictions_and_large_weights_give_a_finite_float32_loss(rng):
    # Under mixed precision the model's output may be float16. A weight of 1e5 times a clipped cross-entropy
    # of ~16 (log 1e-7) is far above float16's maximum (65504): the loss must compute in float32.
    weight = np.ones((2, 16, 16), np.float32)
    weight[:, 4:8, 4:8] = 1e5
    mask = np.zeros((2, 16, 16), np.float32)
    mask[:, 4:8, 4:8] = 1
    y_true = _targets(mask, weight)
    p32 = _probs(np.full((2, 16, 16), 1e-4, np.float32))  # confidently wrong inside the heavy pixels
    p16 = ops.cast(p32, "float16")
    # Per heavy pixel 1e5 * -log(1e-4) = 9.2e5; 16 of the 256 pixels are heavy.
    expected = (16 * 1e5 * -np.log(1e-4) + 240 * -np.log(1 - 1e-4)) / 256
    assert float(L.SpatialWeightedCE()(y_true, p16)) == pytest.approx(expected, rel=1e-3)
    for loss in (L.SpatialWeightedCE(), L.get_loss("sw_cel+dice")):
        value = loss(y_true, p16)
        assert _dtype(value) == "float32" and np.isfinite(float(value))
        # float16 probabilities carry 2^-11 relative rounding: the logs differ by at most ~5e-4 relative.
        assert float(value) == pytest.approx(float(loss(y_true, p32)), rel=1e-3)


def test_in_graph_metrics_match_hand_counts():
    # Image 0: truth {top-left}, prediction {top-left, bottom-right} (threshold 0.5): Dice 2*1/(1+2) = 2/3,
    # pixel accuracy: pneumothorax 1/1, background 2/3. Image 1: both empty: Dice 1, accuracy 1.
    y_true = _targets(np.concatenate([MASK, np.zeros_like(MASK)]), np.ones((2, 2, 2)))
    y_pred = _probs(np.concatenate([P_PTX, np.full_like(P_PTX, 0.2)]))
    for metric, expected in ((DSC1(), (2 / 3 + 1) / 2), (MPA(), ((1 + 2 / 3) / 2 + 1) / 2), (GlobalDSC1(), 2 / 3)):
        metric.update_state(y_true, y_pred)
        assert float(metric.result()) == pytest.approx(expected, rel=1e-6), metric.name
        metric.reset_state()
        assert float(metric.result()) == float(type(metric)().result())  # as new


# --------------------------------------------------------------------------------------------------------------
# The optimizer
# --------------------------------------------------------------------------------------------------------------
def test_adam_l2_steps_match_numpy_adam_on_the_decayed_gradient():
    lr, wd, b1, b2 = 0.01, 0.1, 0.9, 0.999
    w = np.array([0.5, -1.5, 2.0], np.float32)
    grads = [np.array([0.1, 0.0, -0.3], np.float32), np.array([0.2, 0.05, 0.0], np.float32)]
    var = keras.Variable(w)
    opt = AdamL2(learning_rate=lr, weight_decay=wd, beta_1=b1, beta_2=b2)
    m = v = np.zeros(3)
    expected = w.astype(np.float64)
    for t, g in enumerate(grads, start=1):
        opt.apply([ops.convert_to_tensor(g)], [var])
        g = g + wd * expected
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        expected = expected - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + ADAM_EPSILON)
    np.testing.assert_allclose(_np(var), expected, rtol=1e-5)


def test_make_optimizer_builds_each_mode_on_this_backend():
    assert isinstance(make_optimizer(weight_decay=1e-4), AdamL2)
    assert isinstance(make_optimizer(weight_decay=1e-4, weight_decay_mode="decoupled"), keras.optimizers.AdamW)
    assert not isinstance(make_optimizer(weight_decay=0.0), AdamL2)


# --------------------------------------------------------------------------------------------------------------
# Models: a training step, memory-efficient equivalence
# --------------------------------------------------------------------------------------------------------------
def _compiled(name, **extra):
    model = build_model(name, **TINY_MODELS[name], **extra)
    model.compile(optimizer=make_optimizer(learning_rate=1e-2), loss=L.get_loss("sw_cel"), metrics=[DSC1(), MPA()])
    return model


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_model_trains_with_the_papers_loss_metrics_and_optimizer(name, rng):
    model = _compiled(name)
    x, y = _data(rng)
    before = [_np(w) for w in model.weights]
    # Dropout off: the loss of the first step is the SW-CEL of the training-mode forward pass.
    probs = _np(model(x, training=True))
    p_true = np.where(y[..., 0] == 1, probs[..., 1], probs[..., 0])
    expected_loss = float((y[..., 1] * -np.log(np.clip(p_true, 1e-7, 1 - 1e-7))).mean())
    logs = model.fit(x, y, batch_size=2, epochs=2, verbose=0).history
    assert logs["loss"][0] == pytest.approx(expected_loss, rel=1e-4)
    assert np.all(np.isfinite(logs["loss"])) and logs["loss"][1] < logs["loss"][0]
    assert 0.0 <= logs["dsc1"][-1] <= 1.0 and 0.0 <= logs["mpa"][-1] <= 1.0
    changed = {w.path: not np.array_equal(_np(w), b) for w, b in zip(model.weights, before)}
    # Every kernel learns (a bias feeding a BatchNormalization has no gradient), every BN tracks the batches.
    assert all(changed[w.path] for w in model.trainable_weights if w.path.endswith("kernel"))
    assert all(changed[w.path] for w in model.non_trainable_weights if w.path.endswith("moving_mean"))
    out = _np(model.predict(x, verbose=0))
    assert out.shape == (2, 8, 8, 2) and _dtype(out) == "float32"
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)


def test_memory_efficient_training_step_matches_the_default(rng):
    # The recomputed layers (keras.remat: tf.recompute_grad, jax.checkpoint, torch.utils.checkpoint) must give
    # the same gradients (with SGD: the same weights after the step), the same dropout masks, and update the
    # BatchNormalization moving statistics once.
    kwargs = dict(TINY_MODELS["ms_scse_fc_densenet103"], dropout_rate=0.2)
    models = []
    for memory_efficient in (False, True):
        keras.utils.set_random_seed(7)  # the same dropout seed generators in both models
        model = FCDenseNet(memory_efficient=memory_efficient, multiscale=True, scse=True, **kwargs)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=L.SpatialWeightedCE())
        models.append(model)
    models[1].set_weights(models[0].get_weights())
    x, y = _data(rng)
    losses = [model.train_on_batch(x, y) for model in models]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for a, b in zip(models[0].weights, models[1].weights):
        np.testing.assert_allclose(_np(b), _np(a), rtol=1e-5, atol=1e-6, err_msg=a.path)


# --------------------------------------------------------------------------------------------------------------
# TensorFlow-only modules
# --------------------------------------------------------------------------------------------------------------
def test_require_tensorflow_names_the_module_the_backend_and_the_fix(monkeypatch):
    monkeypatch.setattr(keras.config, "backend", lambda: "jax")
    with pytest.raises(
        BackendError,
        match=r"ptx_keras\.export needs Keras' TensorFlow backend, but Keras runs on "
        r"'jax'\. Set KERAS_BACKEND=tensorflow",
    ):
        require_tensorflow("ptx_keras.export")
    assert issubclass(BackendError, ImportError)


@pytest.mark.parametrize("module", TENSORFLOW_ONLY_MODULES)
def test_tensorflow_only_modules_refuse_other_backends_at_import(module):
    if BACKEND == "tensorflow":
        importlib.import_module(module)
        return
    sys.modules.pop(module, None)
    with pytest.raises(BackendError, match=f"needs Keras' TensorFlow backend, but Keras runs on '{BACKEND}'"):
        importlib.import_module(module)


# --------------------------------------------------------------------------------------------------------------
# .keras files across backends
# --------------------------------------------------------------------------------------------------------------
def _save_models(folder, seed):
    """Saves each tiny model compiled, with an input batch, this backend's predictions and its optimizer's state.

    The weights, the BatchNormalization moving statistics and the optimizer's variables (step counter, moments)
    are drawn near their initial values, as after some training: training them here would add a compiled train
    step per backend (tens of seconds under JAX) and test nothing more.
    """
    rng = np.random.default_rng(seed)
    for name in CROSS_BACKEND_MODELS:
        model = _compiled(name)
        for w in model.weights:
            value = _np(w)
            factor = rng.uniform(0.7, 1.3, value.shape) if w.path.endswith("moving_variance") else 1.0
            w.assign(
                (
                    value * factor + (0 if w.path.endswith("moving_variance") else rng.normal(0, 0.05, value.shape))
                ).astype(value.dtype)
            )
        model.optimizer.build(model.trainable_variables)
        for v in model.optimizer.variables:
            value = 3 if "iteration" in v.path else rng.uniform(0.0, 0.01, tuple(v.shape))
            v.assign(np.asarray(value, keras.backend.standardize_dtype(v.dtype)))
        x, _ = _data(rng)
        model.save(os.path.join(folder, f"{name}.keras"))
        np.save(os.path.join(folder, f"{name}.x.npy"), x)
        np.save(os.path.join(folder, f"{name}.probs.npy"), _np(model.predict(x, verbose=0)))
        np.savez(os.path.join(folder, f"{name}.optimizer.npz"), *[_np(v) for v in model.optimizer.variables])


def _load_and_predict(folder, out_folder):
    """Loads every model `_save_models` wrote in `folder` (compiled) and saves its predictions and optimizer state."""
    report = {}
    for name in CROSS_BACKEND_MODELS:
        model = load_model(os.path.join(folder, f"{name}.keras"), compile=True)
        x = np.load(os.path.join(folder, f"{name}.x.npy"))
        np.save(os.path.join(out_folder, f"{name}.probs.npy"), _np(model.predict(x, verbose=0)))
        np.savez(os.path.join(out_folder, f"{name}.optimizer.npz"), *[_np(v) for v in model.optimizer.variables])
        report[name] = {
            "optimizer": type(model.optimizer).__name__,
            "weight_decay": getattr(model.optimizer, "l2_weight_decay", None),
            "loss": type(model.loss).__name__,
        }
    with open(os.path.join(out_folder, "report.json"), "w") as f:
        json.dump(report, f)


def _other_backend_main(folder):
    """Entry point of the subprocess (another backend): load our files, then save its own for us."""
    _load_and_predict(os.path.join(folder, "ours"), os.path.join(folder, "there"))
    _save_models(os.path.join(folder, "theirs"), seed=11)


@pytest.mark.slow
@pytest.mark.parametrize("other", [b for b in BACKENDS if b != BACKEND])
def test_keras_files_load_in_every_other_backend(other, tmp_path):
    # Both directions: a file saved here loads (compiled) there with the same predictions, and one saved
    # there loads here. Across the three runs of .ci/run every ordered pair of backends is covered.
    if importlib.util.find_spec(other) is None:
        if os.environ.get("PTX_REQUIRE_BACKENDS"):
            pytest.fail(f"{other} is not installed, and PTX_REQUIRE_BACKENDS is set (.ci/run's backend runs)")
        pytest.skip(f"{other} is not installed (.ci/run installs it for its JAX and PyTorch runs)")
    for sub in ("ours", "there", "theirs", "here"):
        (tmp_path / sub).mkdir()
    _save_models(str(tmp_path / "ours"), seed=5)
    env = dict(os.environ, KERAS_BACKEND=other, TF_CPP_MIN_LOG_LEVEL="2")
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import test_backends as t; "
        f"t._other_backend_main({str(tmp_path)!r})"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _load_and_predict(str(tmp_path / "theirs"), str(tmp_path / "here"))
    for saved, predicted, where in (
        ("ours", "there", f"saved on {BACKEND}, predicted on {other}"),
        ("theirs", "here", f"saved on {other}, predicted on {BACKEND}"),
    ):
        with open(tmp_path / predicted / "report.json") as f:
            report = json.load(f)
        for name in CROSS_BACKEND_MODELS:
            np.testing.assert_allclose(
                np.load(tmp_path / predicted / f"{name}.probs.npy"),
                np.load(tmp_path / saved / f"{name}.probs.npy"),
                rtol=0,
                atol=CROSS_BACKEND_ATOL,
                err_msg=f"{name} {where}",
            )
            assert report[name] == {"optimizer": "AdamL2", "weight_decay": 1e-4, "loss": "SpatialWeightedCE"}, where
            # The optimizer's state (step counter, Adam's moments) is restored exactly, for resuming training.
            saved_state, loaded_state = (np.load(tmp_path / d / f"{name}.optimizer.npz") for d in (saved, predicted))
            assert len(saved_state.files) == len(loaded_state.files) > 1
            for key in saved_state.files:
                np.testing.assert_array_equal(loaded_state[key], saved_state[key], err_msg=f"{name} {where}")
