"""The image-level (aux) head: built on the bottleneck of FC-DenseNets and U-Nets, trained with a weighted BCE
term, saved and reloaded, and used as the diagnosis gate."""

import numpy as np
import pytest

import tiny

SIZE = 16


def fc(aux_head=True, **kw):
    return tiny.small_fc(SIZE, aux_head=aux_head, **kw)


def tiny_set(n=16, seed=0):
    """Dark noise; every other image has a bright 6 x 6 square, its mask."""
    from ptx_keras.targets import pack_targets

    rng = np.random.default_rng(seed)
    x = rng.random((n, SIZE, SIZE, 1)).astype(np.float32) * 0.2
    mask = np.zeros((n, SIZE, SIZE), np.float32)
    for i in range(0, n, 2):
        r, c = rng.integers(0, SIZE - 6, 2)
        mask[i, r : r + 6, c : c + 6] = 1
        x[i, r : r + 6, c : c + 6, 0] += 0.7
    return x, np.asarray(pack_targets(mask)), mask


@pytest.mark.parametrize("name", ["fc_densenet56", "unet", "ms_scse_unet"])
def test_aux_head_outputs_and_leaves_the_mask_path_unchanged(name):
    import keras

    from ptx_keras import build_model
    from ptx_keras.models.common import has_aux_output

    kw = (
        dict(growth_rate=3, layers_per_block=1, num_pools=2, first_conv_filters=6)
        if name.startswith("fc")
        else dict(base_filters=4, depth=2)
    )
    keras.utils.set_random_seed(1)
    aux_model = build_model(name, input_shape=(SIZE, SIZE, 1), aux_head=True, **kw)
    plain = build_model(name, input_shape=(SIZE, SIZE, 1), **kw)
    assert has_aux_output(aux_model) and not has_aux_output(plain)
    assert len(aux_model.weights) == len(plain.weights) + 2  # the Dense kernel and bias
    # Same weights in the shared layers: the mask output is exactly the plain model's.
    for layer in plain.layers:
        layer.set_weights(aux_model.get_layer(layer.name).get_weights())
    x = tiny_set(4)[0]
    out = aux_model.predict_on_batch(x)
    assert set(out) == {"mask", "aux"} and out["aux"].shape == (4, 1) and out["aux"].dtype == np.float32
    assert ((out["aux"] > 0) & (out["aux"] < 1)).all()
    np.testing.assert_array_equal(out["mask"], plain.predict_on_batch(x))


def test_aux_head_stays_float32_under_mixed_precision():
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = fc()
        out = model(tiny_set(2)[0])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.backend.standardize_dtype(out["aux"].dtype) == "float32"
    assert keras.backend.standardize_dtype(out["mask"].dtype) == "float32"
    assert model.get_layer("aux_logit").compute_dtype == "float16"  # the head itself runs in float16


@pytest.mark.slow  # one short training run: the first step traces the two-output model
def test_aux_head_trains_and_round_trips_through_keras(tmp_path):
    """5 epochs on 16 images: the image-level BCE falls; the saved model reloads with equal outputs (~15 s: the
    first training step traces the two-output model)."""
    import keras
    import tensorflow as tf

    from ptx_keras.config import load_config
    from ptx_keras.losses import image_labels
    from ptx_keras.training import aux_targets, build_and_compile, monitored

    cfg = load_config(
        extra={
            "data": {"image_size": SIZE, "channels": 1},
            "model": {
                "name": "fc_densenet56",
                "options": {
                    "growth_rate": 4,
                    "layers_per_block": 1,
                    "num_pools": 2,
                    "first_conv_filters": 8,
                    "aux_head": True,
                },
            },
            "train": {"learning_rate": 1e-2},
            "loss": {"aux_weight": 1.0},
        }
    )
    assert monitored(cfg) == "val_mask_dsc1"
    keras.utils.set_random_seed(0)
    model = build_and_compile(cfg, jit_compile=False)
    x, y, mask = tiny_set()
    np.testing.assert_array_equal(np.asarray(image_labels(y))[:, 0], mask.reshape(16, -1).max(axis=1))
    ds = aux_targets(tf.data.Dataset.from_tensor_slices((x, y)).batch(8))
    history = model.fit(ds, epochs=5, verbose=0).history
    assert {"aux_loss", "mask_loss", "aux_auc", "mask_dsc1"} <= set(history)
    assert history["aux_loss"][-1] < 0.5 * history["aux_loss"][0]
    assert history["aux_auc"][-1] > 0.9
    path = str(tmp_path / "aux.keras")
    model.save(path)
    from ptx_keras.loading import load_model

    for compile in (False, True):
        again = load_model(path, compile=compile)
        a, b = model.predict_on_batch(x), again.predict_on_batch(x)
        np.testing.assert_array_equal(a["aux"], b["aux"])
        np.testing.assert_array_equal(a["mask"], b["mask"])


def test_gate_in_the_serving_graph_follows_the_rule():
    from ptx_keras.diagnosis import Thresholds, diagnose
    from ptx_keras.serving import GraphPipeline

    prob = np.zeros((SIZE, SIZE), np.float32)
    prob[:4, :4] = 0.9  # 16 pixels: positive by area (min_area 10 at SIZE)
    area = Thresholds(0.5, 10, SIZE)
    for gate, aux, expected in (("area", 0.1, 1), ("aux", 0.1, 0), ("aux", 0.8, 1), ("both", 0.8, 1), ("both", 0.3, 0)):
        t = area.replace(gate=gate)
        out = GraphPipeline(SIZE, 1, t).postprocess(prob, SIZE, SIZE, aux)
        assert int(out["diagnosis"]) == expected == diagnose(prob, thresholds=t, aux_probability=aux).label
        assert float(out["aux_probability"]) == pytest.approx(aux)
    with pytest.raises(ValueError, match="aux_head"):
        GraphPipeline(SIZE, 1, area.replace(gate="aux")).postprocess(prob, SIZE, SIZE)


def test_invalid_aux_settings(tmp_path):
    from ptx_keras.config import load_config
    from ptx_keras.diagnosis import Thresholds
    from ptx_keras.errors import ConfigError, ModelError
    from ptx_keras.serving import deployed_model

    with pytest.raises(ValueError, match="aux_head"):
        fc(aux_head="yes")
    with pytest.raises(ConfigError, match="aux_head"):
        load_config(extra={"diagnosis": {"gate": "aux"}})
    with pytest.raises(ConfigError, match="diagnosis.gate"):
        load_config(extra={"diagnosis": {"gate": "image"}})
    with pytest.raises(ConfigError, match="aux_weight"):
        load_config(extra={"loss": {"aux_weight": -1}})
    with pytest.raises(ModelError, match="no aux head"):
        deployed_model(fc(aux_head=False), Thresholds(gate="aux"))
    cfg = load_config(
        extra={"diagnosis": {"gate": "both", "aux_threshold": 0.3}, "model": {"options": {"aux_head": True}}}
    )
    assert cfg.diagnosis.thresholds() == Thresholds(gate="both", aux_threshold=0.3)
