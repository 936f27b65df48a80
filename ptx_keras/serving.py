"""Serving: the graph functions every deployment shares, and what a deployable model is.

* `model_function` is the only way a deployment graph calls the network: it applies the test-time augmentation
  (`tta="hflip"`) and returns the image-level probability of a model with an aux head beside the softmax. Every
  export format (the SavedModel of `ptx_keras.export`, and any other format built from these functions) must call
  the model through it, so that TTA and the aux head reach every deployment.
* `preprocess_images` / `postprocess_probabilities` (TensorFlow ops) are the only implementation of the
  deployment preprocessing and of the in-graph diagnosis (the paper's pair rule, the triplet rule, the aux gate:
  `ptx_keras.diagnosis.Thresholds`): the SavedModel export puts them in its graph and `ptx_keras.predict` runs
  them (`GraphPipeline`), so predicting from a run and from the export agree.
* `DeployedModel` / `load_deployed_run` gather what a deployment needs from a run directory: the model, its
  input contract, the diagnosis thresholds the run chose and its test-time augmentation.
* Reading an export back (`EXPORT_METADATA_FILENAME`, `find_saved_model_version`, `read_export_metadata`) is
  `ptx_keras.artifacts`' job; the names stay importable from here.

Intensity scaling is the training data's (`ptx_keras.data.arrays.resize_image`): the image is divided by the
largest value its type can take (`value_max`: 255 for uint8, 65535 for uint16, 1.0 for float32, which is
assumed to be in [0, 1]), resized with an antialiased bilinear filter to the model's `S x S` (the same filter
as Pillow's, to 1e-6), quantised to the training bit depth (`data.bit_depth`, 8 by default: prepared images
are stored as 8- or 16-bit PNGs) and replicated to the model's `C` channels. uint8 and uint16 versions of the
same picture (`v16 = 257 * v8`) therefore give identical inputs. Images whose range is narrower than their type
(a 12-bit DICOM stored as uint16 has `value_max` 4095) must be sent as float32 `pixels / value_max`;
`ptx_keras.predict` does this from the DICOM header (`BitsStored`).
"""

import dataclasses
import os

from ptx_keras import constants as C
from ptx_keras.artifacts import (  # noqa: F401  (moved to artifacts; importable here as before)
    EXPORT_METADATA_FILENAME,
    find_saved_model_version,
    parse_export_metadata,
    read_export_metadata,
    read_export_metadata_file,
)
from ptx_keras.diagnosis import Thresholds
from ptx_keras.errors import ConfigError, ModelError, require_tensorflow
from ptx_keras.inference import check_tta, input_contract
from ptx_keras.models.common import MASK_OUTPUT, has_aux_output, split_outputs

__all__ = [
    "AUX_PROBABILITY_OUTPUT",
    "DTYPE_VALUE_MAX",
    "EXPORT_METADATA_FILENAME",
    "PREPROCESSED_SIGNATURE",
    "PROBABILITIES_OUTPUT",
    "RAW_OUTPUTS",
    "RAW_SIGNATURES",
    "RESIZE_METHOD",
    "DeployedModel",
    "GraphPipeline",
    "deployed_model",
    "find_saved_model_version",
    "load_deployed_run",
    "model_function",
    "model_input",
    "parse_export_metadata",
    "postprocess_probabilities",
    "preprocess_images",
    "read_export_metadata",
    "read_export_metadata_file",
    "resize_antialiased",
]


require_tensorflow(__name__)  # tf.data/SavedModel/graph code: a clear error on JAX or PyTorch

# One serving signature per accepted input dtype; the first is `serving_default` (TF Serving's default).
RAW_SIGNATURES = (("serving_default", "float32"), ("serve_uint8", "uint8"), ("serve_uint16", "uint16"))
PREPROCESSED_SIGNATURE = "serve_preprocessed"
DTYPE_VALUE_MAX = {"float32": 1.0, "uint8": 255.0, "uint16": 65535.0}  # value_max per signature dtype
RESIZE_METHOD = "bilinear"  # antialiased when shrinking (model input), plain when enlarging (probabilities)
# The outputs of `model_function` (and of the `serve_preprocessed` signature): float32 (batch, S, S, 2) softmax
# (the TTA mean with tta="hflip") and float32 (batch,) image-level probability of a model with an aux head.
PROBABILITIES_OUTPUT, AUX_PROBABILITY_OUTPUT = C.PROBABILITIES_OUTPUT, C.AUX_PROBABILITY_OUTPUT
# What each output of the raw signatures means (recorded in the export metadata).
RAW_OUTPUTS = {
    "probability": "pneumothorax probability at the input's size",
    "mask": "1 where probability > mask_threshold, at the input's size (the raw mask: the final mask is mask * "
    "diagnosis)",
    "area": "mask pixels at the input's size",
    "score": "(decision area at the model resolution + max_probability / 2) * (reference_size / S)^2, as "
    "ptx_keras.diagnosis (decision area: pixels above top_threshold, else mask_threshold)",
    "max_probability": "highest pneumothorax probability",
    "diagnosis": "1 if more than min_area * (S / reference_size)^2 pixels exceed top_threshold (mask_threshold "
    "when there is none) at the model resolution; gate aux: if aux_probability > aux_threshold "
    "instead; gate both: if both",
    AUX_PROBABILITY_OUTPUT: "the model's image-level pneumothorax probability (models with an aux head)",
}


# ---------------------------------------------------------------------------------------------------------
# The graph: the network, preprocessing and postprocessing (TensorFlow ops)
# ---------------------------------------------------------------------------------------------------------
def model_function(model, image_size, channels, tta="none"):
    """The network as every deployment graph calls it: preprocessed images -> softmax (and aux probability).

    Export formats call the model only through this function (traced once, called by every signature), so
    that the test-time augmentation and the image-level head reach each of them the same way.

    With `tta="hflip"` the softmax is `(f(x) + mirror(f(mirror(x)))) / 2`, `mirror` reversing the width axis,
    and the image-level probability `(a(x) + a(mirror(x))) / 2`: the same as
    `ptx_keras.inference.ModelRunner(tta="hflip")`.

    Args:
        model: A Keras model `(batch, S, S, C)` -> softmax `(batch, S, S, 2)`, or the dict
            `{"mask": softmax, "aux": (batch, 1)}` of a model with an aux head (`ptx_keras.models.common`).
        image_size: S.
        channels: C.
        tta: `"none"` or `"hflip"` (`constants.TTA_MODES`).

    Returns:
        A `tf.function` of float32 images `(batch, S, S, C)` in [0, 1] returning a dict:
        `PROBABILITIES_OUTPUT` ("probabilities"), the float32 softmax `(batch, S, S, 2)`, and for a model with an
        aux head `AUX_PROBABILITY_OUTPUT` ("aux_probability"), float32 `(batch,)`.

    Raises:
        ValueError: for an unknown `tta`.
    """
    import tensorflow as tf

    check_tta(tta)

    def once(images):
        softmax, aux = split_outputs(model(images, training=False))
        out = {PROBABILITIES_OUTPUT: tf.cast(softmax, tf.float32)}
        if aux is not None:
            out[AUX_PROBABILITY_OUTPUT] = tf.reshape(tf.cast(aux, tf.float32), [-1])
        return out

    def network(images):
        out = once(images)
        if tta == "hflip":
            mirrored = once(tf.reverse(images, axis=[2]))
            mirrored[PROBABILITIES_OUTPUT] = tf.reverse(mirrored[PROBABILITIES_OUTPUT], axis=[2])
            out = {k: (v + mirrored[k]) / 2.0 for k, v in out.items()}
        return out

    return tf.function(
        network,
        input_signature=[tf.TensorSpec([None, image_size, image_size, channels], tf.float32)],
        autograph=False,
    )


def preprocess_images(images, image_size, channels, value_max=1.0, bit_depth=C.IMAGE_BIT_DEPTH):
    """Raw grayscale images of any size -> the model input, as training data preparation makes it.

    Args:
        images: Tensor `(batch, height, width)` or `(batch, height, width, 1)`, any real dtype.
        image_size: The model's input size S.
        channels: The model's input channels C (grayscale is replicated).
        value_max: The largest value the images' type can take (scalar or `(batch,)`): 255 for 8-bit, 65535
            for 16-bit, 4095 for a 12-bit DICOM, 1.0 for float images in [0, 1].
        bit_depth: The training bit depth (8 or 16): values are rounded to `2**bit_depth - 1` levels, as the
            prepared PNGs were.

    Returns:
        float32 tensor `(batch, S, S, C)` in [0, 1]:
        `round(resize(images) * levels / value_max) / levels`, clipped, with `levels = 2**bit_depth - 1`.
    """
    import tensorflow as tf

    x = resize_antialiased(tf.cast(_batch_hw(images), tf.float32), image_size)
    levels = float(2 ** int(bit_depth) - 1)
    value_max = tf.reshape(tf.cast(value_max, tf.float32), [-1, 1, 1])
    x = tf.clip_by_value(tf.round(x * (levels / value_max)), 0.0, levels) / levels
    x = tf.expand_dims(x, -1)  # not x[..., None]: a new-axis slice has no LiteRT builtin
    if channels > 1:
        x = tf.repeat(x, channels, axis=-1)
    return x


def resize_antialiased(images, size):
    """`(batch, height, width)` -> `(batch, size, size)`: the antialiased bilinear resize, as two matrix products.

    The same filter as `tf.image.resize(..., "bilinear", antialias=True)` (TensorFlow's ScaleAndTranslate
    with its triangle kernel, equal to Pillow's) up to float rounding: output pixel `i` averages the input pixels `j` with
    weights `max(0, 1 - |j + 0.5 - (i + 0.5) * n / size| / k)`, `k = max(n / size, 1)`, normalised to sum 1.
    Written as `Wy @ images @ Wx^T` with plain ops (range, abs, matmul) because ScaleAndTranslate has no ONNX
    or LiteRT equivalent: the SavedModel, ONNX and LiteRT graphs all resize with this one function.
    """
    import tensorflow as tf

    shape = tf.shape(images)
    rows = tf.matmul(_triangle_weights(shape[1], size), images)  # (size, h) @ (batch, h, w)
    return tf.matmul(rows, _triangle_weights(shape[2], size), transpose_b=True)


def _triangle_weights(n_in, n_out):
    """`(n_out, n_in)` float32 weights of the antialiased bilinear (triangle) filter from n_in to n_out pixels."""
    import tensorflow as tf

    ratio = tf.cast(n_in, tf.float32) / float(n_out)
    support = tf.maximum(ratio, 1.0)  # widened when shrinking: the antialiasing
    centres = (tf.range(n_out, dtype=tf.float32) + 0.5) * ratio
    sources = tf.range(n_in, dtype=tf.float32) + 0.5
    weights = tf.maximum(0.0, 1.0 - tf.abs(tf.expand_dims(sources, 0) - tf.expand_dims(centres, 1)) / support)
    return weights / tf.reduce_sum(weights, axis=1, keepdims=True)


def _batch_hw(images):
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    rank = tf.rank(images)
    shape = tf.shape(images)
    checks = [
        tf.debugging.Assert(
            tf.logical_or(tf.equal(rank, 3), tf.equal(rank, 4)),
            ["images must be (batch, height, width) or (batch, height, width, 1); got shape", shape],
        ),
    ]
    with tf.control_dependencies(checks):
        shape = tf.identity(shape)
    checks = [
        tf.debugging.Assert(
            tf.logical_or(tf.equal(rank, 3), tf.equal(shape[-1], 1)),
            ["grayscale images only: the last axis of a 4-D input must be 1; got shape", shape],
        ),
        tf.debugging.Assert(tf.reduce_all(shape[1:3] > 0), ["images must not be empty; got shape", shape]),
    ]
    with tf.control_dependencies(checks):
        # A static rank of 3 lets the resize below know its input rank even when the signature's is unknown.
        return tf.reshape(images, tf.stack([shape[0], shape[1], shape[2]]))


def postprocess_probabilities(ptx_probability, height, width, thresholds, *, aux_probability=None):
    """Model-resolution PTX probabilities -> the deployed outputs at the input's size.

    The diagnosis follows `thresholds` at the prediction (model) resolution, as
    `ptx_keras.diagnosis.diagnose`: pneumothorax if more than `min_area * S * S / reference_size**2` pixels have
    probability > `decision_threshold` (the triplet's `top_threshold`, else `mask_threshold`: 50 pixels above
    0.5 at 256 x 256 by default); with `gate="aux"` if the image-level probability is > `aux_threshold`
    instead, with `gate="both"` if both say so.

    Args:
        ptx_probability: float32 `(batch, S, S)`, softmax channel 1.
        height: Output height (scalar int tensor or int).
        width: Output width.
        thresholds: The `ptx_keras.diagnosis.Thresholds`.
        aux_probability: float32 `(batch,)` image-level probabilities of a model with an aux head, or None;
            required by an aux gate.

    Returns:
        dict of tensors: `probability` float32 `(batch, height, width)`, `mask` uint8 `(batch, height, width)`
        (the raw mask, probability > `mask_threshold`), `area` int64 `(batch,)` (at the input's size), `score`
        float32 `(batch,)` (the continuous score of `ptx_keras.diagnosis.diagnose`: `(decision_area +
        max_probability / 2) * reference_size**2 / S**2`, the deciding area in reference pixels with ties broken
        by the most confident pixel), `max_probability` float32 `(batch,)`, `diagnosis` int32 `(batch,)`, and
        with `aux_probability`, `aux_probability` float32 `(batch,)`.

    Raises:
        ValueError: when the gate needs `aux_probability` and it is None.
    """
    import tensorflow as tf

    if thresholds.uses_aux and aux_probability is None:
        raise ValueError(
            f"thresholds.gate={thresholds.gate!r} needs the model's image-level probability (aux_probability): a "
            "model built with model.options.aux_head: true"
        )
    p = tf.cast(ptx_probability, tf.float32)
    size = int(p.shape[1])
    threshold = thresholds.mask_threshold
    min_pixels = thresholds.min_pixels(size)
    decision_area = tf.reduce_sum(tf.cast(p > thresholds.decision_threshold, tf.float32), axis=[1, 2])
    positive = decision_area > min_pixels
    if aux_probability is not None:
        aux_probability = tf.reshape(tf.cast(aux_probability, tf.float32), [-1])
        aux_positive = aux_probability > thresholds.aux_threshold
        positive = {"area": positive, "aux": aux_positive, "both": positive & aux_positive}[thresholds.gate]
    diagnosis = tf.cast(positive, tf.int32)
    max_probability = tf.reduce_max(p, axis=[1, 2])
    score = (decision_area + 0.5 * max_probability) * (float(thresholds.reference_size) ** 2 / (size * size))
    full = tf.image.resize(tf.expand_dims(p, -1), tf.stack([height, width]), method=RESIZE_METHOD)[..., 0]
    full = tf.clip_by_value(full, 0.0, 1.0)
    mask = tf.cast(full > threshold, tf.uint8)
    area = tf.reduce_sum(tf.cast(mask, tf.int64), axis=[1, 2])
    out = {
        "probability": full,
        "mask": mask,
        "area": area,
        "score": score,
        "max_probability": max_probability,
        "diagnosis": diagnosis,
    }
    if aux_probability is not None:
        out[AUX_PROBABILITY_OUTPUT] = aux_probability
    return out


class GraphPipeline:
    """Compiled (`tf.function`) pre- and postprocessing for one model, applied image by image.

    One trace per input dtype and one for the postprocessing, whatever the image sizes.

    Args:
        image_size: The model's input size S.
        channels: The model's input channels C.
        thresholds: The `ptx_keras.diagnosis.Thresholds`.
        bit_depth: The training bit depth (see `preprocess_images`).
    """

    def __init__(self, image_size, channels, thresholds, bit_depth=C.IMAGE_BIT_DEPTH):
        import tensorflow as tf

        self.image_size, self.channels, self.bit_depth = int(image_size), int(channels), int(bit_depth)
        if not isinstance(thresholds, Thresholds):
            raise ValueError(f"thresholds must be a Thresholds. Received: thresholds={thresholds!r}")
        self.thresholds = thresholds
        self._pre = {}
        for dtype in DTYPE_VALUE_MAX:
            self._pre[dtype] = tf.function(
                self._preprocess_graph,
                input_signature=[tf.TensorSpec([None, None, None], dtype), tf.TensorSpec([], tf.float32)],
                autograph=False,  # plain TensorFlow ops, no Python control flow to convert
            )
        spec = [
            tf.TensorSpec([None, self.image_size, self.image_size], tf.float32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32),
        ]
        self._post = tf.function(self._postprocess_graph, autograph=False, input_signature=spec)
        # With the image-level probability of a model with an aux head (traced on first use).
        self._post_aux = tf.function(
            self._postprocess_aux_graph, autograph=False, input_signature=spec + [tf.TensorSpec([None], tf.float32)]
        )

    def _preprocess_graph(self, images, value_max):
        return preprocess_images(images, self.image_size, self.channels, value_max, self.bit_depth)

    def _postprocess_graph(self, ptx_probability, height, width):
        return postprocess_probabilities(ptx_probability, height, width, self.thresholds)

    def _postprocess_aux_graph(self, ptx_probability, height, width, aux_probability):
        return postprocess_probabilities(
            ptx_probability, height, width, self.thresholds, aux_probability=aux_probability
        )

    def preprocess(self, image, value_max=None):
        """One image -> the model input.

        Args:
            image: 2-D array `(height, width)`, uint8, uint16 or float (other types are cast to float32).
            value_max: The largest value the image's type can take (e.g. `read_image`'s
                `info["value_range"][1]`); default: that of its dtype (`DTYPE_VALUE_MAX`).

        Returns:
            float32 array `(S, S, C)`.

        Raises:
            ValueError: if the image is not 2-D or empty, or value_max is not positive.
        """
        import numpy as np

        image = np.asarray(image)
        if image.ndim != 2 or image.size == 0:
            raise ValueError(f"expected a non-empty 2-D grayscale image (height, width). Received: shape={image.shape}")
        if image.dtype.name not in self._pre:
            image = image.astype(np.float32)
        value_max = DTYPE_VALUE_MAX[image.dtype.name] if value_max is None else float(value_max)
        if not value_max > 0:
            raise ValueError(f"value_max must be > 0. Received: value_max={value_max}")
        return self._pre[image.dtype.name](image[None], value_max).numpy()[0]

    def postprocess(self, ptx_probability, height, width, aux_probability=None):
        """`(S, S)` PTX probabilities (and the image-level probability of a model with an aux head) -> dict of
        NumPy outputs for one image of size `(height, width)` (`postprocess_probabilities`)."""
        import numpy as np

        p = np.asarray(ptx_probability, np.float32)[None]
        if aux_probability is None:
            out = self._post(p, int(height), int(width))
        else:
            out = self._post_aux(p, int(height), int(width), np.asarray(aux_probability, np.float32).reshape(1))
        return {k: v.numpy()[0] for k, v in out.items()}


# ---------------------------------------------------------------------------------------------------------
# What a deployment needs from a run
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DeployedModel:
    """A trained model with the input contract and the diagnosis rule it is deployed with.

    Attributes:
        model: The Keras model (uncompiled), `(batch, S, S, C)` -> `(batch, S, S, 2)` softmax (or the dict
            `{"mask", "aux"}` of a model with an aux head).
        model_name: The preset name (the run's `model.name`) or the model's own name.
        image_size: S.
        channels: C.
        bit_depth: The training bit depth (8 or 16; see `preprocess_images`).
        thresholds: The `Thresholds` it diagnoses with.
        thresholds_source: Where they came from (a thresholds file, the run's config.yaml, an argument).
        run_dir: The run directory (absolute), or None for a model object.
        tta: The test-time augmentation it is deployed with (`constants.TTA_MODES`; a run's
            `evaluation.tta`, the setting its thresholds were chosen with).
        has_aux: Whether the model has an image-level (aux) output.
    """

    model: object
    model_name: str
    image_size: int
    channels: int
    bit_depth: int
    thresholds: Thresholds
    thresholds_source: str
    run_dir: object = None
    tta: str = "none"
    has_aux: bool = False


def model_input(model, where):
    """`(S, C)` of a model with a fixed square input `(batch, S, S, C)` and a 2-class softmax output.

    Raises:
        ModelError: naming `where`, for any other input or output shape.
    """
    size, channels = input_contract(model, where, fixed=True)
    output = model.output
    if isinstance(output, dict):
        output = output.get(MASK_OUTPUT)
    out = None if output is None else tuple(output.shape)
    if out is None or len(out) != 4 or out[-1] != C.NUM_CLASSES:
        raise ModelError(f"{where}: expected a {C.NUM_CLASSES}-class softmax output. Received: output_shape={out}")
    return size, channels


def _check_gate(model, thresholds, where):
    if thresholds.uses_aux and not has_aux_output(model):
        raise ModelError(
            f"{where}: the thresholds gate the diagnosis by the image-level probability (gate={thresholds.gate!r}) "
            "but the model has no aux head"
        )


def deployed_model(model, thresholds=None, bit_depth=C.IMAGE_BIT_DEPTH, tta="none"):
    """A `DeployedModel` for a model object (the paper's thresholds and no TTA unless given)."""
    size, channels = model_input(model, f"model {model.name!r}")
    source = "argument" if thresholds is not None else "ptx_keras.constants"
    thresholds = thresholds or Thresholds()
    _check_gate(model, thresholds, f"model {model.name!r}")
    check_tta(tta)
    return DeployedModel(
        model, model.name, size, channels, int(bit_depth), thresholds, source, None, tta, has_aux_output(model)
    )


def load_deployed_run(run):
    """Loads a run's best model with its input contract and the thresholds it deploys with.

    The thresholds are those evaluation uses (`RunDir.read_thresholds`): the validation search's when the run
    has one, else its configuration's; the test-time augmentation is the run's `evaluation.tta`.

    Args:
        run: A run directory (path or `ptx_keras.runs.RunDir`) with `config.yaml` and `best.keras`.

    Returns:
        `DeployedModel`.

    Raises:
        ModelError: if the directory is not a run, its model is missing or cannot be loaded, or its thresholds
            file is invalid.
    """
    from ptx_keras.runs import RunDir

    run = RunDir.of(run)
    run.require_model()
    try:
        cfg = run.load_config()
        saved = run.read_thresholds(cfg)
    except ConfigError as e:
        raise ModelError(str(e)) from None
    model = run.load_model()
    size, channels = model_input(model, run.best_model)
    _check_gate(model, saved.thresholds, saved.file)
    return DeployedModel(
        model,
        cfg.model.name,
        size,
        channels,
        int(cfg.data.bit_depth),
        saved.thresholds,
        saved.file,
        os.path.abspath(run.path),
        cfg.evaluation.tta,
        has_aux_output(model),
    )
