"""Tests for ptx_keras.diagnosis: the area rule, diagnostic scores, ROC and the threshold search."""

import math

import numpy as np
import pytest
from scipy import stats

from ptx_keras.diagnosis import (
    Diagnosis,
    areas_at_thresholds,
    diagnose,
    diagnosis_scores,
    roc_auc,
    roc_curve,
    search_thresholds,
)


def _prob_map(size, n_pixels, value=0.9, background=0.1):
    p = np.full(size * size, background, dtype=np.float32)
    p[:n_pixels] = value
    return p.reshape(size, size)


def test_rule_is_strictly_more_than_min_area_at_256():
    d = diagnose(_prob_map(256, 50))
    assert isinstance(d, Diagnosis)
    assert (d.label, d.area, d.threshold_area) == (0, 50, 50.0)
    assert diagnose(_prob_map(256, 51)).label == 1


def test_min_area_scales_with_prediction_size():
    assert diagnose(_prob_map(512, 200)).threshold_area == 200.0
    assert diagnose(_prob_map(512, 200)).label == 0
    assert diagnose(_prob_map(512, 201)).label == 1
    d = diagnose(_prob_map(128, 13), min_area=50)  # 50 / 4 = 12.5
    assert d.threshold_area == 12.5 and d.label == 1
    assert diagnose(_prob_map(64, 10), min_area=20, reference_size=64).label == 0


def test_mask_threshold_is_strict_and_softmax_channel_is_ptx():
    p = _prob_map(256, 60, value=0.5)
    assert diagnose(p).area == 0
    assert diagnose(p, mask_threshold=0.4).area == 60
    softmax = np.stack([1.0 - _prob_map(256, 60), _prob_map(256, 60)], axis=-1)
    assert diagnose(softmax).area == 60 and diagnose(softmax).label == 1
    assert diagnose(_prob_map(256, 60) > 0.5).area == 60  # a binary mask works too


def test_score_is_reference_area_plus_half_max_prob():
    assert diagnose(_prob_map(256, 0, background=0.4)).score == pytest.approx(0.2)
    assert diagnose(_prob_map(256, 10, value=0.9)).score == pytest.approx(10.45)
    assert diagnose(_prob_map(512, 40, value=1.0)).score == pytest.approx(40.5 / 4)


def test_batched_inputs_return_arrays():
    batch = np.stack([_prob_map(64, 0), _prob_map(64, 5), _prob_map(64, 3)])
    d = diagnose(batch, min_area=16)  # threshold 16 * 64*64 / 256**2 = 1 pixel
    assert d.threshold_area == 1.0
    np.testing.assert_array_equal(d.area, [0, 5, 3])
    np.testing.assert_array_equal(d.label, [0, 1, 1])
    softmax = np.stack([1.0 - batch, batch], axis=-1)
    np.testing.assert_array_equal(diagnose(softmax, min_area=16).area, [0, 5, 3])
    np.testing.assert_allclose(d.max_prob, [0.1, 0.9, 0.9], rtol=1e-6)


def test_diagnose_invalid_arguments():
    p = _prob_map(32, 3)
    with pytest.raises(ValueError, match="min_area"):
        diagnose(p, min_area=-1)
    with pytest.raises(ValueError, match="mask_threshold"):
        diagnose(p, mask_threshold=1.0)
    with pytest.raises(ValueError, match="reference_size"):
        diagnose(p, reference_size=0)
    with pytest.raises(ValueError, match="shape"):
        diagnose(np.zeros((1, 2, 3, 4, 2)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        diagnose(p * 255)


def test_diagnosis_scores_on_handmade_confusion_matrix():
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 1]
    preds = [1, 1, 1, 0, 0, 0, 0, 1, 0, 0]
    s = diagnosis_scores(labels, preds)
    assert (s["tp"], s["fp"], s["tn"], s["fn"], s["n"]) == (3, 1, 4, 2, 10)
    assert s["accuracy"] == pytest.approx(0.7)
    assert s["sensitivity"] == pytest.approx(0.6)
    assert s["specificity"] == pytest.approx(0.8)
    assert s["ppv"] == pytest.approx(0.75)
    assert s["npv"] == pytest.approx(4 / 6)
    assert s["f1"] == pytest.approx(6 / 9)
    assert s["youden"] == pytest.approx(0.4)
    assert s["undefined"] == ()


def test_diagnosis_scores_zero_denominators_are_nan_and_flagged():
    s = diagnosis_scores([0, 0, 0, 0], np.zeros(4, dtype=bool))
    assert (s["tn"], s["accuracy"], s["specificity"], s["npv"]) == (4, 1.0, 1.0, 1.0)
    for key in ("sensitivity", "ppv", "f1", "youden"):
        assert math.isnan(s[key])
    assert s["undefined"] == ("sensitivity", "ppv", "f1", "youden")


def test_diagnosis_scores_invalid_arguments():
    with pytest.raises(ValueError, match="same length"):
        diagnosis_scores([0, 1], [0])
    with pytest.raises(ValueError, match="0/1"):
        diagnosis_scores([0, 2], [0, 1])
    with pytest.raises(ValueError, match="1-D"):
        diagnosis_scores([[0, 1]], [[0, 1]])


def test_roc_auc_by_hand_with_ties():
    labels = [1, 1, 0, 0, 1, 0]
    scores = [0.9, 0.4, 0.4, 0.2, 0.7, 0.8]
    # 9 positive/negative pairs: 3 + (1 + 0.5) + 2 ordered correctly.
    assert roc_auc(labels, scores) == pytest.approx(6.5 / 9)
    fpr, tpr, thr = roc_curve(labels, scores)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.8, 0.7, 0.4, 0.2])


def test_roc_auc_matches_mann_whitney(rng):
    labels = rng.random(200) < 0.4
    scores = np.round(rng.random(200) + 0.5 * labels, 1)  # rounded: many ties
    u = stats.mannwhitneyu(scores[labels], scores[~labels]).statistic
    assert roc_auc(labels, scores) == pytest.approx(u / (labels.sum() * (~labels).sum()))


def test_roc_single_class_and_invalid():
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))
    with pytest.raises(ValueError, match="finite"):
        roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="shape"):
        roc_curve([0, 1], [0.1])


LABELS = [1, 1, 1, 0, 0, 0]
# Predicted areas at 256x256 for mask thresholds 0.5 (first column) and 0.7 (second column).
AREAS = np.array([[100, 80], [60, 20], [30, 10], [40, 0], [5, 0], [0, 0]])


def _maps_from_areas(areas, size=256):
    maps = []
    for a05, a07 in areas:
        p = np.full(size * size, 0.1, dtype=np.float32)
        p[:a05] = 0.6
        p[:a07] = 0.8
        maps.append(p.reshape(size, size))
    return np.stack(maps)


def test_search_picks_known_best_pair():
    # f1 by hand: (0.5, 0) 0.75, (0.5, 25) 6/7, (0.5, 50) 0.8, (0.7, 0) 1.0, (0.7, 25) 0.5, (0.7, 50) 0.5.
    out = search_thresholds(LABELS, areas=AREAS, pixels=256 * 256, mask_thresholds=(0.5, 0.7), min_areas=(0, 25, 50))
    assert (out["mask_threshold"], out["min_area"], out["value"]) == (0.7, 0.0, 1.0)
    grid = out["grid"].set_index(["mask_threshold", "min_area"])
    np.testing.assert_allclose(grid["f1"], [0.75, 6 / 7, 0.8, 1.0, 0.5, 0.5])
    assert grid.loc[(0.5, 25.0), "fp"] == 1 and grid.loc[(0.5, 50.0), "fn"] == 1
    youden = search_thresholds(
        LABELS, areas=AREAS, pixels=256 * 256, mask_thresholds=(0.5, 0.7), min_areas=(0, 25, 50), objective="youden"
    )
    assert (youden["mask_threshold"], youden["min_area"], youden["value"]) == (0.7, 0.0, 1.0)


def test_search_from_prob_maps_matches_areas_and_diagnose():
    maps = _maps_from_areas(AREAS)
    areas, pixels = areas_at_thresholds(maps, (0.5, 0.7))
    np.testing.assert_array_equal(areas, AREAS)
    np.testing.assert_array_equal(pixels, [256 * 256] * 6)
    from_maps = search_thresholds(LABELS, maps, mask_thresholds=(0.5, 0.7), min_areas=(0, 25, 50))
    from_iter = search_thresholds(LABELS, iter(list(maps)), mask_thresholds=(0.5, 0.7), min_areas=(0, 25, 50))
    assert from_maps["grid"].equals(from_iter["grid"])
    d = diagnose(maps, min_area=from_maps["min_area"], mask_threshold=from_maps["mask_threshold"])
    assert diagnosis_scores(LABELS, d.label)["f1"] == from_maps["value"]


def test_search_scales_min_area_and_breaks_ties_towards_paper_values():
    # At 512x512 a min_area m becomes 4m pixels: the positive (160 px) is found for m < 40, the negative
    # (40 px) is predicted positive for m < 10.
    out = search_thresholds(
        [1, 0], areas=[[160], [40]], pixels=512 * 512, mask_thresholds=(0.5,), min_areas=(0, 20, 35, 60, 80)
    )
    grid = out["grid"].set_index("min_area")
    np.testing.assert_allclose(grid["f1"], [2 / 3, 1.0, 1.0, 0.0, 0.0])
    assert out["min_area"] == 35.0  # tied with 20; 35 is closer to the paper's 50


def test_search_invalid_arguments():
    kw = dict(areas=AREAS, pixels=256 * 256, mask_thresholds=(0.5, 0.7))
    with pytest.raises(ValueError, match="objective"):
        search_thresholds(LABELS, objective="auc", **kw)
    with pytest.raises(ValueError, match="exactly one"):
        search_thresholds(LABELS)
    with pytest.raises(ValueError, match="pixels"):
        search_thresholds(LABELS, areas=AREAS, mask_thresholds=(0.5, 0.7))
    with pytest.raises(ValueError, match="shape"):
        search_thresholds(LABELS, areas=AREAS, pixels=1, mask_thresholds=(0.5,))
    with pytest.raises(ValueError, match="min_area"):
        search_thresholds(LABELS, min_areas=(-5,), **kw)
    with pytest.raises(ValueError, match="empty"):
        search_thresholds(LABELS, min_areas=(), **kw)
    with pytest.raises(ValueError, match="batch"):
        areas_at_thresholds(np.zeros((8, 8)))


def test_check_search_options_names_the_unknown_option():
    from ptx_keras.diagnosis import check_search_options

    check_search_options("f1", "triplet", "both")  # valid: no error
    with pytest.raises(ValueError, match=r"objective must be one of .*Received: objective='auc'"):
        check_search_options("auc", "pair", "area")
    with pytest.raises(ValueError, match=r"form must be one of .*Received: form='quad'"):
        check_search_options("f1", "quad", "area")
    with pytest.raises(ValueError, match=r"gate must be one of .*Received: gate='mask'"):
        check_search_options("youden", "pair", "mask")


def test_search_result_is_a_frozen_dataclass_readable_as_the_old_dict():
    import dataclasses

    from ptx_keras.diagnosis import Thresholds, ThresholdSearch

    out = search_thresholds(LABELS, areas=AREAS, pixels=256 * 256, mask_thresholds=(0.5, 0.7), min_areas=(0, 25, 50))
    assert isinstance(out, ThresholdSearch)
    assert (out.mask_threshold, out.min_area, out.value, out.form, out.gate) == (0.7, 0.0, 1.0, "pair", "area")
    assert out.thresholds == Thresholds(0.7, 0.0, 256) and out.top_threshold is None and out.siim_dice is None
    assert out["thresholds"] is out.thresholds and out["grid"] is out.grid
    with pytest.raises(KeyError):
        out["thresholds_file"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.value = 0.5


def test_diagnosis_package_keeps_every_name_importable():
    import ptx_keras.diagnosis as d
    from ptx_keras.diagnosis import reliability, rule, scores, search

    for name in d.__all__:
        assert getattr(d, name) is not None
    assert d.Thresholds is rule.Thresholds and d.roc_auc is scores.roc_auc
    assert d.search_thresholds is search.search_thresholds and d.calibration is reliability.calibration
