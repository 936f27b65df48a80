"""The deployment graph of one model, from which every export format is built.

`ServingGraph` puts `ptx_keras.serving`'s functions together once: `model_function` (the one call of the network,
with the test-time augmentation and the image-level head), `preprocess_images` before it and
`postprocess_probabilities` after it. The SavedModel signatures, the ONNX graph and the LiteRT graph are all
traced from its methods, so whatever the serving functions do reaches every format without a second copy.
"""

import dataclasses

from ptx_keras import constants as C
from ptx_keras.artifacts import IMAGES_INPUT, PORTABLE_SIGNATURE, VALUE_MAX_INPUT
from ptx_keras.diagnosis import Thresholds
from ptx_keras.errors import ModelError, require_tensorflow
from ptx_keras.inference import check_tta
from ptx_keras.serving import (
    AUX_PROBABILITY_OUTPUT,
    DTYPE_VALUE_MAX,
    PREPROCESSED_SIGNATURE,
    PROBABILITIES_OUTPUT,
    RAW_SIGNATURES,
    deployed_model,
    load_deployed_run,
    model_function,
    postprocess_probabilities,
    preprocess_images,
)

__all__ = ["ServingGraph", "resolve_deployed"]


require_tensorflow(__name__)  # tf.function/SavedModel graph code: a clear error on JAX or PyTorch


def resolve_deployed(run_dir_or_model, thresholds=None, tta=None):
    """The `DeployedModel` to export: a run directory's best model and settings, or a model object.

    Args:
        run_dir_or_model: A run directory (path or `RunDir`) or a `keras.Model`.
        thresholds: A `Thresholds` overriding the run's (or, for a model, the paper's).
        tta: `"none"` or `"hflip"` overriding the run's `evaluation.tta` (a model: `"none"`).

    Returns:
        `(deployed, run)`: the `DeployedModel` and the `RunDir` (None for a model object).

    Raises:
        ModelError: for a bad run directory, model, thresholds or tta.
    """
    import keras

    if thresholds is not None and not isinstance(thresholds, Thresholds):
        raise ModelError(f"thresholds must be a Thresholds. Received: thresholds={thresholds!r}")
    if tta is not None:
        check_tta(tta)
    if isinstance(run_dir_or_model, keras.Model):
        return deployed_model(run_dir_or_model, thresholds, tta=tta or "none"), None
    from ptx_keras.runs import RunDir

    run = RunDir.of(run_dir_or_model)
    deployed = load_deployed_run(run)
    if thresholds is not None:
        deployed = dataclasses.replace(deployed, thresholds=thresholds, thresholds_source="argument")
    if tta is not None:
        deployed = dataclasses.replace(deployed, tta=tta)
    return deployed, run


class ServingGraph:
    """The preprocessing -> network -> postprocessing graph of one `DeployedModel`.

    The network is traced once (`ptx_keras.serving.model_function`) and called by every entry point: tracing
    it per signature made exporting the paper's model take minutes and stored its graph once per signature.

    Args:
        deployed: The `ptx_keras.serving.DeployedModel` (its thresholds, bit depth and tta are baked in).
    """

    def __init__(self, deployed):
        self.deployed = deployed
        self.image_size, self.channels = deployed.image_size, deployed.channels
        self.network = model_function(deployed.model, deployed.image_size, deployed.channels, deployed.tta)

    def raw(self, images, value_max):
        """Raw images of any size -> the deployed outputs (`ptx_keras.serving.RAW_OUTPUTS`) at their size."""
        import tensorflow as tf

        d = self.deployed
        out = self.network(preprocess_images(images, d.image_size, d.channels, value_max, d.bit_depth))
        shape = tf.shape(images)
        return postprocess_probabilities(
            out[PROBABILITIES_OUTPUT][..., C.PTX_CLASS],
            shape[1],
            shape[2],
            d.thresholds,
            aux_probability=out.get(AUX_PROBABILITY_OUTPUT),
        )

    def raw_endpoint(self, value_max):
        """The function of `images` alone for one input type (`value_max` fixed)."""
        return lambda images: self.raw(images, value_max)

    def preprocessed(self, images):
        """Preprocessed `(batch, S, S, C)` -> the network's outputs (`model_function`'s dict)."""
        return self.network(images)

    def portable_signature(self, batch=None):
        """Input specs of the portable entry point: `images` float32 `(batch, height, width)`, `value_max` scalar.

        Args:
            batch: A fixed batch size, or None for any.
        """
        import tensorflow as tf

        return [
            tf.TensorSpec([batch, None, None], tf.float32, name=IMAGES_INPUT),
            tf.TensorSpec([], tf.float32, name=VALUE_MAX_INPUT),
        ]

    def portable_function(self, batch=None):
        """The portable entry point as a `tf.function`: the graph ONNX and LiteRT are converted from."""
        import tensorflow as tf

        return tf.function(self.raw, input_signature=self.portable_signature(batch), autograph=False)

    def archive(self, saved_model=True, portable=False, portable_batch=None):
        """A `keras.export.ExportArchive` with the SavedModel signatures and/or the portable one.

        Args:
            saved_model: Add `serving_default`, `serve_uint8`, `serve_uint16` and `serve_preprocessed`.
            portable: Add `serve_value_max` (`images`, `value_max`), the entry point of the LiteRT conversion.
            portable_batch: Its fixed batch size, or None for any.
        """
        import keras
        import tensorflow as tf

        archive = keras.export.ExportArchive()
        archive.track(self.deployed.model)
        if saved_model:
            for name, dtype in RAW_SIGNATURES:
                archive.add_endpoint(
                    name,
                    self.raw_endpoint(DTYPE_VALUE_MAX[dtype]),
                    input_signature=[tf.TensorSpec(None, dtype, name=IMAGES_INPUT)],
                )
            archive.add_endpoint(
                PREPROCESSED_SIGNATURE,
                self.preprocessed,
                input_signature=[
                    tf.TensorSpec(
                        [None, self.image_size, self.image_size, self.channels], tf.float32, name=IMAGES_INPUT
                    )
                ],
            )
        if portable:
            archive.add_endpoint(PORTABLE_SIGNATURE, self.raw, input_signature=self.portable_signature(portable_batch))
        return archive
