"""Tests for ptx_keras.metrics.segmentation: hand-computed PA, Dice and Hausdorff values."""

import math

import numpy as np
import pandas as pd
import pytest
from skimage.metrics import hausdorff_distance

from ptx_keras.metrics.segmentation import (
    as_binary_mask,
    batch_dice,
    batch_segmentation_scores,
    dice_from_counts,
    segmentation_scores,
    summarize_scores,
    surface_distances,
)


def _mask(shape, *pixels_or_boxes):
    m = np.zeros(shape, dtype=bool)
    for item in pixels_or_boxes:
        if len(item) == 2:
            m[item] = True
        else:
            r0, r1, c0, c1 = item
            m[r0:r1, c0:c1] = True
    return m


def test_identical_single_pixel():
    t = _mask((5, 5), (2, 2))
    s = segmentation_scores(t, t)
    for key in ("mpa", "pa0", "pa1", "dsc", "dsc0", "dsc1"):
        assert s[key] == 1.0
    assert s["hd"] == 0.0 and s["hd95"] == 0.0
    assert s["true_area"] == 1 and s["pred_area"] == 1


def test_single_pixels_two_apart():
    s = segmentation_scores(_mask((5, 5), (2, 2)), _mask((5, 5), (2, 4)))
    # 25 pixels, 1 true, 1 predicted, no overlap: background 24 true, 23 of them correct.
    assert s["pa1"] == 0.0 and s["dsc1"] == 0.0
    assert s["pa0"] == pytest.approx(23 / 24)
    assert s["dsc0"] == pytest.approx(2 * 23 / 48)
    assert s["mpa"] == pytest.approx(23 / 48)
    assert s["dsc"] == pytest.approx(23 / 48)
    assert s["hd"] == 2.0 and s["hd95"] == 2.0


def test_both_empty_scores_one_and_hd_missing():
    e = np.zeros((6, 7), dtype=np.uint8)
    s = segmentation_scores(e, e, spacing=(0.5, 0.5))
    for key in ("mpa", "pa0", "pa1", "dsc", "dsc0", "dsc1"):
        assert s[key] == 1.0
    for key in ("hd", "hd95", "hd_mm", "hd95_mm"):
        assert math.isnan(s[key])


def test_empty_truth_nonempty_prediction():
    # 4x4 image, 3 predicted pixels, empty truth.
    s = segmentation_scores(np.zeros((4, 4)), _mask((4, 4), (0, 1, 0, 3)))
    assert s["pa1"] == 0.0 and s["dsc1"] == 0.0
    assert s["pa0"] == pytest.approx(13 / 16)
    assert s["dsc0"] == pytest.approx(2 * 13 / (16 + 13))
    assert s["mpa"] == pytest.approx(13 / 32)
    assert math.isnan(s["hd"]) and math.isnan(s["hd95"])


def test_nonempty_truth_empty_prediction():
    s = segmentation_scores(_mask((4, 4), (0, 2, 0, 2)), np.zeros((4, 4), dtype=bool))
    assert s["pa1"] == 0.0 and s["dsc1"] == 0.0
    assert s["pa0"] == 1.0  # every background pixel is predicted background
    assert s["dsc0"] == pytest.approx(2 * 12 / (12 + 16))
    assert s["mpa"] == 0.5
    assert math.isnan(s["hd"])


def test_disjoint_squares():
    t = _mask((8, 8), (0, 2, 0, 2))
    p = _mask((8, 8), (0, 2, 6, 8))
    s = segmentation_scores(t, p)
    assert s["pa1"] == 0.0 and s["dsc1"] == 0.0
    assert s["pa0"] == pytest.approx(56 / 60)
    assert s["dsc0"] == pytest.approx(112 / 120)
    # 2x2 squares are all contour; columns 6,7 are 5,6 away from column 1.
    assert s["hd"] == 6.0
    assert s["hd95"] == 6.0


def test_shifted_square_hausdorff():
    t = _mask((12, 12), (2, 6, 2, 6))
    p = _mask((12, 12), (2, 6, 5, 9))  # shifted 3 columns right, overlap = one column of 4 pixels
    s = segmentation_scores(t, p)
    assert s["dsc1"] == pytest.approx(8 / 32)
    assert s["pa1"] == pytest.approx(4 / 16)
    assert s["hd"] == 3.0
    # Per direction the 12 ring distances are 0,0,0,0,1,1,2,2,3,3,3,3; pooled 95th percentile = 3.
    d_pt, d_tp = surface_distances(t, p)
    assert sorted(d_pt) == [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3]
    assert sorted(d_tp) == sorted(d_pt)
    assert s["hd95"] == 3.0


def test_hd95_ignores_single_outlier():
    t = _mask((20, 20), (2, 6, 2, 6))
    p = _mask((20, 20), (2, 6, 2, 6), (2, 15))
    s = segmentation_scores(t, p)
    assert s["hd"] == 10.0  # outlier (2,15) to the square's corner (2,5)
    # 25 pooled distances: 24 zeros and one 10; the 95th percentile interpolates between two zeros.
    assert s["hd95"] == 0.0
    assert s["dsc1"] == pytest.approx(32 / 33)


def test_contour_uses_image_border_and_background_policy():
    full = np.ones((5, 5), dtype=bool)
    inner = _mask((5, 5), (1, 4, 1, 4))
    s = segmentation_scores(full, inner)
    # Truth contour = the image border ring, prediction contour = the 3x3 ring; corners are sqrt(2) away.
    assert s["hd"] == pytest.approx(math.sqrt(2))
    assert s["pa1"] == pytest.approx(9 / 25)
    assert s["pa0"] == 0.0  # no background in the truth but some predicted: absent from one only
    assert segmentation_scores(full, full)["pa0"] == 1.0


def test_anisotropic_spacing():
    t = _mask((10, 10), (2, 2))
    p = _mask((10, 10), (5, 6))
    s = segmentation_scores(t, p, spacing=(2.0, 0.5))
    assert s["hd"] == 5.0
    assert s["hd_mm"] == pytest.approx(math.sqrt((3 * 2.0) ** 2 + (4 * 0.5) ** 2))
    assert s["hd95_mm"] == pytest.approx(s["hd_mm"])
    iso = segmentation_scores(t, p, spacing=(0.5, 0.5))
    assert iso["hd_mm"] == pytest.approx(2.5)


def test_hausdorff_matches_bruteforce_on_random_masks(rng):
    from scipy import ndimage

    for _ in range(5):
        t = ndimage.binary_opening(rng.random((40, 50)) < 0.45)
        p = ndimage.binary_opening(rng.random((40, 50)) < 0.45)
        s = segmentation_scores(t, p, spacing=(1.0, 3.0))
        tc = t & ~ndimage.binary_erosion(t, ndimage.generate_binary_structure(2, 1))
        pc = p & ~ndimage.binary_erosion(p, ndimage.generate_binary_structure(2, 1))
        assert s["hd"] == pytest.approx(hausdorff_distance(tc, pc))
        pt, tt = np.argwhere(pc) * [1.0, 3.0], np.argwhere(tc) * [1.0, 3.0]
        d = np.sqrt(((pt[:, None, :] - tt[None, :, :]) ** 2).sum(-1))
        pooled = np.concatenate([d.min(axis=1), d.min(axis=0)])
        assert s["hd_mm"] == pytest.approx(pooled.max())
        assert s["hd95_mm"] == pytest.approx(np.percentile(pooled, 95))


def test_cropping_is_exact_near_image_border():
    t = _mask((64, 64), (0, 3, 60, 64))
    p = _mask((64, 64), (10, 12, 50, 52))
    s = segmentation_scores(t, p)
    # Truth contour: the 3x4 block minus its interior (row 1, cols 61-62; row 0 and col 63 touch the border).
    tc = t.copy()
    tc[1, 61:63] = False
    assert s["hd"] == pytest.approx(hausdorff_distance(tc, p))  # a 2x2 square is all contour


def test_input_kinds_agree():
    t = _mask((6, 6), (1, 4, 1, 4))
    p = _mask((6, 6), (2, 5, 2, 5))
    ref = segmentation_scores(t, p)
    assert segmentation_scores(t.astype(np.uint8) * 255, p.astype(np.uint8) * 255) == ref
    assert segmentation_scores(t.astype(float), p.astype(np.int64)) == ref


def test_invalid_inputs():
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        segmentation_scores(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="2-D"):
        segmentation_scores(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="binary"):
        segmentation_scores(np.zeros((4, 4)), np.linspace(0, 1, 16).reshape(4, 4))
    with pytest.raises(ValueError, match="binary"):
        as_binary_mask(np.array([[0, -1], [0, 0]]))
    with pytest.raises(ValueError, match="spacing"):
        segmentation_scores(np.zeros((4, 4)), np.zeros((4, 4)), spacing=(0.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        segmentation_scores(np.zeros((4, 4)), np.zeros((4, 4)), spacing=1.0)


def test_batch_scores_rows_ids_and_spacings():
    t = np.stack([_mask((8, 8), (2, 2)), np.zeros((8, 8), bool), _mask((8, 8), (0, 4, 0, 4))])
    p = np.stack([_mask((8, 8), (2, 2)), np.zeros((8, 8), bool), _mask((8, 8), (0, 4, 0, 2))])
    df = batch_segmentation_scores(t, p, spacings=[(1.0, 1.0), None, (2.0, 2.0)], sample_ids=["a", "b", "c"])
    assert list(df["sample_id"]) == ["a", "b", "c"]
    assert list(df["true_area"]) == [1, 0, 16]
    assert df["dsc1"].tolist() == pytest.approx([1.0, 1.0, 16 / 24])
    assert df["hd"].iloc[2] == 2.0 and df["hd_mm"].iloc[2] == 4.0
    assert math.isnan(df["hd"].iloc[1]) and math.isnan(df["hd_mm"].iloc[1])
    shared = batch_segmentation_scores(t, p, spacings=(0.5, 0.5))
    assert shared["hd_mm"].iloc[2] == 1.0 and list(shared["sample_id"]) == [0, 1, 2]
    assert "hd_mm" not in batch_segmentation_scores(t, p).columns
    with pytest.raises(ValueError, match="same length"):
        batch_segmentation_scores(t, p[:2])
    with pytest.raises(ValueError, match="sample_id='y'"):
        batch_segmentation_scores([t[0], t[1]], [p[0], p[1][:4]], sample_ids=["x", "y"])
    with pytest.raises(ValueError, match="spacings"):
        batch_segmentation_scores(t, p, spacings=[(1.0, 1.0)] * 2)


def test_summarize_counts_missing_hd_and_positive_subset():
    df = pd.DataFrame(
        {
            "dsc1": [1.0, 0.5, 0.0, 1.0],
            "hd": [0.0, 4.0, np.nan, np.nan],
            "true_area": [10, 20, 5, 0],
        }
    )
    out = summarize_scores(df).set_index(["subset", "metric"])
    assert out.loc[("all", "dsc1"), "mean"] == pytest.approx(0.625)
    assert out.loc[("all", "dsc1"), "std"] == pytest.approx(np.std([1.0, 0.5, 0.0, 1.0], ddof=1))
    assert out.loc[("positive", "dsc1"), "mean"] == pytest.approx(0.5)
    assert out.loc[("all", "hd"), "mean"] == 2.0
    assert out.loc[("all", "hd"), "n_valid"] == 2 and out.loc[("all", "hd"), "n_missing"] == 2
    assert out.loc[("positive", "hd"), "n_valid"] == 2 and out.loc[("positive", "hd"), "n_missing"] == 1
    assert out.loc[("all", "siim_acr_dice"), "mean"] == pytest.approx(0.625)
    custom = summarize_scores(df, positive=[True, False, False, False], metrics=["dsc1"])
    row = custom[(custom.subset == "positive") & (custom.metric == "dsc1")].iloc[0]
    assert row["mean"] == 1.0 and row["n_valid"] == 1 and math.isnan(row["std"])
    with pytest.raises(ValueError, match="positive"):
        summarize_scores(df, positive=[True])
    with pytest.raises(ValueError, match="true_area"):
        summarize_scores(df.drop(columns="true_area"))
    with pytest.raises(ValueError, match="mpa"):
        summarize_scores(df, metrics=["mpa"])


def test_dice_from_counts_applies_the_empty_policy_elementwise():
    # 2*3/(4+5); both empty -> 1; truth empty, prediction not -> 0; prediction empty, truth not -> 0.
    np.testing.assert_allclose(dice_from_counts([3, 0, 0, 0], [4, 0, 7, 0], [5, 0, 0, 2]), [6 / 9, 1.0, 0.0, 0.0])
    assert float(dice_from_counts(0, 0, 0)) == 1.0
    # Broadcasting: (n, T) predictions against (n, 1) truths, as the threshold search calls it.
    np.testing.assert_allclose(dice_from_counts([[1, 2]], [[2, 4]], [[2]]), [[0.5, 4 / 6]])


def test_batch_dice_equals_the_per_image_dsc1():
    true = np.zeros((3, 6, 6), bool)
    pred = np.zeros((3, 6, 6), bool)
    true[0, :2, :2] = pred[0, 1:3, :2] = True  # 2 of 4 + 4 pixels overlap: 0.5
    pred[1, 0, 0] = True  # empty truth, one false-positive pixel: 0
    # image 2: both empty: 1
    np.testing.assert_allclose(batch_dice(true, pred), [0.5, 0.0, 1.0])
    expected = [segmentation_scores(t, p)["dsc1"] for t, p in zip(true, pred)]
    np.testing.assert_allclose(batch_dice(true, pred), expected)
