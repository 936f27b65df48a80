import numpy as np
import pytest

from ptx_keras import targets


def test_pack_and_split_round_trip():
    mask = np.zeros((2, 4, 4), "uint8")
    mask[0, 1:3, 1:3] = 1
    weight = np.arange(32, dtype="float32").reshape(2, 4, 4)
    y_true = targets.pack_targets(mask, weight)
    assert tuple(y_true.shape) == (2, 4, 4, 2)
    m, w = targets.split_targets(y_true)
    np.testing.assert_array_equal(np.asarray(m), mask.astype("float32"))
    np.testing.assert_array_equal(np.asarray(w), weight)
    assert targets.MASK_CHANNEL == 0 and targets.WEIGHT_CHANNEL == 1


def test_pack_without_weight_gives_ones_and_channel_axis_input():
    mask = np.ones((1, 3, 3, 1), "float32")
    y_true = np.asarray(targets.pack_targets(mask))
    assert y_true.shape == (1, 3, 3, 2)
    np.testing.assert_array_equal(y_true[..., 1], 1.0)


def test_split_refuses_wrong_channel_count():
    with pytest.raises(ValueError, match="Received: y_true.shape"):
        targets.split_targets(np.zeros((1, 4, 4, 3), "float32"))


def test_one_hot_mask():
    oh = np.asarray(targets.one_hot_mask(np.array([[[0.0, 1.0]]])))
    np.testing.assert_array_equal(oh, [[[[1, 0], [0, 1]]]])
    with pytest.raises(ValueError, match="num_classes=3"):
        targets.one_hot_mask(np.zeros((1, 2, 2)), num_classes=3)
