"""Fine-tuning (`ptx_keras.finetune`, `train.init_from`): loading by layer name, the report, input channels, a
new aux head, refusal, encoder freezing and the end-to-end run."""

import csv
import json
import os

import numpy as np
import pytest

from ptx_keras import finetune
from ptx_keras.config import load_config
from ptx_keras.errors import ConfigError, ModelError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")


def _model(channels=1, seed=0, **overrides):
    import keras

    from ptx_keras.models import build_model

    keras.utils.set_random_seed(seed)
    options = {"layers_per_block": 1, "num_pools": 2, "growth_rate": 4, "multiscale_filters": 4, "dropout_rate": 0.0}
    options.update(overrides)
    return build_model("ms_scse_fc_densenet103", input_shape=(16, 16, channels), num_classes=2, **options)


def _randomise_batch_norm(model, seed=1):
    """Non-trivial moving statistics, so that copying them is checked too."""
    rng = np.random.default_rng(seed)
    for v in model.non_trainable_weights:
        v.assign(rng.uniform(0.5, 1.5, tuple(v.shape)).astype("float32"))


def _saved(tmp_path, model, name="source.keras"):
    path = str(tmp_path / name)
    model.save(path)
    return path


def _mask(outputs):
    return np.asarray(outputs["mask"] if isinstance(outputs, dict) else outputs)


def _images(channels, n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 16, 16, channels)).astype("float32")


def test_same_architecture_loads_every_layer_and_outputs_are_equal(tmp_path):
    source = _model(seed=0)
    _randomise_batch_norm(source)
    path = _saved(tmp_path, source)
    target = _model(seed=7)
    x = _images(1)
    assert not np.allclose(_mask(target(x)), _mask(source(x)))
    report = finetune.initialize_from(target, path)
    counts = report.counts()
    assert counts == {
        "loaded": sum(1 for layer in target.layers if layer.weights),
        "reshaped": 0,
        "skipped": 0,
        "unused": 0,
    }
    np.testing.assert_array_equal(_mask(target(x)), _mask(source(x)))
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert report.model_file == os.path.abspath(path) and len(report.model_sha256) == 64


def test_a_run_directory_is_read_through_its_best_model(tmp_path):
    from ptx_keras.runs import RunDir

    run = RunDir(str(tmp_path / "run"))
    os.makedirs(run.path)
    with open(run.config_file, "w") as f:
        f.write("name: run\n")
    source = _model(seed=0)
    source.save(run.best_model)
    report = finetune.initialize_from(_model(seed=3), run.path)
    assert report.source == os.path.abspath(run.path) and report.model_file == os.path.abspath(run.best_model)
    assert report.counts()["loaded"] > 0


def test_different_shapes_are_skipped_and_reported(tmp_path):
    path = _saved(tmp_path, _model(seed=0))
    target = _model(seed=1, growth_rate=6)  # every dense block and transition changes; the first conv does not
    before = {v.path: v.numpy().copy() for v in target.weights}
    report = finetune.initialize_from(target, path)
    rows = {layer.layer: layer for layer in report.layers}
    assert rows["multiscale_conv"].status == "loaded"
    assert rows["down_block_0"].status == "skipped"
    assert rows["down_block_0"].reason.startswith("shape mismatch: ")
    for v in target.get_layer("down_block_0").weights:  # kept its initialisation
        np.testing.assert_array_equal(v.numpy(), before[v.path])
    out = report.write_csv(str(tmp_path / "init_from.csv"))
    with open(out, newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == finetune.REPORT_COLUMNS
    assert {r["layer"]: r["status"] for r in table}["down_block_0"] == "skipped"
    assert "skipped" in report.describe() and "down_block_0" in report.describe()


@pytest.mark.parametrize("src_channels, dst_channels", [(3, 1), (1, 3)])
def test_a_different_input_channel_count_is_reshaped_keeping_the_grayscale_response(
    tmp_path, src_channels, dst_channels
):
    source = _model(channels=src_channels, seed=0)
    _randomise_batch_norm(source)
    path = _saved(tmp_path, source)
    target = _model(channels=dst_channels, seed=5)
    report = finetune.initialize_from(target, path)
    rows = {layer.layer: layer for layer in report.layers}
    assert rows["multiscale_conv"].status == "reshaped"
    assert "input channels" in rows["multiscale_conv"].reason
    assert report.counts()["skipped"] == 0
    gray = _images(1)
    out_src = _mask(source(np.repeat(gray, src_channels, axis=-1)))
    out_dst = _mask(target(np.repeat(gray, dst_channels, axis=-1)))
    np.testing.assert_allclose(out_dst, out_src, atol=1e-5)


def test_spread_channels_by_hand():
    kernel = np.arange(2 * 3, dtype="float32").reshape(1, 1, 3, 2)  # in-channel sums: 6 and 9
    np.testing.assert_array_equal(finetune.spread_channels(kernel, 1), [[[[6.0, 9.0]]]])
    np.testing.assert_array_equal(finetune.spread_channels(kernel, 2), [[[[3.0, 4.5], [3.0, 4.5]]]])


def test_a_new_aux_head_keeps_its_initialisation_and_the_mask_is_unchanged(tmp_path):
    source = _model(seed=0)
    path = _saved(tmp_path, source)
    target = _model(seed=2, aux_head=True)
    report = finetune.initialize_from(target, path)
    rows = {layer.layer: layer for layer in report.layers}
    assert rows["aux_logit"].status == "skipped" and rows["aux_logit"].reason == "no layer of that name in the source"
    assert report.counts()["loaded"] == len([layer for layer in source.layers if layer.weights])
    x = _images(1)
    np.testing.assert_array_equal(_mask(target(x)), _mask(source(x)))
    # The reverse: the source's aux head is reported as unused.
    back = finetune.initialize_from(_model(seed=3), _saved(tmp_path, target, "aux.keras"))
    assert back.names("unused") == ["aux_logit"]


def test_a_model_with_nothing_in_common_is_refused(tmp_path):
    import keras

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="classifier")])
    path = _saved(tmp_path, other, "other.keras")
    target = _model(seed=0)
    before = [v.numpy().copy() for v in target.weights]
    with pytest.raises(ModelError, match="nothing in common"):
        finetune.initialize_from(target, path)
    for v, b in zip(target.weights, before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_invalid_sources_are_refused(tmp_path):
    with pytest.raises(ModelError, match="no run directory or .keras file"):
        finetune.source_model_file(str(tmp_path / "missing"))
    other = tmp_path / "weights.h5"
    other.write_bytes(b"x")
    with pytest.raises(ModelError, match="must be a run directory or a .keras file"):
        finetune.source_model_file(str(other))
    with pytest.raises(ModelError, match="not a run directory"):
        finetune.source_model_file(str(tmp_path))  # a folder without config.yaml


def test_encoder_is_the_down_path_and_the_bottleneck():
    model = _model(seed=0, aux_head=True)
    names = [layer.name for layer in finetune.encoder_layers(model)]
    assert names == [
        "multiscale_conv",
        "down_block_0",
        "transition_down_0",
        "down_block_1",
        "transition_down_1",
        "bottleneck",
    ]


def test_encoder_needs_a_known_size():
    from ptx_keras.models import build_model

    model = build_model("fc_densenet56", input_shape=(None, None, 1), num_pools=2, layers_per_block=1, growth_rate=2)
    with pytest.raises(ModelError, match="encoder cannot be found"):
        finetune.encoder_layers(model)


def test_a_model_without_a_decoder_cannot_freeze_its_encoder():
    import keras

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, padding="same", name="conv")])
    with pytest.raises(ModelError, match="no decoder"):
        finetune.encoder_layers(model)


def test_training_phases():
    P = finetune.Phase
    assert finetune.training_phases(10) == [P(0, 10, False)]
    assert finetune.training_phases(10, 3) == [P(0, 3, True), P(3, 10, False)]
    assert finetune.training_phases(10, 3, done=2) == [P(0, 3, True), P(3, 10, False)]
    assert finetune.training_phases(10, 3, done=3) == [P(0, 10, False)]  # resumed after the frozen epochs
    assert finetune.training_phases(3, 3) == [P(0, 3, True)]


def test_freeze_then_unfreeze_with_recompile_keeps_the_optimizer():
    import keras

    model = _model(seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy", jit_compile=False)
    model.optimizer.build(model.trainable_variables)  # as training.build_and_compile does: every variable
    x = _images(1, n=4)
    y = np.stack([1 - (x[..., 0] > 0.5), x[..., 0] > 0.5], axis=-1).astype("float32")
    encoder = finetune.encoder_layers(model)
    decoder = model.get_layer("up_block_1")

    def snapshot(layer):
        return [v.numpy().copy() for v in layer.weights]

    finetune.apply_phase(model, finetune.Phase(0, 1, True), encoder)
    assert not any(layer.trainable for layer in encoder)
    enc, dec = snapshot(encoder[1]), snapshot(decoder)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    for a, b in zip(enc, snapshot(encoder[1])):  # frozen: weights and moving statistics unchanged
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(dec, snapshot(decoder)))
    optimizer, steps = model.optimizer, int(model.optimizer.iterations.numpy())
    assert steps == 1

    finetune.apply_phase(model, finetune.Phase(1, 2, False), encoder)
    assert all(layer.trainable for layer in encoder) and model.optimizer is optimizer
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(enc, snapshot(encoder[1])))
    assert int(model.optimizer.iterations.numpy()) == 2  # the step counter (and a schedule) carried on


def test_recompile_needs_a_compiled_model():
    with pytest.raises(ModelError, match="never compiled"):
        finetune.recompile(_model(seed=0))


@pytest.mark.parametrize(
    "sets, match",
    [
        (["train.freeze_encoder_epochs=2"], "set train.init_from"),
        (["train.init_from=x", "train.freeze_encoder_epochs=-1"], "must be >= 0"),
        (["train.init_from=x", "train.freeze_encoder_epochs=9", "train.epochs=6"], "more than train.epochs"),
    ],
)
def test_config_keys_are_validated(sets, match):
    with pytest.raises(ConfigError, match=match):
        load_config(QUICKSTART, sets)


def test_config_defaults():
    cfg = load_config(QUICKSTART)
    assert cfg.train.init_from is None and cfg.train.freeze_encoder_epochs == 0


TINY = [
    "data.phantoms.n=16",
    "data.phantoms.size=32",
    "data.image_size=32",
    "data.shard_size=8",
    "data.workers=1",
    "model.options={layers_per_block: 1, num_pools: 2, growth_rate: 4, first_conv_filters: 8, multiscale_filters: 4}",
    "train.batch_size=4",
    "train.tensorboard=false",
    "train.jit_compile=off",
    "train.evaluate=false",
    "train.export=false",
    "evaluation.search_thresholds=false",
]


def _train_args(tmp_path, name, *extra):
    out = ["--config", QUICKSTART, "--output-dir", str(tmp_path / "runs"), "--name", name, "--verbose", "0"]
    for s in TINY + [f"data.cache_dir={tmp_path / 'cache'}"] + list(extra):
        out += ["--set", s]
    return out


@pytest.mark.slow
def test_fine_tuning_run_end_to_end(tmp_path, capsys):
    """A pre-training run, then a run started from it with its encoder frozen for the first epoch: the run
    records its source, writes the report, and trains both phases; a source with nothing in common is refused
    before the run directory is made."""
    from ptx_keras.cli.train import main
    from ptx_keras.runs import RunDir

    assert main(_train_args(tmp_path, "pre", "train.epochs=1")) == 0
    pre = RunDir(str(tmp_path / "runs" / "pre"))
    assert (
        main(
            _train_args(
                tmp_path, "fine", "train.epochs=2", "train.freeze_encoder_epochs=1", "model.options.aux_head=true"
            )
            + ["--init-from", pre.path]
        )
        == 0
    )
    run = RunDir(str(tmp_path / "runs" / "fine"))
    meta = run.read_metadata()["init_from"]
    assert meta["model_file"] == os.path.abspath(pre.best_model) and meta["freeze_encoder_epochs"] == 1
    assert meta["counts"]["loaded"] > 0 and meta["skipped"] == ["aux_logit"]
    assert meta["report"] == run.init_report_file and os.path.isfile(run.init_report_file)
    with open(run.history_file, newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1]
    assert run.load_config().train.init_from == pre.path
    json.dumps(meta)

    import keras

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="classifier")])
    other.save(str(tmp_path / "other.keras"))
    capsys.readouterr()
    assert (
        main(_train_args(tmp_path, "refused", "train.epochs=1") + ["--init-from", str(tmp_path / "other.keras")]) == 2
    )
    assert "nothing in common" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "runs" / "refused")
