"""`ptx_keras.serving`: the deployment graph's preprocessing (antialiased resize, rounding to the training levels),
its post-processing and diagnosis, the input contract and `DeployedModel` (expected values computed by hand or by
the NumPy rule; the exported SavedModel is tests/test_export.py's)."""

import numpy as np
import pytest

from ptx_keras.errors import ModelError

from tiny import BRIGHT_SIZE, bright_is_ptx_model, smooth_picture

SIZE = 64


def test_diagnosis_in_graph_matches_numpy_rule():
    from ptx_keras.diagnosis import Thresholds, diagnose
    from ptx_keras.serving import GraphPipeline

    th = Thresholds(min_area=50, mask_threshold=0.5, reference_size=256)
    pipeline = GraphPipeline(SIZE, 3, th)
    # At 64 x 64, 50 pixels at 256 x 256 scale to 50 / 16 = 3.125 pixels: 3 is negative, 4 positive.
    for n_pixels, expected in [(0, 0), (3, 0), (4, 1), (40, 1)]:
        p = np.full((SIZE, SIZE), 0.2, np.float32)
        p.flat[:n_pixels] = 0.9
        p[10, 10] = 0.5 if n_pixels < 40 else 0.9  # exactly at the threshold: not pneumothorax
        out = pipeline.postprocess(p, SIZE, SIZE)
        ref = diagnose(p, thresholds=th)
        assert out["diagnosis"] == ref.label == expected
        assert out["score"] == pytest.approx(ref.score, rel=1e-6)
        assert out["max_probability"] == pytest.approx(ref.max_prob)
        assert out["area"] == ref.area  # at the model size the two areas coincide


def test_postprocess_resizes_to_the_input_size():
    from ptx_keras.diagnosis import Thresholds
    from ptx_keras.serving import GraphPipeline

    pipeline = GraphPipeline(SIZE, 1, Thresholds(min_area=0))
    p = np.zeros((SIZE, SIZE), np.float32)
    p[:, SIZE // 2 :] = 1.0  # right half
    out = pipeline.postprocess(p, 128, 256)
    assert out["probability"].shape == out["mask"].shape == (128, 256)
    assert out["mask"][:, :120].sum() == 0 and out["mask"][:, 136:].all()
    assert out["area"] == out["mask"].sum() == 128 * 128  # bilinear: half the columns exceed 0.5
    assert out["diagnosis"] == 1


def test_preprocessing_matches_data_preparation():
    from ptx_keras.data.arrays import resize_image
    from ptx_keras.diagnosis import Thresholds
    from ptx_keras.serving import GraphPipeline

    pipeline = GraphPipeline(SIZE, 3, Thresholds())
    picture = smooth_picture((300, 417))
    for image, value_max in [
        (np.round(picture * 255).astype(np.uint8), 255),
        (np.round(picture * 4095).astype(np.uint16), 4095),  # a 12-bit DICOM stored as uint16
        (picture.astype(np.float32), 1.0),
    ]:
        x = pipeline.preprocess(image, value_max)
        assert x.shape == (SIZE, SIZE, 3) and x.dtype == np.float32
        np.testing.assert_array_equal(x[..., 0], x[..., 2])
        prepared = resize_image(image, SIZE, value_max, 8)
        # One 8-bit level at most (rounding ties of values computed in a different order).
        assert np.abs(x[..., 0] * 255 - prepared).max() <= 1.0 + 1e-4
        assert np.mean(np.abs(x[..., 0] * 255 - prepared)) < 0.01


def test_preprocess_rejects_bad_images():
    from ptx_keras.diagnosis import Thresholds
    from ptx_keras.serving import GraphPipeline

    pipeline = GraphPipeline(SIZE, 1, Thresholds())
    with pytest.raises(ValueError, match="Thresholds"):
        GraphPipeline(SIZE, 1, {"min_area": 50, "mask_threshold": 0.5, "reference_size": 256})
    with pytest.raises(ValueError, match="2-D"):
        pipeline.preprocess(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="value_max"):
        pipeline.preprocess(np.zeros((4, 4), np.uint8), 0)


def test_resize_antialiased_by_hand():
    import tensorflow as tf

    from ptx_keras.serving import resize_antialiased

    # 4 -> 2 columns: output i is centred at (i + 0.5) * 2 with triangle support 2; input j weighs
    # max(0, 1 - |j + 0.5 - centre| / 2): (0.75, 0.75, 0.25, 0) for column 0, normalised by 1.75.
    ramp = np.tile(np.arange(4, dtype=np.float32), (4, 1))[None]  # (1, 4, 4): value = column
    out = resize_antialiased(tf.constant(ramp), 2).numpy()
    assert out.shape == (1, 2, 2)
    np.testing.assert_allclose(out[0], [[1.25 / 1.75, 3 - 1.25 / 1.75]] * 2, rtol=1e-6)
    const = resize_antialiased(tf.fill([2, 5, 7], 3.0), 3).numpy()  # the weights sum to 1: a constant stays
    np.testing.assert_allclose(const, np.full((2, 3, 3), 3.0), rtol=1e-6)


def test_preprocess_images_rounds_to_the_training_levels_and_replicates_channels():
    import tensorflow as tf

    from ptx_keras.serving import preprocess_images

    images = tf.constant(np.full((2, 5, 5), 100, np.uint16))  # a 12-bit image: value_max 4095
    x = preprocess_images(images, 4, 3, value_max=4095.0).numpy()
    assert x.shape == (2, 4, 4, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x, 6 / 255, rtol=1e-6)  # round(100 * 255 / 4095) = round(6.23) = 6 levels
    x16 = preprocess_images(images, 4, 1, value_max=4095.0, bit_depth=16).numpy()
    np.testing.assert_allclose(x16, 1600 / 65535, rtol=1e-6)  # round(100 * 65535 / 4095) = round(1600.4)
    clipped = preprocess_images(tf.constant(np.full((1, 2, 2, 1), 2.0, np.float32)), 2, 1).numpy()
    np.testing.assert_array_equal(clipped, np.ones((1, 2, 2, 1), np.float32))  # above value_max: clipped to 1


def test_model_input_reads_the_contract_and_refuses_other_outputs():
    import keras

    from ptx_keras.serving import model_input

    assert model_input(bright_is_ptx_model(), "bright") == (BRIGHT_SIZE, 1)
    inp = keras.Input((8, 8, 1))
    three = keras.Model(inp, keras.layers.Conv2D(3, 1)(inp))
    with pytest.raises(
        ModelError, match=r"three: expected a 2-class softmax output. Received: output_shape=\(None, 8, 8, 3\)"
    ):
        model_input(three, "three")


def test_deployed_model_defaults_and_invalid_arguments():
    from ptx_keras.diagnosis import Thresholds
    from ptx_keras.serving import deployed_model

    model = bright_is_ptx_model()
    deployed = deployed_model(model)
    assert (deployed.image_size, deployed.channels, deployed.bit_depth) == (BRIGHT_SIZE, 1, 8)
    assert deployed.thresholds == Thresholds() and deployed.thresholds_source == "ptx_keras.constants"
    assert deployed.tta == "none" and deployed.run_dir is None and deployed.has_aux is False
    assert deployed_model(model, Thresholds(min_area=5), tta="hflip").thresholds_source == "argument"
    with pytest.raises(ModelError, match="tta must be one of"):
        deployed_model(model, tta="vflip")
    with pytest.raises(ModelError, match="no aux head"):
        deployed_model(model, Thresholds(gate="aux"))


def test_load_deployed_run_reads_the_runs_contract_and_thresholds(run_dir):
    import os

    from ptx_keras.runs import RunDir
    from ptx_keras.serving import load_deployed_run

    deployed = load_deployed_run(run_dir)
    run = RunDir(run_dir)
    assert deployed.model_name == "bright_is_ptx" and (deployed.image_size, deployed.channels) == (BRIGHT_SIZE, 1)
    assert deployed.thresholds_source == run.config_file and deployed.run_dir == os.path.abspath(run.path)
    assert deployed.thresholds == run.read_thresholds().thresholds and deployed.tta == "none"
