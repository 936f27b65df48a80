"""Choosing the diagnosis rule (pair or triplet thresholds, aux gate) on a validation split (never the test split)
and storing it with the run."""

import dataclasses
import logging

import numpy as np

from ptx_keras import constants as C
from ptx_keras.errors import DataError, ModelError

__all__ = ["search_validation_thresholds"]


logger = logging.getLogger(__name__)


def search_validation_thresholds(
    model,
    prepared_dir,
    run,
    reference_size,
    batch_size,
    objective="f1",
    progress=True,
    model_sha256=None,
    data=None,
    *,
    form="pair",
    gate="area",
    tta="none",
):
    """Chooses the diagnosis rule on the VALIDATION split and saves it with the run.

    Only the validation split is predicted (`iter_predictions(..., "val")`); the test split is never read.
    The pair grid is `constants.SEARCH_MASK_THRESHOLDS` x `constants.SEARCH_MIN_AREAS` (areas at
    `reference_size`); ties go to the pair nearest the paper's (0.5, 50). The triplet grid adds the top
    threshold (`SEARCH_MASK_THRESHOLDS` too, with mask threshold <= top threshold); an aux gate adds
    `diagnosis.SEARCH_AUX_THRESHOLDS` (`ptx_keras.diagnosis.search_thresholds`). Areas, true-positive pixels
    and true areas are counted batch by batch while predicting, so the search holds one number per image and
    probability level, never the maps.

    Args:
        model: The run's model (or a `ptx_keras.inference.ModelRunner`, whose own TTA is then used).
        prepared_dir: Prepared data at the model's resolution.
        run: The `ptx_keras.runs.RunDir`.
        reference_size: Side at which `min_area` is expressed (the run's `diagnosis.reference_size`).
        batch_size: Prediction batch size.
        objective: "f1", "youden" or "siim_dice".
        progress: Show a progress bar.
        model_sha256: Hash of `best.keras`, recorded so that a later evaluation can tell a stale search.
        data: None when `prepared_dir` is the run's own data (the thresholds the run deploys with); else the
            other data's path: the result is stored beside that data's evaluations and used only there.
        form: "pair" (the paper's rule) or "triplet" (`evaluation.threshold_form`).
        gate: "area", "aux" or "both" (`diagnosis.gate`); "aux" and "both" need a model with an aux head.
        tta: Test-time augmentation of the predictions searched on ("none" or "hflip"; the run's
            `evaluation.tta`); recorded with the thresholds.

    Returns:
        `ptx_keras.runs.SavedThresholds`.

    Raises:
        DataError: if the validation split is empty or lacks positive or negative images.
        ModelError: for an aux gate on a model without an aux head.
        ValueError: for an unknown objective, form or gate.
    """
    from ptx_keras.diagnosis import check_search_options, search_thresholds
    from ptx_keras.inference import ModelRunner

    check_search_options(objective, form, gate)
    runner = model if isinstance(model, ModelRunner) else ModelRunner.from_keras(model, tta=tta)
    levels = sorted(set(C.SEARCH_MASK_THRESHOLDS))
    counts = _validation_counts(runner, prepared_dir, batch_size, levels, progress)
    labels = counts.labels(prepared_dir)
    aux = counts.aux_for(gate)
    result = search_thresholds(
        labels,
        areas=counts.areas,
        pixels=counts.pixels,
        levels=levels,
        intersections=counts.intersections,
        true_areas=counts.true_areas,
        objective=objective,
        reference_size=int(reference_size),
        form=form,
        top_thresholds=C.SEARCH_MASK_THRESHOLDS if form == "triplet" else None,
        aux=aux,
        gate=gate,
    )
    search = _search_record(result, labels, objective, form, runner.tta, model_sha256, prepared_dir, data)
    saved = run.write_thresholds(result.thresholds, search, grid=result.grid, data=data)
    logger.info(
        "Thresholds chosen on %d validation images (%s = %.4f, SIIM-ACR Dice %.4f): %s -> %s",
        len(labels),
        objective,
        float(result.value),
        result.siim_dice,
        result.thresholds.describe(),
        saved.file,
    )
    return saved


@dataclasses.dataclass(frozen=True)
class _ValidationCounts:
    """Per validation image and probability level, what the search needs (`dice_counts_at_thresholds`).

    Attributes:
        areas, intersections, true_areas, pixels: Arrays with one row per image, concatenated over the batches.
        aux: The batches' image-level probabilities (an entry is None for a model without an aux head).
    """

    areas: np.ndarray
    intersections: np.ndarray
    true_areas: np.ndarray
    pixels: np.ndarray
    aux: list

    def labels(self, prepared_dir):
        """The images' truth, 0/1.

        Raises:
            DataError: if the split lacks positive or negative images.
        """
        labels = (self.true_areas > 0).astype(int)
        n_pos = int(labels.sum())
        if n_pos == 0 or n_pos == len(labels):
            raise DataError(
                f"Cannot search the diagnosis thresholds: the validation split of {prepared_dir} has {n_pos} "
                f"positive and {len(labels) - n_pos} negative images; both kinds are needed"
            )
        return labels

    def aux_for(self, gate):
        """The image-level probabilities an aux gate is searched on; None for the area gate.

        Raises:
            ModelError: for an aux gate on a model without an aux head.
        """
        if gate != "area" and not all(a is not None for a in self.aux):
            raise ModelError(f"diagnosis.gate={gate!r} needs a model with an aux head (model.options.aux_head: true)")
        return np.concatenate(self.aux) if gate != "area" else None


def _validation_counts(runner, prepared_dir, batch_size, levels, progress):
    """Predicts the validation split, counting batch by batch (the search never holds the maps)."""
    from ptx_keras.diagnosis import dice_counts_at_thresholds
    from ptx_keras.evaluation.predictions import iter_predictions

    counts = {"areas": [], "intersections": [], "true_areas": [], "pixels": []}
    aux = []
    for batch in iter_predictions(runner, prepared_dir, "val", batch_size, progress=progress):
        for key, value in dice_counts_at_thresholds(batch["prob"].astype(np.float32), batch["true"], levels).items():
            counts[key].append(value)
        aux.append(batch.get("aux"))
    return _ValidationCounts(**{k: np.concatenate(v) for k, v in counts.items()}, aux=aux)


def _search_record(result, labels, objective, form, tta, model_sha256, prepared_dir, data):
    """What `thresholds.json` records about the search beside the thresholds."""
    value = float(result.value)
    return {
        "objective": objective,
        "value": value if np.isfinite(value) else None,
        "form": form,
        "siim_dice": result.siim_dice,
        "tta": tta,
        "split": "val",
        "n_images": int(len(labels)),
        "n_positive": int(labels.sum()),
        "model_sha256": model_sha256,
        "prepared_dir": str(prepared_dir),
        **({} if data is None else {"data": str(data)}),
    }
