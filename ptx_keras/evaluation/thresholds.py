"""Choosing the diagnosis thresholds on a validation split (never the test split) and storing them with the run."""

import logging

import numpy as np

from ptx_keras import constants as C
from ptx_keras.errors import DataError

logger = logging.getLogger(__name__)


def search_validation_thresholds(model, prepared_dir, run, reference_size, batch_size, objective="f1",
                                 progress=True, model_sha256=None, data=None):
    """Chooses `(mask_threshold, min_area)` on the VALIDATION split and saves them with the run.

    The grid is `constants.SEARCH_MASK_THRESHOLDS` x `constants.SEARCH_MIN_AREAS` (areas at `reference_size`);
    ties go to the pair nearest the paper's (0.5, 50) (`ptx_keras.diagnosis.search_thresholds`). Areas are
    counted batch by batch while predicting.

    Args:
        model: The run's model (or a `ptx_keras.inference.ModelRunner`).
        prepared_dir: Prepared data at the model's resolution.
        run: The `ptx_keras.runs.RunDir`.
        reference_size: Side at which `min_area` is expressed (the run's `diagnosis.reference_size`).
        batch_size: Prediction batch size.
        objective: "f1" or "youden".
        progress: Show a progress bar.
        model_sha256: Hash of `best.keras`, recorded so that a later evaluation can tell a stale search.
        data: None when `prepared_dir` is the run's own data (the thresholds the run deploys with); else the
            other data's path: the result is stored beside that data's evaluations and used only there.

    Returns:
        `ptx_keras.runs.SavedThresholds`.

    Raises:
        DataError: if the validation split is empty or lacks positive or negative images.
        ValueError: for an unknown objective.
    """
    from ptx_keras.diagnosis import OBJECTIVES, Thresholds, areas_at_thresholds, search_thresholds
    from ptx_keras.evaluation.predictions import iter_predictions

    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}. Received: objective={objective!r}")
    labels, areas, pixels = [], [], []
    for batch in iter_predictions(model, prepared_dir, "val", batch_size, progress=progress):
        a, p = areas_at_thresholds(batch["prob"].astype(np.float32), C.SEARCH_MASK_THRESHOLDS)
        areas.append(a)
        pixels.append(p)
        labels.append(batch["true"].reshape(len(a), -1).any(axis=1))
    labels = np.concatenate(labels).astype(int)
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == len(labels):
        raise DataError(
            f"Cannot search the diagnosis thresholds: the validation split of {prepared_dir} has {n_pos} positive "
            f"and {len(labels) - n_pos} negative images; both kinds are needed"
        )
    result = search_thresholds(
        labels, areas=np.concatenate(areas), pixels=np.concatenate(pixels), objective=objective,
        reference_size=int(reference_size),
    )
    thresholds = Thresholds(result["mask_threshold"], result["min_area"], int(reference_size))
    value = float(result["value"])
    search = {
        "objective": objective,
        "value": value if np.isfinite(value) else None,
        "split": "val",
        "n_images": int(len(labels)),
        "n_positive": n_pos,
        "model_sha256": model_sha256,
        "prepared_dir": str(prepared_dir),
        **({} if data is None else {"data": str(data)}),
    }
    saved = run.write_thresholds(thresholds, search, grid=result["grid"], data=data)
    logger.info(
        "Thresholds chosen on %d validation images (%s = %.4f): mask probability > %g, area > %g px at %d -> %s",
        len(labels), objective, value, thresholds.mask_threshold, thresholds.min_area, thresholds.reference_size,
        saved.file,
    )
    return saved
