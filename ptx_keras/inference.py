"""The one prediction loop: a model over batches of preprocessed images -> pneumothorax probabilities.

Evaluation (prepared splits), `ptx-predict` (image files) and the experiment figures all run their models
through `ModelRunner` and `predict_batches`, so whatever changes how a model is run changes it everywhere at once:

* test-time augmentation (`tta="hflip"`): the mean of the model's softmax on the image and, mirrored back, on its
  horizontal mirror (the image-level probability of an aux head is averaged too). The exported graph does the
  same (`ptx_keras.serving.model_function`);
* a model with an image-level (aux) head: its probability travels with the maps (`"aux"` in each batch);
* samples for uncertainty (`ModelRunner.sample`): MC dropout (the model's dropout active, batch normalization in
  inference mode) or TTA views.
"""

import contextlib
import weakref

import numpy as np

from ptx_keras import constants as C
from ptx_keras.errors import ModelError

__all__ = [
    "TTA_GAMMA_MAX",
    "TTA_MODES",
    "UNCERTAINTY_METHODS",
    "ModelRunner",
    "batch_norm_frozen",
    "dropout_layers",
    "flip_images",
    "mc_dropout_samples",
    "predict_batches",
    "tta_gammas",
]


TTA_MODES = C.TTA_MODES
UNCERTAINTY_METHODS = C.UNCERTAINTY_METHODS
# Views of `sample(method="tta")` beyond the mirror pair: intensity gammas x**g with |log g| <= log(TTA_GAMMA_MAX).
TTA_GAMMA_MAX = 1.25
# Output names accepted from a model's call: a Keras model with an aux head returns {MASK_OUTPUT, AUX_OUTPUT}
# (`ptx_keras.models.common`); the exported `serve_preprocessed` signature {PROBABILITIES_OUTPUT,
# AUX_PROBABILITY_OUTPUT} (`ptx_keras.serving`).
_MASK_KEYS = (C.MASK_OUTPUT, C.PROBABILITIES_OUTPUT)
_AUX_KEYS = (C.AUX_OUTPUT, C.AUX_PROBABILITY_OUTPUT)


def check_tta(tta, error=ModelError):
    """The one check of a test-time augmentation mode (runners, the serving graph, exports, `ptx-predict`).

    Args:
        tta: The mode asked for.
        error: The exception class raised (a `ValueError` subclass; `ConfigError` where a user's option is read).

    Returns:
        `tta`, one of `constants.TTA_MODES`.

    Raises:
        error: `tta must be one of ('none', 'hflip'). Received: tta=...`.
    """
    if tta not in TTA_MODES:
        raise error(f"tta must be one of {TTA_MODES}. Received: tta={tta!r}")
    return tta


def input_contract(model, where=None, *, fixed=False):
    """The model's input contract: float32 images `(batch, S, S, C)` in [0, 1]; the one reading of `input_shape`.

    Args:
        model: A Keras model.
        where: Named in errors (default: `model '<name>'`).
        fixed: Require a fixed size S (a deployment); else S may be None (a model built on `(None, None, C)`).

    Returns:
        `(S, C)`: ints, S None for a model that takes any size.

    Raises:
        ModelError: naming `where`, for an input that is not square `(batch, S, S, C)` (or not fixed, with `fixed`).
    """
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] is None or (fixed and shape[1] is None):
        where = where or f"model {model.name!r}"
        raise ModelError(
            f"{where}: expected a model with a {'fixed ' if fixed else ''}square input (batch, S, S, C). "
            f"Received: input_shape={shape}"
        )
    return (None if shape[1] is None else int(shape[1])), int(shape[3])


def _split(out):
    """`(softmax, aux)` as float32 NumPy arrays from one call's output (aux None without the head)."""
    if isinstance(out, dict):
        mask = next((out[k] for k in _MASK_KEYS if k in out), None)
        if mask is None:
            raise ValueError(f"the model's outputs must hold one of {_MASK_KEYS}. Received keys: {sorted(out)}")
        aux = next((out[k] for k in _AUX_KEYS if k in out), None)
    else:
        mask, aux = out, None
    mask = np.asarray(mask)
    aux = None if aux is None else np.asarray(aux, np.float32).reshape(len(mask))
    return mask, aux


def flip_images(images):
    """Horizontal mirror of `(batch, height, width[, channels])` images (the width axis reversed)."""
    return np.ascontiguousarray(np.asarray(images)[:, :, ::-1])


def tta_gammas(pairs):
    """The intensity gamma of each mirror pair of `sample(method="tta")`: 1 first, then alternately below and
    above 1, log-evenly spread up to `TTA_GAMMA_MAX` (e.g. 4 pairs: 1, 0.894, 1.118, 0.8)."""
    rest = pairs - 1
    if rest <= 0:
        return [1.0][:pairs]
    half = -(-rest // 2)
    out = [1.0]
    for i in range(1, rest + 1):
        magnitude = -(-i // 2) / half
        out.append(float(TTA_GAMMA_MAX ** (-magnitude if i % 2 else magnitude)))
    return out


class ModelRunner:
    """A model to run: `(batch, S, S, C)` float32 inputs in [0, 1] -> `(batch, S, S)` float32 PTX probabilities.

    Args:
        call: A Keras model (run with `predict_on_batch`), or a function from a float32 NumPy batch
            `(batch, S, S, C)` to the softmax `(batch, S, S, 2)` (NumPy or tensor), or to a dict holding it under `"mask"` (a Keras model with an aux head) or
            `"probabilities"` (the exported `serve_preprocessed` signature), with the image-level probability
            under `"aux"` / `"aux_probability"` when the model has one.
        image_size: S, or None for a model that takes any size.
        channels: C.
        name: Shown in progress bars and errors.
        tta: `"none"` or `"hflip"` (`TTA_MODES`): average the model on the image and on its mirror (the mirror's
            output mirrored back).
        model: The Keras model behind a function `call`, when there is one (MC dropout needs it).

    Raises:
        ValueError: for a non-positive size or channel count, a `call` that is not callable or an unknown `tta`.
    """

    def __init__(self, call, image_size, channels, name="model", *, tta="none", model=None):
        for key, value in (("image_size", image_size), ("channels", channels)):
            if value is None and key == "image_size":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{key} must be a positive integer. Received: {key}={value!r}")
        if model is None and hasattr(call, "predict_on_batch") and hasattr(call, "input_shape"):
            model, call = call, call.predict_on_batch  # a Keras model
        if not callable(call):
            raise ValueError(f"call must be callable. Received: call={call!r}")
        self._call = call
        self.image_size = None if image_size is None else int(image_size)
        self.channels, self.name = int(channels), str(name)
        self.tta = check_tta(tta)
        self.model = model

    @classmethod
    def from_keras(cls, model, tta="none"):
        """A runner for a Keras model with input `(batch, S, S, C)` (`model.predict_on_batch`)."""
        size, channels = input_contract(model)
        return cls(model, size, channels, model.name, tta=tta)

    def with_tta(self, tta):
        """The same model run with another test-time augmentation."""
        return ModelRunner(self._call, self.image_size, self.channels, self.name, tta=tta, model=self.model)

    def _once(self, images):
        softmax, aux = _split(self._call(np.asarray(images, np.float32)))
        return softmax[..., C.PTX_CLASS].astype(np.float32, copy=False), aux

    def outputs(self, images):
        """float32 `(batch, S, S, C)` -> `(prob, aux)`: float32 `(batch, S, S)` pneumothorax probabilities and
        the float32 `(batch,)` image-level probabilities (None for a model without an aux head).

        With `tta="hflip"`: `(p(x) + mirror(p(mirror(x)))) / 2`, and `(a(x) + a(mirror(x))) / 2`.
        """
        images = np.asarray(images, np.float32)
        prob, aux = self._once(images)
        if self.tta == "hflip":
            mirrored, mirrored_aux = self._once(flip_images(images))
            prob = (prob + mirrored[:, :, ::-1]) / np.float32(2)
            if aux is not None:
                aux = (aux + mirrored_aux) / np.float32(2)
        return prob, aux

    def __call__(self, images):
        """float32 `(batch, S, S, C)` -> float32 `(batch, S, S)` pneumothorax probabilities."""
        return self.outputs(images)[0]

    def sample(self, images, method, samples):
        """Samples of the model's output for uncertainty estimates.

        * `"mc_dropout"`: `samples` forward passes of the Keras model with its dropout active (a new mask each
          pass) and batch normalization in inference mode (moving statistics, never updated): Gal &
          Ghahramani's MC dropout. Needs a Keras model with dropout (FC-DenseNet's `dropout_rate`, paper 0.2).
        * `"tta"`: `samples` views: the image and its horizontal mirror (mirrored back), then mirror pairs at
          intensity gammas `x ** g` (`tta_gammas`, g in [1 / 1.25, 1.25]). `samples=2` is exactly the pair
          that `tta="hflip"` averages.

        The runner's own `tta` is not applied to the samples.

        Args:
            images: float32 `(batch, S, S, C)`.
            method: `"mc_dropout"` or `"tta"` (`UNCERTAINTY_METHODS`).
            samples: Number of samples, >= 2.

        Returns:
            `(probs, aux)`: float32 `(samples, batch, S, S)` and `(samples, batch)` (None without an aux head).

        Raises:
            ValueError: for an unknown method, fewer than 2 samples, MC dropout without a Keras model or
                without dropout.
        """
        if method not in UNCERTAINTY_METHODS:
            raise ValueError(f"method must be one of {UNCERTAINTY_METHODS}. Received: method={method!r}")
        if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 2:
            raise ValueError(f"samples must be an integer >= 2. Received: samples={samples!r}")
        images = np.asarray(images, np.float32)
        if method == "mc_dropout":
            if self.model is None:
                raise ValueError(
                    f"MC dropout needs the Keras model ({self.name} is run through a fixed inference graph, e.g. an "
                    "exported SavedModel); use a run directory, or the tta method"
                )
            outs = mc_dropout_samples(self.model, images, samples)
        else:
            outs = []
            for k, gamma in enumerate(g for g in tta_gammas(-(-samples // 2)) for _ in (0, 1)):
                if k == samples:
                    break
                view = images if gamma == 1.0 else images ** np.float32(gamma)
                if k % 2:
                    prob, aux = self._once(flip_images(view))
                    outs.append((prob[:, :, ::-1], aux))
                else:
                    outs.append(self._once(view))
        probs = np.stack([p for p, _ in outs])
        aux = None if outs[0][1] is None else np.stack([a for _, a in outs])
        return probs, aux


def dropout_layers(model):
    """The layers of `model` (nested ones included) that apply dropout with a positive rate."""
    import keras

    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Dropout) or hasattr(layer, "dropout_rate"):
            rate = getattr(layer, "rate", None) if isinstance(layer, keras.layers.Dropout) else layer.dropout_rate
            if rate and rate > 0:
                found.append(layer)
    return found


@contextlib.contextmanager
def batch_norm_frozen(model):
    """Inside the block every BatchNormalization layer of `model` (nested ones included) runs in inference mode
    even when the model is called with `training=True` (Keras, and the package's fused path in
    `ptx_keras.layers.dense_block`, normalize with the moving statistics and never update them when a
    BatchNormalization layer is not trainable); their trainability is restored after it."""
    import keras

    layers = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]
    for layer in layers:
        layer.trainable = False
    try:
        yield
    finally:
        for layer in layers:
            layer.trainable = True


def mc_dropout_samples(model, images, samples):
    """`samples` forward passes of a Keras model with dropout active and batch normalization in inference mode.

    Args:
        model: A Keras segmentation model (softmax output, or the dict of a model with an aux head).
        images: float32 `(batch, S, S, C)`.
        samples: Number of passes.

    Returns:
        List of `(prob, aux)` per pass: float32 `(batch, S, S)` and `(batch,)` (None without an aux head).

    Raises:
        ValueError: if the model has no dropout (every pass would equal the deterministic output).
    """
    if not dropout_layers(model):
        raise ValueError(
            f"MC dropout needs a model with dropout; {model.name} has none (e.g. dropout_rate: 0, as in the quick "
            "start). Use the tta method, or train with dropout (model.options.dropout_rate, paper 0.2)"
        )
    outs = []
    with batch_norm_frozen(model):
        call = _training_call(model)
        for _ in range(samples):
            softmax, aux = _split(_numpy(call(images)))
            outs.append((softmax[..., C.PTX_CLASS].astype(np.float32, copy=False), aux))
    return outs


_TRAINING_CALLS = weakref.WeakKeyDictionary()


def _training_call(model):
    """`model(x, training=True)`, compiled once per model on TensorFlow (a `tf.function`: 10-100x fewer Python
    calls than eager for a deep network). It must be traced and called inside `batch_norm_frozen`: the trace
    reads the layers' trainability. Each call draws new dropout masks (the layers' seed generators advance)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return lambda images: model(images, training=True)
    if model not in _TRAINING_CALLS:
        import tensorflow as tf

        _TRAINING_CALLS[model] = tf.function(lambda images: model(images, training=True), reduce_retracing=True)
    return _TRAINING_CALLS[model]


def _numpy(out):
    import keras

    if isinstance(out, dict):
        return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    return keras.ops.convert_to_numpy(out)


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
        The batch dict restricted to the kept images, with `"prob"`: float32 `(b', S, S)` PTX probabilities, and,
        for a model with an aux head, `"aux"`: float32 `(b',)` image-level probabilities.
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
            prob, aux = runner.outputs(batch["image"])
            yield {**batch, "prob": prob, **({} if aux is None else {"aux": aux})}
