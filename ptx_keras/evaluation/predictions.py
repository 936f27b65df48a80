"""Predicting a split of a prepared data set, batch by batch (through the shared `ptx_keras.inference` loop)."""

import os

import numpy as np
import pandas as pd

from ptx_keras import constants as C
from ptx_keras.errors import DataError

__all__ = ["check_input_size", "check_split", "collect_cases", "iter_predictions", "predict_split", "spacing_lookup"]


def check_split(split):
    """Returns `split` if it is one of `constants.SPLITS`; raises DataError naming the valid ones."""
    if split not in C.SPLITS:
        raise DataError(f"Unknown split {split!r}; use one of {', '.join(C.SPLITS)}")
    return split


def check_input_size(model, prepared_dir):
    """Checks that a prepared data set has the resolution the model was built for.

    Args:
        model: A Keras model with input `(batch, S, S, C)`, or a `ptx_keras.inference.ModelRunner`.
        prepared_dir: A prepared data set (see `ptx_keras.data.prepare_dataset`).

    Returns:
        `(size, channels)`: the data's side in pixels and the model's input channels.

    Raises:
        DataError: if `prepared_dir` is not a prepared data set or its size differs from the model's input.
    """
    from ptx_keras.data.prepared import load_prepared_info
    from ptx_keras.inference import ModelRunner, input_contract

    size = int(load_prepared_info(prepared_dir)["image_size"])
    in_s, in_c = (model.image_size, model.channels) if isinstance(model, ModelRunner) else input_contract(model)
    if in_s is not None and in_s != size:
        raise DataError(
            f"{prepared_dir} is prepared at {size}x{size} but the model expects {in_s}x{in_s} inputs; prepare the "
            f"data at that size (ptx-prepare SOURCE OUT --size {in_s}) or pass --data with the raw source"
        )
    return size, in_c


def _prepared_batches(prepared_dir, split, batch_size, channels):
    from ptx_keras.data.pipeline import make_dataset
    from ptx_keras.targets import mask_of

    ds = make_dataset(prepared_dir, split, batch_size, False, channels=channels, with_ids=True)
    for image, y_true, sample_id in ds:
        yield {
            "image": image.numpy(),
            "sample_id": np.array([s.decode() for s in sample_id.numpy()]),
            "true": np.asarray(mask_of(y_true)) > 0.5,
        }


def iter_predictions(model, prepared_dir, split, batch_size=8, channels=None, progress=True, only_ids=None):
    """Predicts one split of a prepared data set, one batch at a time.

    Args:
        model: A Keras model mapping `(batch, S, S, C)` to `(batch, S, S, 2)` softmax (or the dict of a model
            with an aux head), or a `ptx_keras.inference.ModelRunner` (e.g. with test-time augmentation).
        prepared_dir: A prepared data set at the model's resolution (see `check_input_size`).
        split: `"train"`, `"val"` or `"test"`.
        batch_size: Images per forward pass.
        channels: Input channels; defaults to the model's.
        progress: Show a progress bar (images read).
        only_ids: Optional set of sample ids: the model runs only on batches holding one of them and only
            those images are yielded (used to fetch the images drawn in a figure without a full second pass).

    Yields:
        dict per batch of b images: `sample_id` (b,) str, `image` (b, S, S) float32 in [0, 1] (first channel),
        `true` (b, S, S) bool, `prob` (b, S, S) float16 pneumothorax probabilities, and `aux` (b,) float32
        image-level probabilities for a model with an aux head.

    Raises:
        DataError: if the split is unknown or has no images.
    """
    from ptx_keras.data.pipeline import count_examples
    from ptx_keras.inference import ModelRunner, predict_batches

    check_split(split)
    runner = model if isinstance(model, ModelRunner) else ModelRunner.from_keras(model)
    channels = channels or runner.channels
    n = count_examples(prepared_dir, split)
    if n == 0:
        raise DataError(f"The {split} split of {prepared_dir} has no images")
    keep = None
    if only_ids is not None:
        wanted = [str(i) for i in only_ids]
        keep = lambda batch: np.isin(batch["sample_id"], wanted)  # noqa: E731
    desc = f"predict {split}" if only_ids is None else f"figures {split}"
    for batch in predict_batches(
        runner,
        _prepared_batches(prepared_dir, split, batch_size, channels),
        total=n,
        desc=desc,
        progress=progress,
        keep=keep,
    ):
        yield {
            "sample_id": batch["sample_id"],
            "image": batch["image"][..., 0].astype(np.float32),
            "true": batch["true"],
            "prob": batch["prob"].astype(np.float16),
            **({"aux": batch["aux"]} if "aux" in batch else {}),
        }


def predict_split(model, prepared_dir, split, batch_size=8, channels=None, progress=True):
    """Predicts a whole split into memory (for small sets; `evaluate_run` streams instead).

    Memory: about 7 bytes per pixel (float32 image, float16 probability, bool mask), i.e. 0.46 MB per
    256 x 256 image or 0.9 GB for 2,000 such images.

    Args:
        model, prepared_dir, split, batch_size, channels, progress: As `iter_predictions`.

    Returns:
        dict of NumPy arrays over the split's n images: `sample_id` (n,) str, `image` (n, S, S) float32 in
        [0, 1], `true` (n, S, S) bool, `prob` (n, S, S) float16 PTX probabilities (and `aux` (n,) with an aux
        head).

    Raises:
        DataError: if the data's resolution differs from the model's input size, or the split is empty.
    """
    check_input_size(model, prepared_dir)
    batches = list(iter_predictions(model, prepared_dir, split, batch_size, channels, progress))
    return {
        k: np.concatenate([b[k] for b in batches])
        for k in ("sample_id", "image", "true", "prob", "aux")
        if k in batches[0]
    }


def collect_cases(batches):
    """Gathers `{sample_id: {"image", "true", "prob"}}` from prediction batches (e.g. `iter_predictions`)."""
    out = {}
    for batch in [batches] if isinstance(batches, dict) else batches:
        for j, sid in enumerate(batch["sample_id"]):
            out[str(sid)] = {k: batch[k][j] for k in ("image", "true", "prob")}
    return out


def spacing_lookup(prepared_dir):
    """Pixel spacing per sample at the prepared size, from the manifest.

    Returns:
        dict `{sample_id: (row_mm, col_mm) or None}`, or None when no sample has a known spacing (then no
        millimetre columns are written).
    """
    from ptx_keras.data.prepared import MANIFEST_CSV

    manifest = pd.read_csv(os.path.join(prepared_dir, MANIFEST_CSV), dtype={"sample_id": str})
    if not {"spacing_row_mm", "spacing_col_mm"} <= set(manifest.columns):
        return None
    rows = manifest[["spacing_row_mm", "spacing_col_mm"]].to_numpy(float)
    if not np.isfinite(rows).all(axis=1).any():
        return None
    return {sid: (tuple(r) if np.isfinite(r).all() else None) for sid, r in zip(manifest["sample_id"], rows.tolist())}
