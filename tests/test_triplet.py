"""The triplet rule (top threshold, minimum area, mask threshold) and its validation-only search.

The hand-built case: four 16 x 16 images, areas counted at reference size 16 (min_area in pixels).

    image  truth          probabilities                               area > 0.5   area > 0.9
    A      20 px (pos)    the 20 true pixels at 0.6, 8 of them at 0.95   20            8
    B      empty (neg)    a 12 px blob at 0.6                            12            0
    C      10 px (pos)    the 10 true pixels at 0.92, 6 more at 0.55     16           10
    D      empty (neg)    a 3 px speck at 0.97                            3            3

Pair rule, F1: (0.5, 0) 2/3, (0.5, 5) 0.8, (0.9, 0) 0.8, (0.9, 5) 1.0. The best pair (0.9, 5) draws A's mask
at 0.9 (8 of 20 true pixels: Dice 16/28) and C's exactly (Dice 1): SIIM-ACR mean Dice (16/28 + 3) / 4. The
triplet (top 0.9, min area 5, mask 0.5) diagnoses the same images but draws A exactly (Dice 1) and C with 6
extra pixels (Dice 20/26): mean (20/26 + 3) / 4, higher, so the triplet search chooses it.
"""

import numpy as np
import pandas as pd
import pytest

from ptx_keras.diagnosis import (
    SEARCH_AUX_THRESHOLDS,
    Thresholds,
    aux_threshold_candidates,
    diagnose,
    diagnosis_scores,
    dice_counts_at_thresholds,
    search_thresholds,
)

SIZE = 16
LABELS = np.array([1, 0, 1, 0])
PAIR_DICE = (16 / 28 + 3) / 4
TRIPLET_DICE = (20 / 26 + 3) / 4


def hand_case():
    prob = np.full((4, SIZE * SIZE), 0.05, np.float32)
    true = np.zeros((4, SIZE * SIZE), bool)
    true[0, :20] = True
    prob[0, :20], prob[0, :8] = 0.6, 0.95
    prob[1, 100:112] = 0.6
    true[2, :10] = True
    prob[2, :10], prob[2, 10:16] = 0.92, 0.55
    prob[3, 200:203] = 0.97
    return prob.reshape(4, SIZE, SIZE), true.reshape(4, SIZE, SIZE)


GRID = dict(mask_thresholds=(0.5, 0.9), min_areas=(0, 5), reference_size=SIZE)


def test_thresholds_triplet_fields_validate_and_round_trip():
    t = Thresholds(0.5, 5, SIZE, top_threshold=0.9)
    assert t.form == "triplet" and t.decision_threshold == 0.9 and not t.uses_aux
    assert Thresholds.from_mapping(t.to_dict()) == t
    assert t.to_dict() == {"mask_threshold": 0.5, "min_area": 5.0, "reference_size": SIZE, "top_threshold": 0.9}
    # The paper's rule writes the same three numbers as before the triplet existed.
    assert Thresholds().to_dict() == {"mask_threshold": 0.5, "min_area": 50.0, "reference_size": 256}
    # top == mask is the two-number rule, stored one way.
    assert Thresholds(0.5, 5, SIZE, top_threshold=0.5) == Thresholds(0.5, 5, SIZE)
    g = Thresholds(gate="both", aux_threshold=0.3)
    assert g.uses_aux and Thresholds.from_mapping(g.to_dict()) == g and "aux probability > 0.3" in g.describe()
    with pytest.raises(ValueError, match="top_threshold"):
        Thresholds(0.6, top_threshold=0.5)
    with pytest.raises(ValueError, match="top_threshold"):
        Thresholds(top_threshold=1.0)
    with pytest.raises(ValueError, match="gate"):
        Thresholds(gate="aux_head")
    with pytest.raises(ValueError, match="aux_threshold"):
        Thresholds(aux_threshold=-0.1)
    with pytest.raises(ValueError, match="thresholds.json: top_threshold"):
        Thresholds.from_mapping({**Thresholds().to_dict(), "top_threshold": 0.2}, "thresholds.json")


def test_diagnose_triplet_decides_on_the_top_threshold():
    prob, _ = hand_case()
    pair = diagnose(prob, thresholds=Thresholds(0.5, 5, SIZE))
    np.testing.assert_array_equal(pair.label, [1, 1, 1, 0])
    np.testing.assert_array_equal(pair.area, pair.decision_area)
    triplet = diagnose(prob, thresholds=Thresholds(0.5, 5, SIZE, top_threshold=0.9))
    np.testing.assert_array_equal(triplet.label, [1, 0, 1, 0])
    np.testing.assert_array_equal(triplet.area, [20, 12, 16, 3])  # the mask (> 0.5) area
    np.testing.assert_array_equal(triplet.decision_area, [8, 0, 10, 3])
    # The ROC score ranks by the deciding area.
    np.testing.assert_allclose(
        triplet.score, np.array([8, 0, 10, 3]) + 0.5 * np.array([0.95, 0.6, 0.92, 0.97]), rtol=1e-6
    )
    # top == mask reproduces the pair rule exactly.
    same = diagnose(prob, thresholds=Thresholds(0.5, 5, SIZE, top_threshold=0.5))
    np.testing.assert_array_equal(same.label, pair.label)
    np.testing.assert_array_equal(same.score, pair.score)


def test_diagnose_aux_gate():
    prob, _ = hand_case()
    aux = np.array([0.7, 0.2, 0.4, 0.9])
    area = Thresholds(0.5, 5, SIZE)
    np.testing.assert_array_equal(
        diagnose(prob, thresholds=area.replace(gate="aux"), aux_probability=aux).label, [1, 0, 0, 1]
    )
    np.testing.assert_array_equal(
        diagnose(prob, thresholds=area.replace(gate="both"), aux_probability=aux).label, [1, 0, 0, 0]
    )
    np.testing.assert_array_equal(
        diagnose(prob, thresholds=area.replace(gate="aux", aux_threshold=0.3), aux_probability=aux[:, None]).label,
        [1, 0, 1, 1],
    )
    # The area gate ignores the aux probability.
    np.testing.assert_array_equal(diagnose(prob, thresholds=area, aux_probability=aux).label, [1, 1, 1, 0])
    with pytest.raises(ValueError, match="aux_head"):
        diagnose(prob, thresholds=area.replace(gate="aux"))
    with pytest.raises(ValueError, match="one probability per image"):
        diagnose(prob, thresholds=area.replace(gate="aux"), aux_probability=aux[:3])
    assert diagnose(prob[0], thresholds=area.replace(gate="aux"), aux_probability=0.2).label == 0


def test_triplet_search_reproduces_the_hand_built_case():
    prob, true = hand_case()
    pair = search_thresholds(LABELS, prob, **GRID)
    assert (pair["mask_threshold"], pair["min_area"], pair["value"]) == (0.9, 5.0, 1.0)
    np.testing.assert_allclose(pair["grid"].set_index(["mask_threshold", "min_area"])["f1"], [2 / 3, 0.8, 0.8, 1.0])
    triplet = search_thresholds(LABELS, prob, true_masks=true, form="triplet", top_thresholds=(0.5, 0.9), **GRID)
    assert (triplet["top_threshold"], triplet["min_area"], triplet["mask_threshold"]) == (0.9, 5.0, 0.5)
    assert triplet["value"] == 1.0
    assert triplet["siim_dice"] == pytest.approx(TRIPLET_DICE)
    assert triplet["thresholds"] == Thresholds(0.5, 5, SIZE, top_threshold=0.9)
    grid = triplet["grid"].set_index(["top_threshold", "min_area", "mask_threshold"])
    assert grid.loc[(0.9, 5.0, 0.9), "siim_dice"] == pytest.approx(PAIR_DICE)
    assert (0.5, 5.0, 0.9) not in grid.index  # the mask threshold never exceeds the top threshold
    # The pair search is the triplet's special case top == mask: the same rows, the same counts.
    diagonal = triplet["grid"][triplet["grid"]["top_threshold"] == triplet["grid"]["mask_threshold"]]
    columns = ["mask_threshold", "min_area", "tp", "fp", "tn", "fn", "f1", "youden"]
    pd.testing.assert_frame_equal(
        diagonal[columns].sort_values(["mask_threshold", "min_area"]).reset_index(drop=True),
        pair["grid"][columns].reset_index(drop=True),
    )
    # The chosen rule, applied by `diagnose`, gives the searched F1; its gated masks the searched Dice.
    t = triplet["thresholds"]
    d = diagnose(prob, thresholds=t)
    assert diagnosis_scores(LABELS, d.label)["f1"] == 1.0
    masks = (prob > t.mask_threshold) & (d.label == 1)[:, None, None]
    inter = np.count_nonzero(masks & true, axis=(1, 2))
    total = np.count_nonzero(masks, axis=(1, 2)) + np.count_nonzero(true, axis=(1, 2))
    assert np.mean(np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))) == pytest.approx(TRIPLET_DICE)


def test_search_from_counts_equals_search_from_maps_and_dice_objective():
    prob, true = hand_case()
    levels = (0.5, 0.9)
    counts = dice_counts_at_thresholds(prob, true, levels)
    np.testing.assert_array_equal(counts["areas"], [[20, 8], [12, 0], [16, 10], [3, 3]])
    np.testing.assert_array_equal(counts["intersections"], [[20, 8], [0, 0], [10, 10], [0, 0]])
    np.testing.assert_array_equal(counts["true_areas"], [20, 0, 10, 0])
    kw = dict(form="triplet", top_thresholds=levels, **GRID)
    from_maps = search_thresholds(LABELS, prob, true_masks=true, **kw)
    from_counts = search_thresholds(
        LABELS,
        areas=counts["areas"],
        pixels=counts["pixels"],
        levels=levels,
        intersections=counts["intersections"],
        true_areas=counts["true_areas"],
        **kw,
    )
    pd.testing.assert_frame_equal(from_maps["grid"], from_counts["grid"])
    dice = search_thresholds(LABELS, prob, true_masks=true, objective="siim_dice", **GRID)
    assert (dice["mask_threshold"], dice["min_area"]) == (0.9, 5.0) and dice["value"] == pytest.approx(PAIR_DICE)


def test_search_with_an_aux_gate():
    prob, true = hand_case()
    # The aux probability separates the classes at 0.5 only: 0.45 (A) < 0.5 < 0.55 (B).
    aux = np.array([0.45, 0.55, 0.8, 0.1])
    out = search_thresholds(LABELS, prob, aux=aux, gate="aux", aux_thresholds=(0.3, 0.5, 0.6), **GRID)
    assert out["gate"] == "aux" and out["aux_threshold"] == 0.3 and out["value"] == 0.8
    both = search_thresholds(LABELS, prob, aux=aux, gate="both", aux_thresholds=(0.3, 0.5), **GRID)
    # (0.9, 5) alone is perfect; the aux gate at 0.3 keeps A and C.
    assert (both["mask_threshold"], both["min_area"], both["aux_threshold"], both["value"]) == (0.9, 5.0, 0.3, 1.0)
    assert both["thresholds"].gate == "both" and both["thresholds"].aux_threshold == 0.3
    # An uncalibrated head (every probability below the fixed grid's 0.1) that ranks the images perfectly: the
    # default candidates include the probabilities' quantiles, so the search still separates them.
    tiny = np.array([0.006, 0.003, 0.009, 0.002])
    out = search_thresholds(LABELS, prob, aux=tiny, gate="aux", **GRID)
    assert out["value"] == 1.0 and 0.003 <= out["aux_threshold"] < 0.006
    assert set(SEARCH_AUX_THRESHOLDS) <= set(aux_threshold_candidates(tiny))


def test_search_invalid_arguments():
    prob, true = hand_case()
    with pytest.raises(ValueError, match="need the truths"):
        search_thresholds(LABELS, prob, form="triplet", **GRID)
    with pytest.raises(ValueError, match="need the truths"):
        search_thresholds(LABELS, prob, objective="siim_dice", **GRID)
    with pytest.raises(ValueError, match="form"):
        search_thresholds(LABELS, prob, form="quad", **GRID)
    with pytest.raises(ValueError, match="gate"):
        search_thresholds(LABELS, prob, gate="aux", **GRID)
    with pytest.raises(ValueError, match="top_thresholds only"):
        search_thresholds(LABELS, prob, top_thresholds=(0.9,), **GRID)
    with pytest.raises(ValueError, match="levels must hold"):
        search_thresholds(
            LABELS,
            areas=np.zeros((4, 2)),
            pixels=256,
            levels=(0.5, 0.7),
            form="triplet",
            top_thresholds=(0.9,),
            intersections=np.zeros((4, 2)),
            true_areas=np.zeros(4),
            **GRID,
        )
    with pytest.raises(ValueError, match="same size"):
        dice_counts_at_thresholds(prob, true[:2])


def test_score_predictions_reports_raw_gated_and_triplet_dice():
    from ptx_keras import evaluation as ev

    prob, true = hand_case()
    batch = {"sample_id": np.array(list("ABCD")), "true": true, "prob": prob}
    df = ev.score_predictions(batch, Thresholds(0.5, 5, SIZE, top_threshold=0.9))
    np.testing.assert_array_equal(df["diagnosis"], [1, 0, 1, 0])
    np.testing.assert_allclose(df["dsc1_raw"], [1, 0, 20 / 26, 0])  # > 0.5 whatever the diagnosis
    np.testing.assert_allclose(df["dsc1_pair"], [1, 0, 20 / 26, 1])  # the pair rule (> 5 px above 0.5) keeps B
    np.testing.assert_allclose(df["dsc1_triplet"], [1, 1, 20 / 26, 1])
    np.testing.assert_allclose(df["dsc1"], df["dsc1_triplet"])  # the framework output is the rule in force
    summary = ev.summarize(df, Thresholds(0.5, 5, SIZE, top_threshold=0.9).to_dict(), "test")
    by_mask = summary["siim_acr_dice_by_mask"]
    assert by_mask["triplet"]["mean"] == pytest.approx(TRIPLET_DICE) == summary["siim_acr_dice"]
    assert by_mask["gated"]["mean"] == pytest.approx((2 + 20 / 26) / 4)
    assert by_mask["raw"]["mean"] == pytest.approx((1 + 20 / 26) / 4)
    md = ev.summary_markdown(summary, "hand")
    assert "above 0.9 (mask drawn above 0.5)" in md and "| triplet |" in md and "| gated |" in md
    # Without a triplet rule there is no triplet column, and gated = the scored framework output.
    pair = ev.score_predictions(batch, Thresholds(0.5, 5, SIZE))
    assert "dsc1_triplet" not in pair and np.array_equal(pair["dsc1_pair"], pair["dsc1"])
    assert set(ev.summarize(pair, Thresholds().to_dict(), "test")["siim_acr_dice_by_mask"]) == {"raw", "gated"}


# ---------------------------------------------------------------------------------------------------------------
# The search on prepared data: validation only
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_aux_run(tmp_path_factory):
    """A run directory with an untrained aux-head model on 24 prepared 64 px phantoms (test_evaluation's)."""
    from tiny import make_tiny_run

    return make_tiny_run(
        tmp_path_factory.mktemp("triplet"),
        "aux",
        [
            "model.options={growth_rate: 2, first_conv_filters: 8, num_pools: 3, layers_per_block: 2, aux_head: true}",
            "evaluation.tta=hflip",
            "evaluation.threshold_form=triplet",
        ],
    )


@pytest.mark.slow
def test_validation_search_never_reads_the_test_split(tiny_aux_run, monkeypatch):
    """The test shards are replaced by garbage and every batch read is recorded: the triplet search with the aux
    gate decodes validation examples only, all of them, and stores its rule with the run."""
    import json
    import os

    from ptx_keras.data.prepared import load_prepared_info, read_manifest
    from ptx_keras.evaluation import predictions
    from ptx_keras.evaluation.thresholds import search_validation_thresholds
    from ptx_keras.runs import RunDir

    run, cfg, prepared = tiny_aux_run
    info = load_prepared_info(prepared)
    backups = {}
    for name in info["shards"]["test"]:
        path = os.path.join(prepared, name)
        with open(path, "rb") as f:
            backups[path] = f.read()
        with open(path, "wb") as f:
            f.write(b"not a TFRecord: reading the test split during a threshold search is a bug" * 10)
    read = []
    original = predictions._prepared_batches

    def recording(prepared_dir, split, *args, **kwargs):
        for batch in original(prepared_dir, split, *args, **kwargs):
            read.append((split, list(batch["sample_id"])))
            yield batch

    monkeypatch.setattr(predictions, "_prepared_batches", recording)
    try:
        r = RunDir(str(run))
        saved = search_validation_thresholds(
            r.load_model(), prepared, r, 64, 4, "f1", False, "sha", form="triplet", gate="both", tta="hflip"
        )
    finally:
        for path, data in backups.items():
            with open(path, "wb") as f:
                f.write(data)
    val_ids = {row["sample_id"] for row in read_manifest(prepared) if row["split"] == "val"}
    assert {split for split, _ in read} == {"val"}
    assert {i for _, ids in read for i in ids} == val_ids
    record = json.loads(open(saved.file).read())
    assert record["split"] == "val" and record["form"] == "triplet" and record["tta"] == "hflip"
    assert record["gate"] == "both" and "aux_threshold" in record and record["siim_dice"] is not None
    assert saved.thresholds == Thresholds.from_mapping(record)
    grid = open(r.threshold_grid_file()).read().splitlines()[0].split(",")
    assert {"top_threshold", "min_area", "mask_threshold", "aux_threshold", "f1", "siim_dice"} <= set(grid)


@pytest.mark.slow
def test_evaluate_with_tta_triplet_and_aux_head_end_to_end(tiny_aux_run):
    import json

    from ptx_keras.cli.evaluate import main as evaluate_main

    run, cfg, prepared = tiny_aux_run
    assert evaluate_main([str(run), "--search-thresholds", "--no-progress"]) == 0
    summary = json.loads((run / "eval" / "test" / "summary.json").read_text())
    t = Thresholds.from_mapping(summary["thresholds"])
    assert summary["thresholds"]["form"] == "triplet" and summary["inference"] == {"tta": "hflip"}
    assert set(summary["siim_acr_dice_by_mask"]) == (
        {"raw", "gated", "triplet"} if t.form == "triplet" else {"raw", "gated"}
    )
    assert "aux_roc_auc" in summary["diagnosis"]
    assert summary["calibration"]["image_probability"] == "aux_prob" and 0 <= summary["calibration"]["ece"] <= 1
    assert sum(b["n"] for b in summary["calibration"]["bins"]) == summary["n_images"]
    assert (run / "eval" / "test" / "reliability.png").is_file() and "reliability" in summary["figures"]
    md = (run / "eval" / "test" / "summary.md").read_text()
    assert "Test-time augmentation: hflip" in md and "ROC AUC (aux head)" in md and "Expected calibration" in md
