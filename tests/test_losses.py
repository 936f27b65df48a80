import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from ptx_keras import losses as L
from ptx_keras.data.weight_maps import class_weight_map, spatial_weight_map
from ptx_keras.errors import ConfigError
from ptx_keras.targets import pack_targets

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _batch(rng, batch=2, size=8):
    masks = np.zeros((batch, size, size), np.float32)
    masks[0, 2:5, 3:7] = 1
    if batch > 1:
        masks[1, 0:2, 0:3] = 1  # touching the border
    logits = rng.normal(size=(batch, size, size, 2)).astype(np.float32)
    return masks, logits, _softmax(logits).astype(np.float32)


def test_all_ones_weights_equal_keras_categorical_crossentropy(rng):
    masks, _, probs = _batch(rng)
    y_true = pack_targets(masks)
    one_hot = np.stack([1 - masks, masks], -1)
    expected = float(keras.losses.CategoricalCrossentropy()(one_hot, probs))
    for loss in (L.SpatialWeightedCE(), L.CE()):
        assert float(loss(y_true, probs)) == pytest.approx(expected, rel=1e-6)
    # CE ignores the weight channel.
    y_weighted = pack_targets(masks, np.full(masks.shape, 7.0, np.float32))
    assert float(L.CE()(y_weighted, probs)) == pytest.approx(expected, rel=1e-6)


def test_weighted_mean_hand_computed():
    # One 1x2 image: pixel 0 background with p_bg = 0.8, weight 2; pixel 1 PTX with p_ptx = 0.25, weight 3.
    # Per image: mean(2 * -log 0.8, 3 * -log 0.25) = (0.446287 + 4.158883) / 2 = 2.302585.
    y_true = pack_targets(np.array([[[0.0, 1.0]]]), np.array([[[2.0, 3.0]]]))
    y_pred = np.array([[[[0.8, 0.2], [0.75, 0.25]]]], np.float32)
    expected = (2 * -np.log(0.8) + 3 * -np.log(0.25)) / 2
    assert float(L.SpatialWeightedCE()(y_true, y_pred)) == pytest.approx(expected, rel=1e-6)


def test_reduction_is_per_image_pixel_mean_then_batch_mean(rng):
    masks, _, probs = _batch(rng, batch=2, size=8)
    weights = np.stack([spatial_weight_map(m) for m in masks])
    y_true = pack_targets(masks, weights)
    ce = -np.log(np.where(masks == 1, probs[..., 1], probs[..., 0]))
    per_image = (weights * ce).mean(axis=(1, 2))
    loss = L.SpatialWeightedCE()
    assert float(loss(y_true, probs)) == pytest.approx(per_image.mean(), rel=1e-6)
    none = L.SpatialWeightedCE(reduction=None)(y_true, probs)
    np.testing.assert_allclose(np.asarray(none), per_image, rtol=1e-6)
    assert float(L.SpatialWeightedCE(reduction="sum")(y_true, probs)) == pytest.approx(per_image.sum(), rel=1e-6)


def test_from_logits_equals_softmax_probabilities(rng):
    masks, logits, probs = _batch(rng)
    y_true = pack_targets(masks, np.stack([spatial_weight_map(m) for m in masks]))
    for cls in (L.SpatialWeightedCE, L.WeightedCE, L.CE, L.DiceLoss):
        a = float(cls(from_logits=True)(y_true, logits))
        b = float(cls()(y_true, probs))
        assert a == pytest.approx(b, rel=1e-5), cls.__name__


@pytest.mark.parametrize("cls", [L.SpatialWeightedCE, L.WeightedCE, L.CE, L.DiceLoss])
def test_gradients_finite_for_probabilities_zero_and_one(cls):
    masks = np.array([[[0.0, 1.0], [1.0, 0.0]]], np.float32)
    y_true = pack_targets(masks, np.array([[[1.0, 5.0], [5.0, 1.0]]]))
    # Exactly wrong and exactly right predictions: p = 0 and p = 1 everywhere.
    probs = np.array([[[[0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]]], np.float32)
    import tensorflow as tf

    y_pred = tf.Variable(probs)
    with tf.GradientTape() as tape:
        value = cls()(y_true, y_pred)
    grad = tape.gradient(value, y_pred)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(grad.numpy()))
    if cls is not L.DiceLoss:
        # A confidently wrong pixel costs -log(epsilon) (times its weight), not infinity.
        assert float(value) > 0


def test_float16_predictions_give_float32_loss_without_overflow(rng):
    size = 512
    masks = np.zeros((2, size, size), np.float32)
    masks[:, 100:300, 50:250] = 1
    weights = np.stack([spatial_weight_map(m) for m in masks])
    y_true = pack_targets(masks, weights)
    probs32 = np.full((2, size, size, 2), 0.5, np.float32)
    probs16 = ops.cast(probs32, "float16")
    for loss in (L.SpatialWeightedCE(), L.WeightedCE(), L.CE(), L.DiceLoss()):
        value = loss(y_true, probs16)
        assert value.dtype == "float32"
        assert np.isfinite(float(value))
        assert float(value) == pytest.approx(float(loss(y_true, probs32)), rel=1e-4)
        # `call` itself (as used inside CompoundLoss) casts too, whatever `__call__` did before it.
        per_image = loss.call(y_true, probs16)
        assert per_image.dtype == "float32" and np.all(np.isfinite(np.asarray(per_image)))
    # log 2 times the mean weight (3 terms present -> mean 3).
    assert float(L.SpatialWeightedCE()(y_true, probs16)) == pytest.approx(3 * np.log(2), rel=1e-4)
    logits16 = ops.cast(np.zeros((2, size, size, 2), np.float32), "float16")
    assert float(L.SpatialWeightedCE(from_logits=True)(y_true, logits16)) == pytest.approx(3 * np.log(2), rel=1e-4)


def test_weighted_ce_matches_numpy_class_weight_map(rng):
    masks, logits, probs = _batch(rng, batch=3, size=8)
    masks[2] = 0  # an image without pneumothorax: weights all ones
    cw = np.stack([class_weight_map(m) for m in masks])
    expected = np.asarray(L.SpatialWeightedCE(reduction=None)(pack_targets(masks, cw), probs))
    # The weight channel is ignored by W-CEL: feed garbage there.
    garbage = pack_targets(masks, np.full(masks.shape, 123.0, np.float32))
    got = np.asarray(L.WeightedCE(reduction=None)(garbage, probs))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    full = np.ones((1, 4, 4), np.float32)
    p = _softmax(rng.normal(size=(1, 4, 4, 2))).astype(np.float32)
    assert float(L.WeightedCE()(pack_targets(full), p)) == pytest.approx(float(L.CE()(pack_targets(full), p)))


def test_dice_hand_computed():
    # PTX probabilities 0.5, 1.0 on a 1x2 image whose mask is [1, 0]: intersection 0.5, sum(p) 1.5, sum(g) 1.
    y_true = pack_targets(np.array([[[1.0, 0.0]]]))
    y_pred = np.array([[[[0.5, 0.5], [0.0, 1.0]]]], np.float32)
    assert float(L.DiceLoss(smooth=0)(y_true, y_pred)) == pytest.approx(1 - 2 * 0.5 / 2.5)
    assert float(L.DiceLoss(smooth=1)(y_true, y_pred)) == pytest.approx(1 - 2 / 3.5)
    # Empty truth, empty prediction: loss 0 thanks to the smooth term.
    empty = pack_targets(np.zeros((1, 2, 2)))
    assert float(L.DiceLoss()(empty, np.tile([1.0, 0.0], (1, 2, 2, 1)).astype(np.float32))) == 0.0


def test_dice_per_image_and_per_batch():
    masks = np.array([[[1.0, 1.0]], [[0.0, 0.0]]])
    y_pred = np.array([[[[0, 1], [0, 1]]], [[[0, 1], [1, 0]]]], np.float32)
    # Image 0: perfect -> 0. Image 1: truth empty, p = [1, 0] -> 1 - 1/(1 + 1) = 0.5. Mean 0.25.
    assert float(L.DiceLoss()(pack_targets(masks), y_pred)) == pytest.approx(0.25)
    # Whole batch: intersection 2, sum(p) 3, sum(g) 2 -> 1 - 5/6.
    assert float(L.DiceLoss(per_image=False)(pack_targets(masks), y_pred)) == pytest.approx(1 - 5 / 6)


def test_get_loss_names_and_compound(rng):
    assert isinstance(L.get_loss("sw_cel"), L.SpatialWeightedCE)
    assert isinstance(L.get_loss(" WCE "), L.WeightedCE)
    assert isinstance(L.get_loss("ce", from_logits=True), L.CE) and L.get_loss("ce", from_logits=True).from_logits
    assert L.get_loss("dice", smooth=0.5).smooth == 0.5
    combo = L.get_loss("sw_cel+dice", from_logits=True, smooth=2.0, weights=[1.0, 0.5])
    assert isinstance(combo, L.CompoundLoss) and combo.name == "sw_cel_plus_dice"
    assert combo.losses[0].from_logits and combo.losses[1].smooth == 2.0
    masks, logits, _ = _batch(rng)
    y_true = pack_targets(masks, np.stack([spatial_weight_map(m) for m in masks]))
    expected = float(L.SpatialWeightedCE(from_logits=True)(y_true, logits)) + 0.5 * float(
        L.DiceLoss(from_logits=True, smooth=2.0)(y_true, logits)
    )
    assert float(combo(y_true, logits)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("focal", {}, "unknown loss 'focal'.*valid names: ce, dice, sw_cel, wce"),
        ("sw_cel+tversky", {}, "unknown loss 'tversky'"),
        (None, {}, "loss name must be a string"),
        ("ce", {"smooth": 1.0}, "takes no option 'smooth'"),
        ("sw_cel", {"weights": [1]}, "takes no option 'weights'"),
    ],
)
def test_get_loss_refuses(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        L.get_loss(name, **kwargs)


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: L.SpatialWeightedCE(from_logits="yes"), "from_logits='yes'"),
        (lambda: L.WeightedCE(epsilon=0), "epsilon=0"),
        (lambda: L.CE(epsilon=0.7), "epsilon=0.7"),
        (lambda: L.SpatialWeightedCE(reduction="median"), "median"),
        (lambda: L.DiceLoss(smooth=-1), "smooth=-1"),
        (lambda: L.DiceLoss(per_image=1), "per_image=1"),
        (lambda: L.DiceLoss(from_logits=None), "from_logits=None"),
        (lambda: L.CompoundLoss([]), "non-empty list"),
        (lambda: L.CompoundLoss([L.CE()], weights=[1, 2]), "one non-negative number per loss"),
        (lambda: L.CompoundLoss([L.CE()], weights=[-1]), "weights"),
    ],
)
def test_invalid_arguments(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_refuses_wrong_shapes():
    y_true = pack_targets(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match=r"y_pred must have shape .*Received: y_pred.shape=\(1, 4, 4, 3\)"):
        L.SpatialWeightedCE()(y_true, np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="y_true must have 2 channels"):
        L.CE()(np.zeros((1, 4, 4, 1), np.float32), np.full((1, 4, 4, 2), 0.5, np.float32))


@pytest.mark.parametrize(
    "loss",
    [
        L.SpatialWeightedCE(from_logits=True, epsilon=1e-6),
        L.WeightedCE(reduction="sum"),
        L.CE(name="plain"),
        L.DiceLoss(smooth=0.5, per_image=False),
        L.get_loss("sw_cel+dice", weights=[1.0, 2.0]),
    ],
)
def test_config_round_trip(loss, rng):
    config = keras.saving.serialize_keras_object(loss)
    assert config["registered_name"].startswith("ptx_keras>")
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(loss) and clone.get_config() == loss.get_config()
    masks, logits, probs = _batch(rng)
    y_true = pack_targets(masks, np.stack([spatial_weight_map(m) for m in masks]))
    y_pred = logits if getattr(loss, "from_logits", False) else probs
    assert float(clone(y_true, y_pred)) == pytest.approx(float(loss(y_true, y_pred)))


def _tiny_model(size=16):
    inputs = keras.Input((size, size, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(2, 1, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def test_tiny_model_trains_one_step_and_reloads(tmp_path, rng):
    size = 16
    images = rng.random((4, size, size, 1)).astype(np.float32)
    masks = np.zeros((4, size, size), np.float32)
    masks[0, 4:9, 5:11] = 1
    masks[2, 0:3, 10:16] = 1
    y_true = np.asarray(pack_targets(masks, np.stack([spatial_weight_map(m) for m in masks])))
    model = _tiny_model(size)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=L.SpatialWeightedCE(epsilon=1e-6))
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(images, y_true, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))

    path = tmp_path / "tiny.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)  # no custom_objects
    assert isinstance(reloaded.loss, L.SpatialWeightedCE)
    assert reloaded.loss.get_config() == model.loss.get_config()
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-6)
    assert reloaded.evaluate(images, y_true, verbose=0) == pytest.approx(
        model.evaluate(images, y_true, verbose=0), rel=1e-6
    )

    # A fresh process needs only `import ptx_keras.losses` (which registers the classes) before loading.
    code = (
        "import sys, keras, ptx_keras.losses; "
        "m = keras.models.load_model(sys.argv[1]); "
        "print(type(m.loss).__name__, m.loss.get_config()['epsilon'])"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True, env=env)
    assert out.stdout.split()[-2:] == ["SpatialWeightedCE", "1e-06"]


def test_compound_loss_name_is_a_valid_keras_scope():
    import re

    loss = L.get_loss("sw_cel+dice")
    assert re.fullmatch(r"[A-Za-z0-9_.\\/>-]*", loss.name), loss.name
