"""Fine-tuning: start a run from another model's weights (`train.init_from`) and train with its encoder frozen
for the first epochs (`train.freeze_encoder_epochs`).

Weights are matched by top-level layer name (`down_block_0`, `multiscale_conv`, ...): a layer of the configured
model takes the weights of the source layer of the same name when they have the same variables with the same
shapes. Every layer of either model is reported (`InitReport`, written as the run's `init_from.csv` and
summarised in its `run.json`):

* `loaded` - copied unchanged;
* `reshaped` - a layer fed by the image whose kernels differ only in the number of input channels (a
  grayscale model started from an RGB one, or the reverse). The new kernel is the source kernel summed over
  its input channels and spread evenly over the new ones, so that a grayscale image (every channel equal,
  which is how the pipeline makes 3-channel inputs) gives the same response as before;
* `skipped` - the layer keeps its initialisation: no source layer of that name (e.g. a new aux head), or one
  with other variables or shapes (the reason names the first difference);
* `unused` - a source layer with weights that the configured model does not have.

A source with nothing in common with the configured model is refused (`ModelError`).

Freezing: the encoder is every layer with weights at the model's lowest resolution and everything they
depend on (for FC-DenseNet: the first convolution, the dense blocks and transitions down, the bottleneck). Keras reads the
trainable variables when a model is compiled, so `set_trainable` is followed by `recompile`, which keeps the
optimizer (built for every variable before freezing: its step counter, and so the learning-rate schedule,
carries on).
"""

import csv
import dataclasses
import logging
import os

import numpy as np

from ptx_keras.errors import ModelError
from ptx_keras.pretrained import CHECKPOINTS, checkpoint_file, is_checkpoint_name
from ptx_keras.runs import RunDir, file_sha256

__all__ = [
    "LOADED",
    "REPORT_COLUMNS",
    "RESHAPED",
    "SKIPPED",
    "STATUSES",
    "UNUSED",
    "InitReport",
    "LayerInit",
    "Phase",
    "apply_phase",
    "encoder_layers",
    "initialize_from",
    "recompile",
    "set_trainable",
    "source_model_file",
    "spread_channels",
    "training_phases",
    "transfer_weights",
]


logger = logging.getLogger(__name__)

LOADED, RESHAPED, SKIPPED, UNUSED = "loaded", "reshaped", "skipped", "unused"
STATUSES = (LOADED, RESHAPED, SKIPPED, UNUSED)
REPORT_COLUMNS = ("layer", "status", "reason", "source_shapes", "target_shapes")


@dataclasses.dataclass(frozen=True)
class LayerInit:
    """What happened to one layer.

    Attributes:
        layer: The layer name.
        status: One of `STATUSES`.
        reason: Why (empty for `loaded`).
        source_shapes: Shapes of the source layer's variables (empty when it has none).
        target_shapes: Shapes of the configured layer's variables (empty for `unused`).
    """

    layer: str
    status: str
    reason: str = ""
    source_shapes: tuple[tuple, ...] = ()
    target_shapes: tuple[tuple, ...] = ()

    def row(self):
        return {
            "layer": self.layer,
            "status": self.status,
            "reason": self.reason,
            "source_shapes": " ".join(_shape_text(s) for s in self.source_shapes),
            "target_shapes": " ".join(_shape_text(s) for s in self.target_shapes),
        }


@dataclasses.dataclass(frozen=True)
class InitReport:
    """The result of `initialize_from`.

    Attributes:
        source: The source given: a run directory or `.keras` file (absolute), or a shipped checkpoint's name.
        model_file: The `.keras` file read.
        model_sha256: Its SHA-256.
        layers: One `LayerInit` per layer with weights of either model.
    """

    source: str
    model_file: str
    model_sha256: str
    layers: tuple[LayerInit, ...]

    def counts(self):
        """`{status: number of layers}` for every status."""
        return {s: sum(1 for layer in self.layers if layer.status == s) for s in STATUSES}

    def names(self, status):
        return [layer.layer for layer in self.layers if layer.status == status]

    def summary(self, **extra):
        """JSON-ready: the source, its file and hash, the counts and the names of the layers not loaded as
        they were."""
        return {
            "source": self.source,
            "model_file": self.model_file,
            "model_sha256": self.model_sha256,
            "counts": self.counts(),
            **{s: self.names(s) for s in (RESHAPED, SKIPPED, UNUSED)},
            **extra,
        }

    def describe(self):
        """One line for the log."""
        c = self.counts()
        parts = [
            f"{c[LOADED]} layers loaded",
            f"{c[RESHAPED]} reshaped",
            f"{c[SKIPPED]} skipped (kept their initialisation)",
            f"{c[UNUSED]} source layers unused",
        ]
        text = f"Initialised from {self.model_file}: " + ", ".join(parts)
        details = [
            f"{layer.layer} ({layer.status}: {layer.reason})"
            for layer in self.layers
            if layer.status in (RESHAPED, SKIPPED)
        ]
        return text + (": " + "; ".join(details) if details else "")

    def write_csv(self, path):
        """Writes one row per layer (`REPORT_COLUMNS`) to `path`."""
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=REPORT_COLUMNS)
            writer.writeheader()
            writer.writerows(layer.row() for layer in self.layers)
        os.replace(tmp, path)
        return path


def _shape_text(shape):
    return "x".join(str(d) for d in shape) or "scalar"


def source_model_file(source):
    """The `.keras` file named by `source`: a run directory's `best.keras`, the file itself, or the file of a
    checkpoint shipped with the package (`ptx_keras.pretrained`, e.g. `phantom_small_cpu`).

    Raises:
        ModelError: if `source` is neither a trained run directory, a `.keras` file nor a shipped checkpoint.
    """
    path = os.fspath(source)
    if is_checkpoint_name(path):
        return checkpoint_file(path)
    if os.path.isdir(path):
        return RunDir(path).require_model()
    if not os.path.exists(path):
        raise ModelError(
            f"train.init_from: no run directory or .keras file at {path}, and no shipped checkpoint of that name "
            f"(shipped: {', '.join(sorted(CHECKPOINTS))})"
        )
    if not path.endswith(".keras"):
        raise ModelError(f"train.init_from must be a run directory or a .keras file. Received: {path}")
    return path


# --------------------------------------------------------------------------------------------------------------
# The layer graph
# --------------------------------------------------------------------------------------------------------------
def _parents(layer):
    nodes = getattr(layer, "_inbound_nodes", None) or []
    return [node.operation for node in nodes[0].parent_nodes] if nodes else []


def _image_fed(model):
    """Names of the layers with weights that see the model's input with no layer with weights in between."""
    out, seen = set(), set()
    frontier = [layer for layer in model.layers if not _parents(layer)]  # the input layers
    while frontier:
        layer = frontier.pop()
        for child in model.layers:
            if child.name in seen or layer not in _parents(child):
                continue
            seen.add(child.name)
            if child.weights:
                out.add(child.name)
            else:
                frontier.append(child)
    return out


def _channels(model):
    return int(model.inputs[0].shape[-1])


def _spatial_size(layer):
    """Height x width of the layer's first 4-D output, or None (not 4-D, unknown, or global: 1 x 1)."""
    outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
    for tensor in outputs:
        shape = getattr(tensor, "shape", None)
        if shape is not None and len(shape) == 4:
            height, width = shape[1], shape[2]
            if height is None or width is None or height * width == 1:
                return None
            return height * width
    return None


def encoder_layers(model):
    """The layers with weights at the model's lowest (non-global) resolution and every layer they depend on:
    the encoder, bottleneck included (for FC-DenseNet and U-Net: the down path and the bottleneck; for DeepLab
    v3+ the backbone and ASPP). An image-level head (1 x 1 or flat outputs) is not part of it.

    Returns:
        list of layers, in the model's order.

    Raises:
        ModelError: when no layer has a 4-D output of known size (an input size of None), or every layer with
            weights is in the encoder (no decoder, as DenseASPP).
    """
    sizes = {layer.name: _spatial_size(layer) for layer in model.layers}
    known = [size for size in sizes.values() if size is not None]
    if not known:
        raise ModelError(
            f"model {model.name!r} has no feature map of known size (an input size of None), so its encoder "
            "cannot be found for train.freeze_encoder_epochs"
        )
    deepest = [layer for layer in model.layers if sizes[layer.name] == min(known)]
    members, stack = set(), list(deepest)
    while stack:
        layer = stack.pop()
        if layer.name not in members:
            members.add(layer.name)
            stack.extend(_parents(layer))
    encoder = [layer for layer in model.layers if layer.name in members and layer.weights]
    if len(encoder) == sum(1 for layer in model.layers if layer.weights):
        raise ModelError(
            f"model {model.name!r} has no layer with weights above its lowest resolution (no decoder): freezing "
            "its encoder would leave nothing to train; set train.freeze_encoder_epochs: 0"
        )
    return encoder


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------
def _variables(layer):
    """`[(path below the layer, variable)]` of a layer's variables."""
    prefix = layer.name + "/"
    return [(v.path.removeprefix(prefix), v) for v in layer.weights]


def spread_channels(kernel, channels):
    """A convolution kernel `(..., in, out)` summed over its input channels and spread evenly over `channels`.

    A grayscale image given as `channels` equal channels then gets the response the source kernel gave to the
    same image as `in` equal channels.
    """
    kernel = np.asarray(kernel)
    total = kernel.sum(axis=-2, keepdims=True)
    return np.repeat(total / channels, channels, axis=-2).astype(kernel.dtype)


def _compare(src_vars, dst_vars, channels, image_fed):
    """`(status, reason, values)`: what to load into the configured layer (values None unless loading)."""
    src_names, dst_names = [n for n, _ in src_vars], [n for n, _ in dst_vars]
    if src_names != dst_names:
        missing = [n for n in dst_names if n not in src_names] or [n for n in src_names if n not in dst_names]
        return SKIPPED, f"different variables ({missing[0] if missing else 'in another order'})", None
    values, reshaped = [], False
    for (name, s), (_, d) in zip(src_vars, dst_vars):
        s_shape, d_shape = tuple(s.shape), tuple(d.shape)
        value = np.asarray(s.numpy())
        if s_shape != d_shape:
            only_inputs = (
                len(s_shape) == 4
                and len(d_shape) == 4
                and s_shape[:2] == d_shape[:2]
                and s_shape[3] == d_shape[3]
                and (s_shape[2], d_shape[2]) == channels
            )
            if not (only_inputs and image_fed):
                return SKIPPED, f"shape mismatch: {name} {_shape_text(s_shape)} -> {_shape_text(d_shape)}", None
            value, reshaped = spread_channels(value, d_shape[2]), True
        values.append(value)
    if reshaped:
        return RESHAPED, f"input channels {channels[0]} -> {channels[1]}: kernels summed and spread", values
    return LOADED, "", values


def transfer_weights(source_model, model):
    """Copies the weights of `source_model`'s layers into `model`'s layers of the same names (see the module
    docstring for the matching rules).

    Args:
        source_model: The `keras.Model` to copy from.
        model: The configured `keras.Model` (built), changed in place.

    Returns:
        tuple of `LayerInit`: the configured model's layers with weights in its order, then the unused source
        layers.
    """
    sources = {layer.name: layer for layer in source_model.layers if layer.weights}
    channels = (_channels(source_model), _channels(model))
    fed = _image_fed(model) if channels[0] != channels[1] else set()
    out, used = [], set()
    for layer in model.layers:
        if not layer.weights:
            continue
        dst_vars = _variables(layer)
        dst_shapes = tuple(tuple(v.shape) for _, v in dst_vars)
        src = sources.get(layer.name)
        if src is None:
            out.append(LayerInit(layer.name, SKIPPED, "no layer of that name in the source", (), dst_shapes))
            continue
        used.add(layer.name)
        src_vars = _variables(src)
        status, reason, values = _compare(src_vars, dst_vars, channels, layer.name in fed)
        if values is not None:
            for (_, variable), value in zip(dst_vars, values):
                variable.assign(value)
        out.append(LayerInit(layer.name, status, reason, tuple(tuple(v.shape) for _, v in src_vars), dst_shapes))
    for name, layer in sources.items():
        if name not in used:
            shapes = tuple(tuple(v.shape) for v in layer.weights)
            out.append(LayerInit(name, UNUSED, "not in the configured model", shapes, ()))
    return tuple(out)


def initialize_from(model, source):
    """Loads the weights of a run (its `best.keras`) or a `.keras` file into `model` by layer name.

    Args:
        model: The configured, built `keras.Model` (changed in place).
        source: A run directory, a `.keras` file or the name of a shipped checkpoint (`ptx_keras.pretrained`).

    Returns:
        `InitReport`.

    Raises:
        ModelError: if the source cannot be read, or no layer could be loaded (nothing in common).
    """
    from ptx_keras.loading import load_model

    path = source_model_file(source)
    source_model = load_model(path, compile=False)
    layers = transfer_weights(source_model, model)
    given = os.fspath(source)
    given = given if is_checkpoint_name(given) else os.path.abspath(given)
    report = InitReport(given, os.path.abspath(path), file_sha256(path), layers)
    counts = report.counts()
    if not counts[LOADED] + counts[RESHAPED]:
        wanted = [layer.layer for layer in layers if layer.status == SKIPPED][:4]
        raise ModelError(
            f"train.init_from={source}: the model in {path} ({source_model.name}) has nothing in common with the "
            f"configured model ({model.name}): none of its {len(source_model.layers)} layers matches one of the "
            f"configured layers by name and shapes (e.g. {', '.join(wanted)}). Start from a run of the same model "
            "family, or remove train.init_from"
        )
    logger.info("%s", report.describe())
    return report


# --------------------------------------------------------------------------------------------------------------
# Freezing
# --------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Phase:
    """Epochs `[start, end)` of a run, with the encoder frozen or not."""

    start: int
    end: int
    frozen: bool


def training_phases(epochs, freeze_epochs=0, done=0):
    """The phases still to train: the frozen epochs `[0, freeze_epochs)`, then the rest.

    Args:
        epochs: `train.epochs`.
        freeze_epochs: `train.freeze_encoder_epochs` (0: one unfrozen phase).
        done: Epochs a resumed run has already finished.

    Returns:
        list of `Phase` (the first starts at 0: Keras' `BackupAndRestore` moves a resumed run to its epoch).
    """
    freeze = min(int(freeze_epochs), int(epochs))
    if freeze <= 0 or done >= freeze:
        return [Phase(0, epochs, False)]
    phases = [Phase(0, freeze, True)]
    if freeze < epochs:
        phases.append(Phase(freeze, epochs, False))
    return phases


def set_trainable(layers, trainable):
    """Sets `trainable` on `layers` (nested layers follow; a frozen BatchNormalization uses its moving
    statistics). Returns the number of weights affected."""
    count = 0
    for layer in layers:
        layer.trainable = bool(trainable)
        count += sum(int(np.prod(v.shape)) for v in layer.weights)
    return count


def recompile(model):
    """Compiles `model` again with the arguments of its last `compile`, keeping its (built) optimizer, so that a
    change of `trainable` takes effect. Keras' own advice ("call compile() again") would make a new optimizer:
    its step counter, moments and learning-rate schedule would start again."""
    config = getattr(getattr(model, "_compile_config", None), "config", None)
    if config is None:
        raise ModelError(f"model {model.name!r} was never compiled")
    model.compile(**{**config, "optimizer": model.optimizer})
    return model


def apply_phase(model, phase, encoder):
    """Freezes or unfreezes `encoder` for `phase` and recompiles `model` when that changes anything."""
    if all(layer.trainable == (not phase.frozen) for layer in encoder):
        return
    n = set_trainable(encoder, not phase.frozen)
    recompile(model)
    logger.info(
        "Epochs %d-%d: encoder (%d layers, %d weights) %s",
        phase.start + 1,
        phase.end,
        len(encoder),
        n,
        "frozen" if phase.frozen else "trainable again",
    )
