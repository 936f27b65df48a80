"""The one prediction loop: a model over batches of preprocessed images -> pneumothorax probabilities.

Evaluation (prepared splits), `ptx-predict` (image files) and the experiment figures all run their models
through `ModelRunner` and `predict_batches`, so whatever changes how a model is run (test-time
augmentation, a SavedModel instead of a Keras model) changes it everywhere at once.
"""

import numpy as np

from ptx_keras import constants as C


class ModelRunner:
    """A model to run: `(batch, S, S, C)` float32 inputs in [0, 1] -> `(batch, S, S)` float32 PTX probabilities.

    Args:
        call: Function from a float32 NumPy batch `(batch, S, S, C)` to the softmax `(batch, S, S, 2)` (NumPy
            or tensor).
        image_size: S, or None for a model that takes any size.
        channels: C.
        name: Shown in progress bars and errors.

    Raises:
        ValueError: for a non-positive size or channel count, or a `call` that is not callable.
    """

    def __init__(self, call, image_size, channels, name="model"):
        for key, value in (("image_size", image_size), ("channels", channels)):
            if value is None and key == "image_size":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{key} must be a positive integer. Received: {key}={value!r}")
        if not callable(call):
            raise ValueError(f"call must be callable. Received: call={call!r}")
        self._call = call
        self.image_size = None if image_size is None else int(image_size)
        self.channels, self.name = int(channels), str(name)

    @classmethod
    def from_keras(cls, model):
        """A runner for a Keras model with input `(batch, S, S, C)`."""
        _, height, _, channels = tuple(model.input_shape)
        return cls(model.predict_on_batch, height, channels, model.name)

    def __call__(self, images):
        """float32 `(batch, S, S, C)` -> float32 `(batch, S, S)` pneumothorax probabilities."""
        out = np.asarray(self._call(np.asarray(images, np.float32)))
        return out[..., C.PTX_CLASS].astype(np.float32, copy=False)


def predict_batches(runner, batches, *, total=None, desc="predict", progress=True, keep=None):
    """Runs `runner` over batches, yielding each batch with its probabilities.

    Args:
        runner: A `ModelRunner`.
        batches: Iterable of dicts, each with `"image"`: float32 `(b, S, S, C)` model inputs, plus any per-image
            arrays of length b (ids, truths, ...) that travel with it.
        total: Number of images, for the progress bar.
        desc: Progress-bar label.
        progress: Show a tqdm progress bar (images read).
        keep: Optional function of a batch returning a boolean `(b,)` array: only those images are predicted and
            yielded (a batch with none is skipped without running the model).

    Yields:
        The batch dict restricted to the kept images, with `"prob"`: float32 `(b', S, S)` PTX probabilities.
    """
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="image", disable=not progress) as bar:
        for batch in batches:
            n = len(batch["image"])
            bar.update(n)
            if keep is not None:
                mask = np.asarray(keep(batch), bool)
                if not mask.any():
                    continue
                if not mask.all():
                    batch = {k: np.asarray(v)[mask] for k, v in batch.items()}
            yield {**batch, "prob": runner(batch["image"])}
