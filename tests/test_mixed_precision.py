"""Mixed precision (`train.mixed_precision: on`, Keras' `mixed_float16`) end to end, on the CPU (slow but real).

Under `mixed_float16` the layers compute in float16 with float32 weights; the softmax, the losses, the weight maps
and the metrics must stay float32: an SW-CEL weight map reaches |N| / |T_c| (65,536 for a one-pixel pneumothorax
at 256 x 256, more at higher resolutions) and a weight times a clipped cross-entropy (up to -log 1e-7 = 16)
exceeds float16's largest value, 65,504.

Tolerances: float16 carries 11 significant bits (relative rounding 2^-11 ~ 5e-4); a float32 value computed from
float16 activations matches the same computation elsewhere to ~1e-3 relative.
"""

import json
import os

import keras
import numpy as np
import pytest

from ptx_keras import losses as L
from ptx_keras.models import build_model
from ptx_keras.optimizers import make_optimizer
from ptx_keras.targets import pack_targets

# The paper's architecture (multi-scale first convolution, scSE in every dense layer), tiny.
TINY = dict(
    layers_per_block=[1, 1, 1, 1, 1], growth_rate=2, first_conv_filters=4, multiscale_filters=2, dropout_rate=0.0
)


@pytest.fixture
def mixed_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


class _RecordingSWCEL(L.SpatialWeightedCE):
    """SW-CEL that records the dtypes it receives inside the compiled train step (at trace time)."""

    seen = []

    def call(self, y_true, y_pred):
        self.seen.append((_dtype(y_true), _dtype(y_pred)))
        return super().call(y_true, y_pred)


def test_large_weights_train_with_a_finite_float32_loss(mixed_policy, rng):
    model = build_model("ms_scse_fc_densenet103", input_shape=(16, 16, 1), **TINY)
    assert model.layers[-1].compute_dtype == "float32" and model.output.dtype == "float32"
    assert any(layer.compute_dtype == "float16" for layer in model.layers)
    optimizer = make_optimizer(learning_rate=1e-3)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    loss = _RecordingSWCEL()
    _RecordingSWCEL.seen = []
    model.compile(optimizer=optimizer, loss=loss)
    x = rng.random((2, 16, 16, 1)).astype("float32")
    mask = np.zeros((2, 16, 16), np.float32)
    mask[:, 6:8, 6:8] = 1
    weight = np.where(mask == 1, 1e5, 1.0).astype("float32")  # above float16's 65,504
    y = keras.ops.convert_to_numpy(pack_targets(mask, weight))
    # The first step's loss is the float32 SW-CEL of the training-mode forward pass (no dropout); per image, the
    # sum of weight x cross-entropy over the 4 heavy pixels is ~1.6e5, beyond float16.
    expected = float(L.SpatialWeightedCE()(y, model(x, training=True)))
    assert np.isfinite(expected) and expected * 256 > 65504
    losses = [float(model.train_on_batch(x, y)) for _ in range(20)]
    assert losses[0] == pytest.approx(expected, rel=1e-3)
    assert all(np.isfinite(losses))
    assert set(_RecordingSWCEL.seen) == {("float32", "float32")}  # weight maps and softmax reach the loss in float32
    assert all(np.all(np.isfinite(keras.ops.convert_to_numpy(w))) for w in model.weights)
    # Loss scaling: the float16 gradients of such a loss overflow at the initial scale 2^15; the optimizer skips
    # those steps and halves the scale until they are finite, then trains.
    assert float(optimizer.dynamic_scale) < 2.0**15
    assert 0 < int(optimizer.iterations) < 20
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_mixed_precision_run_trains_and_its_files_predict_in_float32(tmp_path):
    import tensorflow as tf

    from ptx_keras.cli.train import main as train_main
    from ptx_keras.data.pipeline import make_dataset
    from ptx_keras.loading import load_model
    from ptx_keras.runs import RunDir

    sets = [
        "name=mp",
        "data.phantoms.n=16",
        "data.phantoms.size=32",
        "data.image_size=32",
        "data.shard_size=8",
        "data.workers=1",
        f"data.cache_dir={tmp_path / 'cache'}",
        "model.name=ms_scse_fc_densenet103",
        "model.options={layers_per_block: [1, 1, 1, 1, 1], growth_rate: 2, first_conv_filters: 4, "
        "multiscale_filters: 2, dropout_rate: 0.0}",
        "train.mixed_precision=on",
        "train.epochs=2",
        "train.batch_size=4",
        "train.tensorboard=false",
        "train.jit_compile=off",
        "train.evaluate=false",
        "train.export=true",
        "evaluation.search_thresholds=false",
    ]
    args = ["--output-dir", str(tmp_path / "runs"), "--verbose", "0"]
    for s in sets:
        args += ["--set", s]
    try:
        assert train_main(args) == 0
    finally:
        keras.mixed_precision.set_global_policy("float32")  # train set it for the process
    run = RunDir(str(tmp_path / "runs" / "mp"))
    with open(run.history_file) as f:
        rows = f.read().splitlines()
    assert len(rows) == 3  # header + 2 epochs
    header = rows[0].split(",")
    for row in rows[1:]:
        values = dict(zip(header, row.split(",")))
        assert np.isfinite(float(values["loss"])) and np.isfinite(float(values["val_loss"]))

    # The data reaches the model with float32 targets (mask and weight map).
    prepared = run.prepared_dir()
    assert make_dataset(prepared, "val", 4, False, channels=1).element_spec[1].dtype == tf.float32

    # best.keras, loaded in a float32 process: its layers keep their mixed policy, the output is float32.
    model = load_model(run.best_model, compile=True)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert {layer.dtype_policy.name for layer in model.layers if layer.weights} == {"mixed_float16"}
    x = np.random.default_rng(1).random((2, 32, 32, 1)).astype("float32")
    probs = model.predict(x, verbose=0)
    assert probs.dtype == np.float32 and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)

    # The SavedModel: float32 out of every signature; the raw model's probabilities match best.keras's.
    with open(os.path.join(run.saved_model_dir, "export.json")) as f:
        version = str(json.load(f).get("version", 1))
    saved = tf.saved_model.load(os.path.join(run.saved_model_dir, version))
    raw = saved.signatures["serve_preprocessed"](images=tf.constant(x))
    ((name, exported),) = raw.items()
    assert exported.dtype == tf.float32
    np.testing.assert_allclose(exported.numpy(), probs, atol=2e-3)
    served = saved.signatures["serving_default"](images=tf.constant(x[..., 0]))
    assert served["probability"].dtype == tf.float32 and np.all(np.isfinite(served["probability"].numpy()))
    assert served["probability"].shape == (2, 32, 32)
