"""Parameter and multiply-accumulate (MAC) counts of the segmentation models, beside the paper's Table 2.

What `count_macs` counts: one MAC per multiply-add of every Conv1D/2D/3D (dilated and grouped included),
Conv*Transpose, DepthwiseConv*, SeparableConv* and Dense call, wherever it sits: in the top-level graph,
inside custom layers (`DenseLayer`, `SCSEBlock`, ...) and inside nested functional models such as
`keras.applications` backbones. A layer called twice counts twice. Biases, batch normalisation,
activations, pooling, elementwise products/sums (the scSE recalibration) and resizing are NOT counted;
they are a small fraction and are usually left out of "FLOPs" figures. A custom layer that multiplies
with `keras.ops` directly instead of through those layers is not seen. The paper's "GFLOPS" for
FC-DenseNet (15.39) is this MAC count at about 256 x 256 (we count 15.94 G at exactly 256 x 256).

`ptx-summary [--input-size 256] [--channels 3] [NAME ...]` (`python -m ptx_keras.cli.summary`) prints the
table as Markdown.
"""

import gc
import math

import keras
import numpy as np
import pandas as pd

from ptx_keras.constants import IMAGE_SIZE, PAPER_TABLE2_COMPLEXITY

__all__ = ["PAPER_ROW_OF_PRESET", "count_macs", "count_parameters", "layer_macs", "summary_table"]


# Which row of the paper's Table 2 each preset reproduces (baselines under the names their module uses).
PAPER_ROW_OF_PRESET = {
    "unet": "U-Net",
    "ms_scse_unet": "MS_scSE_U-Net",
    "fc_densenet103": "FC-DenseNet",
    "ms_scse_fc_densenet103": "MS_scSE_FC-DenseNet",
    "segnet": "SegNet",
    "deeplabv3plus": "DeepLab v3+",
    "denseaspp": "DenseASPP",
}

_L = keras.layers
_SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)
_DEPTHWISE = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
_TRANSPOSE = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
_CONV = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
_COUNTED_TYPES = (_L.Dense,) + _SEPARABLE + _DEPTHWISE + _TRANSPOSE + _CONV


def _spatial_and_channels(shape, data_format):
    shape = tuple(int(d) for d in shape[1:])
    if data_format == "channels_first":
        return shape[1:], shape[0]
    return shape[:-1], shape[-1]


def layer_macs(layer, input_shape, output_shape):
    """MACs of one call of a counted layer (see the module docstring), for the given shapes.

    Args:
        layer: A Conv*/Conv*Transpose/DepthwiseConv*/SeparableConv*/Dense layer.
        input_shape: Its input shape, batch first (the count is per batch element).
        output_shape: Its output shape, batch first.

    Returns:
        The number of multiply-accumulates per batch element (int).

    Raises:
        TypeError: for a layer type that is not counted.
    """
    if not isinstance(layer, _COUNTED_TYPES):
        raise TypeError(f"MACs of {type(layer).__name__} are not counted.")
    if isinstance(layer, keras.layers.Dense):
        positions = math.prod(int(d) for d in input_shape[1:-1])
        return positions * int(input_shape[-1]) * layer.units
    data_format = layer.data_format
    in_spatial, in_channels = _spatial_and_channels(input_shape, data_format)
    out_spatial, _ = _spatial_and_channels(output_shape, data_format)
    kernel = math.prod(layer.kernel_size)
    if isinstance(layer, _SEPARABLE):
        depthwise = in_channels * layer.depth_multiplier
        return math.prod(out_spatial) * (kernel * depthwise + depthwise * layer.filters)
    if isinstance(layer, _DEPTHWISE):
        return math.prod(out_spatial) * kernel * in_channels * layer.depth_multiplier
    if isinstance(layer, _TRANSPOSE):
        # Every input pixel is scattered through the whole kernel once.
        return math.prod(in_spatial) * kernel * in_channels * layer.filters
    return math.prod(out_spatial) * kernel * (in_channels // layer.groups) * layer.filters


def _resolve_input_shape(model, input_shape):
    declared = tuple(model.input_shape[1:])
    if input_shape is None:
        input_shape = declared
    input_shape = tuple(input_shape)
    if len(input_shape) != len(declared) or any(d is None for d in input_shape):
        raise ValueError(
            f"count_macs needs a fully known input shape (without batch), e.g. (256, 256, 3); the model "
            f"declares {declared}. Received: input_shape={input_shape}"
        )
    for given, built in zip(input_shape, declared):
        if built is not None and built != given:
            raise ValueError(
                f"The model was built for inputs {declared}; it cannot be traced at {input_shape}. Rebuild "
                f"it with input_shape={tuple(None if i < len(declared) - 1 else d for i, d in enumerate(declared))}."
            )
    return input_shape


def count_macs(model, input_shape=None):
    """Counts the multiply-accumulates of one forward pass of one image.

    The model is traced once (no computation) with a batch of one image of `input_shape`; every call of
    a counted layer (see the module docstring), at any nesting depth, adds its MACs at the shapes it
    actually sees.

    Args:
        model: A built `keras.Model` (functional, sequential or subclassed).
        input_shape: `(height, width, channels)` to count at; defaults to the model's input shape,
            which must then be fully known.

    Returns:
        MACs per image (int).

    Raises:
        ValueError: if the input shape is unknown or incompatible with the model's.
    """
    input_shape = _resolve_input_shape(model, input_shape)
    records = []
    patched = []

    def recorder(layer, call):
        def recording_call(inputs, *args, **kwargs):
            outputs = call(inputs, *args, **kwargs)
            records.append(layer_macs(layer, tuple(inputs.shape), tuple(outputs.shape)))
            return outputs

        return recording_call

    # _flatten_layers walks nested layers and models; Keras has no public recursive equivalent.
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, _COUNTED_TYPES) and "call" not in layer.__dict__:
            # An instance attribute shadows the class's call; Layer.__call__ looks it up on the instance.
            layer.__dict__["call"] = recorder(layer, layer.call)
            patched.append(layer)
    try:
        _trace(model, (1,) + input_shape)
    finally:
        for layer in patched:
            del layer.__dict__["call"]
    return int(sum(records))


def _trace(model, shape):
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # Tracing builds the graph without running it, so counting a large model at 256 x 256 is cheap.
        tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec(shape, "float32"))
    else:
        model(np.zeros(shape, "float32"), training=False)


def count_parameters(model):
    """Returns `(trainable, total)` parameter counts; total includes BN moving statistics."""
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return int(trainable), int(model.count_params())


def summary_table(names=None, input_size=IMAGE_SIZE, channels=3):
    """Builds each preset and tabulates its size and cost beside the paper's Table 2.

    Args:
        names: Preset names (default: every registered preset).
        input_size: Square input side for the MAC count (parameters do not depend on it).
        channels: Input channels.

    Returns:
        A `pandas.DataFrame` with columns `preset`, `trainable_params`, `total_params`, `gmacs`,
        `paper_params`, `paper_gflops` (the last two missing where the paper has no row).

    Raises:
        ModelError: for an unknown preset name.
    """
    from ptx_keras.models.registry import build_model, list_models

    names = list(list_models()) if names is None else list(names)
    rows = []
    for name in names:
        model = build_model(name, input_shape=(input_size, input_size, channels))
        trainable, total = count_parameters(model)
        paper_params, paper_gflops = PAPER_TABLE2_COMPLEXITY.get(PAPER_ROW_OF_PRESET.get(name), (None, None))
        rows.append(
            {
                "preset": name,
                "trainable_params": trainable,
                "total_params": total,
                "gmacs": round(count_macs(model) / 1e9, 2),
                "paper_params": paper_params,
                "paper_gflops": paper_gflops,
            }
        )
        del model
        gc.collect()
    table = pd.DataFrame(rows)
    return table.astype({"paper_params": "Int64", "paper_gflops": "Float64"})
