from collections import Counter

import pytest

from ptx_keras import constants
from ptx_keras.data.split import largest_remainder, stratified_split, validate_fractions


def _counts(labels, splits):
    return Counter(zip(labels, splits))


def test_default_fractions_are_exact_per_label():
    labels = [1] * 100 + [0] * 50
    splits = stratified_split(labels)
    counts = _counts(labels, splits)
    assert [counts[(1, s)] for s in constants.SPLITS] == [64, 16, 20]
    assert [counts[(0, s)] for s in constants.SPLITS] == [32, 8, 10]


def test_largest_remainder_rounding():
    # 10 * (0.64, 0.16, 0.2) = 6.4, 1.6, 2.0 -> floors 6, 1, 2; the spare unit goes to the largest remainder.
    assert largest_remainder(10, (0.64, 0.16, 0.2)) == [6, 2, 2]
    # 37 -> 23.68, 5.92, 7.4: floors 23, 5, 7 and two spare units to val (.92) then train (.68).
    assert largest_remainder(37, (0.64, 0.16, 0.2)) == [24, 6, 7]
    # Ties go to the earlier split.
    assert largest_remainder(1, (0.5, 0.5, 0.0)) == [1, 0, 0]
    assert largest_remainder(0, (0.64, 0.16, 0.2)) == [0, 0, 0]


def test_uneven_label_counts_use_largest_remainder():
    labels = [1] * 37 + [0] * 10
    counts = _counts(labels, stratified_split(labels))
    assert [counts[(1, s)] for s in constants.SPLITS] == [24, 6, 7]
    assert [counts[(0, s)] for s in constants.SPLITS] == [6, 2, 2]


def test_seeded_and_reproducible():
    labels = [i % 3 == 0 for i in range(60)]
    labels = [int(v) for v in labels]
    a = stratified_split(labels, seed=7)
    assert a == stratified_split(labels, seed=7)
    b = stratified_split(labels, seed=8)
    assert a != b
    # Another seed changes which samples go where, not how many.
    assert _counts(labels, a) == _counts(labels, b)


def test_groups_stay_together_and_are_stratified_by_max_label():
    # 40 patients with 2 images each; a patient is positive if any of its images is.
    labels, groups = [], []
    for p in range(40):
        labels += [int(p < 10), 0]  # patients 0-9 have one positive image
        groups += [f"p{p}", f"p{p}"]
    splits = stratified_split(labels, groups=groups, seed=3)
    by_group = {}
    for g, s in zip(groups, splits):
        by_group.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in by_group.values())
    # 10 positive patients (20 images) -> 20 * (.64, .16, .2) = 12.8, 3.2, 4 -> targets 13, 3, 4 images;
    # whole patients of 2 images can only come within one patient of each target.
    positive_patients = Counter(next(iter(by_group[f"p{p}"])) for p in range(10))
    assert sum(positive_patients.values()) == 10
    for split, target in zip(constants.SPLITS, (13, 3, 4)):
        assert abs(2 * positive_patients[split] - target) <= 1
    negative_patients = Counter(next(iter(by_group[f"p{p}"])) for p in range(10, 40))
    # 60 images -> 38.4, 9.6, 12 -> 38, 10, 12 images, i.e. 19, 5, 6 patients.
    assert [negative_patients[s] for s in constants.SPLITS] == [19, 5, 6]


def test_none_group_means_own_group():
    labels = [0, 1] * 25
    assert stratified_split(labels, groups=[None] * 50) == stratified_split(labels)


def test_given_splits_are_kept_and_groups_follow_them():
    labels = [0, 1] * 20
    given = [None] * 40
    given[0], given[1], given[2] = "test", "val", "train"
    groups = [None] * 40
    groups[0] = groups[4] = "patient-a"  # sample 4 has no given split but shares a patient with sample 0
    splits = stratified_split(labels, groups=groups, given=given)
    assert splits[:3] == ["test", "val", "train"]
    assert splits[4] == "test"
    # The 36 free samples are split by the fractions.
    free = [i for i in range(40) if i not in (0, 1, 2, 4)]
    counts = _counts([labels[i] for i in free], [splits[i] for i in free])
    assert [counts[(1, s)] for s in constants.SPLITS] == [12, 3, 4]  # 19 positives: 12.16, 3.04, 3.8
    assert [counts[(0, s)] for s in constants.SPLITS] == [11, 3, 3]  # 17 negatives: 10.88, 2.72, 3.4


def test_zero_fraction_split_gets_nothing_even_with_groups():
    labels = [0] * 9
    groups = ["a", "a", "a", "b", "b", "b", "c", "c", "c"]
    splits = stratified_split(labels, groups=groups, fractions=(0.5, 0.5, 0.0))
    assert "test" not in splits


def test_empty_input():
    assert stratified_split([]) == []


@pytest.mark.parametrize(
    "fractions, match",
    [
        ((0.5, 0.5, 0.5), "sum to 1"),
        ((1.2, -0.2, 0.0), "non-negative"),
        ((0.5, 0.5), "3 entries"),
        ((0.5, float("nan"), 0.5), "finite"),
        ("abc", "numbers"),
    ],
)
def test_invalid_fractions(fractions, match):
    with pytest.raises(ValueError, match=match) as info:
        stratified_split([0, 1], fractions=fractions)
    assert "fractions=" in str(info.value)
    with pytest.raises(ValueError, match=match):
        validate_fractions(fractions)


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"labels\[1\]=None"):
        stratified_split([0, None])
    with pytest.raises(ValueError, match="len\\(groups\\)=1"):
        stratified_split([0, 1], groups=["a"])
    with pytest.raises(ValueError, match="given\\[0\\]='validation'"):
        stratified_split([0], given=["validation"])
    with pytest.raises(ValueError, match="seed=-1"):
        stratified_split([0], seed=-1)
