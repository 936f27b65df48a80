"""Stratified, seeded train / validation / test split (paper Table 1: 64 / 16 / 20 %).

The split is done once, at data preparation, and written to the manifest; training and evaluation read it
from there. Samples are stratified by label so that every split holds the same share of pneumothorax
images, and, when a patient-level grouping key is known, all images of one patient land in the same split
(otherwise near-identical follow-up images of one patient would leak from training into the test set).
"""

import math

import numpy as np

from ptx_keras import constants

__all__ = ["largest_remainder", "stratified_split", "validate_fractions"]


def validate_fractions(fractions):
    """Checks split fractions and returns them as a tuple of floats.

    Args:
        fractions: One non-negative fraction per split in `constants.SPLITS` order, summing to 1.

    Returns:
        tuple of 3 floats.

    Raises:
        ValueError: if there are not 3 fractions, one is negative or not finite, or they do not sum to 1.
    """
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise ValueError(
            f"fractions must be {len(constants.SPLITS)} numbers (train, val, test). Received: fractions={fractions!r}"
        ) from None
    if len(values) != len(constants.SPLITS):
        raise ValueError(
            f"fractions must have {len(constants.SPLITS)} entries (train, val, test). Received: fractions={fractions!r}"
        )
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"fractions must be finite and non-negative. Received: fractions={fractions!r}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1. Received: fractions={fractions!r} (sum {sum(values):g})")
    return values


def largest_remainder(total, fractions):
    """Splits an integer `total` into parts proportional to `fractions` (Hamilton's method).

    Each part gets the floor of its quota; the units left over go to the parts with the largest fractional
    remainders (ties to the earlier part), so the parts sum to `total` exactly.

    Args:
        total: Non-negative integer to split.
        fractions: Validated fractions summing to 1.

    Returns:
        list of ints summing to `total`.
    """
    quotas = [total * f for f in fractions]
    parts = [int(math.floor(q + 1e-9)) for q in quotas]
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - parts[i]), i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def _deficit(target, assigned):
    return target - assigned, (target - assigned) / max(target, 1)


def stratified_split(labels, groups=None, fractions=constants.SPLIT_FRACTIONS, seed=constants.SPLIT_SEED, given=None):
    """Assigns every sample to `"train"`, `"val"` or `"test"`, stratified by label.

    Within each label, the (shuffled) groups are dealt out so that each split receives its share of the
    samples, rounded by the largest-remainder method: without grouping the counts per label are exact
    (e.g. 100 positives -> 64 / 16 / 20). A group (patient) is never divided; it is stratified by the
    largest label among its samples, and the per-split counts are then as close as whole groups allow.

    Args:
        labels: Sequence of labels (0 / 1), one per sample.
        groups: Optional sequence of grouping keys (e.g. patient ids), one per sample; None entries (or
            `groups=None`) make a sample its own group.
        fractions: Fractions of the train, validation and test splits (default 64 / 16 / 20 %).
        seed: Integer seed; the same inputs and seed give the same split.
        given: Optional sequence of splits given by the source, one per sample (`"train"`, `"val"`,
            `"test"` or None). Given splits are kept; the other samples of a group with a given split follow
            it; only the remaining samples are split by `fractions`.

    Returns:
        list of split names, one per sample, in input order.

    Raises:
        ValueError: if `fractions` is invalid, a label is None, a sequence has the wrong length, a given
            split is unknown or `seed` is not a non-negative integer.
    """
    fractions = validate_fractions(fractions)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer. Received: seed={seed!r}")
    labels = list(labels)
    n = len(labels)
    for i, label in enumerate(labels):
        if label is None:
            raise ValueError(f"Every sample needs a label to stratify. Received: labels[{i}]=None")
    groups = [None] * n if groups is None else list(groups)
    given = [None] * n if given is None else list(given)
    for name, values in (("groups", groups), ("given", given)):
        if len(values) != n:
            raise ValueError(f"{name} must have one entry per label ({n}). Received: len({name})={len(values)}")
    for i, split in enumerate(given):
        if split is not None and split not in constants.SPLITS:
            raise ValueError(f"Unknown split; expected one of {constants.SPLITS}. Received: given[{i}]={split!r}")

    members = {}
    for i, group in enumerate(groups):
        key = ("sample", i) if group is None else ("group", group)
        members.setdefault(key, []).append(i)

    result = list(given)
    free_groups = []
    for indices in members.values():
        fixed = [given[i] for i in indices if given[i] is not None]
        if fixed:
            # The source split this patient (or part of it): the rest follows the most common given split.
            target = max(constants.SPLITS, key=fixed.count)
            for i in indices:
                if result[i] is None:
                    result[i] = target
        else:
            free_groups.append(indices)

    strata = {}
    for indices in free_groups:
        strata.setdefault(max(labels[i] for i in indices), []).append(indices)

    rng = np.random.default_rng(int(seed))
    for label in sorted(strata, key=repr):
        stratum = strata[label]
        order = rng.permutation(len(stratum))
        # Big groups first so that the small ones can fill the remaining gaps; the shuffle breaks ties.
        shuffled = sorted((stratum[j] for j in order), key=len, reverse=True)
        targets = largest_remainder(sum(len(g) for g in stratum), fractions)
        assigned = [0] * len(constants.SPLITS)
        # A split with fraction 0 never receives a sample, even when whole groups overshoot the others.
        candidates = [s for s, f in enumerate(fractions) if f > 0]
        for indices in shuffled:
            # Largest deficit first; on a tie the split missing the larger share of its target.
            k = max(candidates, key=lambda s: _deficit(targets[s], assigned[s]))
            assigned[k] += len(indices)
            for i in indices:
                result[i] = constants.SPLITS[k]
    return result
