"""Run configuration: YAML -> dataclasses, validation and `--set key.sub=value` overrides.

This is the only module that reads YAML. A configuration file holds any subset of the sections below; what is
missing takes the defaults of `ptx_keras.constants`. Unknown or misspelt keys are errors that name the key, list
the valid ones and suggest the nearest.

Example:

```yaml
name: my_run
data: {path: /data/siim, image_size: 256}
model: {name: ms_scse_fc_densenet103, options: {growth_rate: 12}}
loss: {name: sw_cel}
train: {epochs: 200, batch_size: 4}
```
"""

import dataclasses
import difflib
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from ptx_keras import constants as C
from ptx_keras import schedules
from ptx_keras.data import augment
from ptx_keras.data.settings import PrepareSettings
from ptx_keras.diagnosis import FORMS, GATES, OBJECTIVES, Thresholds
from ptx_keras.errors import ConfigError

__all__ = [
    "LEGACY_KEYS",
    "AugmentConfig",
    "Config",
    "DataConfig",
    "DiagnosisConfig",
    "EvaluationConfig",
    "LossConfig",
    "ModelConfig",
    "PhantomConfig",
    "TrainConfig",
    "config_to_dict",
    "flatten_tree",
    "load_config",
    "load_yaml_mapping",
    "parse_override",
    "save_config",
    "validate_config",
    "yaml_load",
]


@dataclass(frozen=True)
class PhantomConfig:
    """The synthetic phantom data set used when `data.path` is empty (quick start, tests)."""

    n: int = 400
    size: int = 256
    seed: int = 0
    conspicuity: float = 1.0  # 1 = calibrated hard phantoms; larger = wider, darker air band (see docs/data.md)
    style: str = "classic"  # C.PHANTOM_STYLES: classic (one look), varied (randomised), heldout (unseen style)


def _section(value_type, *, nullable=False, first=()):
    """Class decorator (applied before `@dataclass`): a configuration section that configures `value_type`.

    The section gets one key per field of the `value_type` dataclass, with its type and default (`nullable`:
    `Optional` and None instead, "take the value from elsewhere", e.g. a preset), so that adding a field to the
    value type adds its key here without a second edit. The section's own fields named in `first` come before
    them, its other own fields after. (`DataConfig` is the third form of the same idea: it *is* the value type,
    `PrepareSettings`, extended by inheritance.)
    """

    def add(cls):
        own = dict(cls.__dict__.get("__annotations__", {}))
        derived = {}
        for f in dataclasses.fields(value_type):
            derived[f.name] = Optional[f.type] if nullable else f.type
            if nullable:
                setattr(cls, f.name, None)
            elif f.default is not dataclasses.MISSING:
                setattr(cls, f.name, f.default)
            else:
                setattr(cls, f.name, field(default_factory=f.default_factory))
        leading = {k: v for k, v in own.items() if k in first}
        cls.__annotations__ = {**leading, **derived, **{k: v for k, v in own.items() if k not in leading}}
        return cls

    return add


@dataclass(frozen=True)
@_section(augment.Augmentation, nullable=True, first=("preset",))
class AugmentConfig:
    """Training-time augmentation (`ptx_keras.data.augment`): a preset and overrides of its parameters.

    `preset` is `none`, `flip` (the paper's: random horizontal flips; the default), `standard` or `strong`;
    every parameter (one key per field of `ptx_keras.data.augment.Augmentation`) left null takes the preset's
    value. The presets, the parameters' meanings and their valid ranges are defined in `ptx_keras.data.augment`
    (PRESETS, PARAMETERS); see docs/training.md.
    """

    preset: str = augment.DEFAULT_PRESET


@dataclass(frozen=True)
class DataConfig(PrepareSettings):
    """Where the data comes from, how it is prepared and how it is streamed.

    The preparation settings (`image_size`, `bit_depth`, `boundary_width`, `normalize`, `clip`,
    `weight_dtype`, `split_fractions`, `split_seed`, `shard_size`) are the fields of
    `ptx_keras.data.settings.PrepareSettings`, which this class extends (and which validates them). `path` is a
    raw source (image/mask folder, CSV manifest, SIIM-ACR layout), an already prepared directory, or empty for
    the built-in phantoms. Raw sources are prepared into `cache_dir` (default: `<output_dir>/data_cache`) and
    reused by later runs with the same settings; where a run's data went is recorded in its `run.json`.
    """

    path: Optional[str] = None
    cache_dir: Optional[str] = None
    channels: int = 3
    skip_bad: bool = False
    workers: Optional[int] = None
    max_image_pixels: int = C.MAX_IMAGE_PIXELS  # larger images are refused from their header (docs/data.md)
    flip: Optional[bool] = None  # the older name of augment.flip, kept for older files; null = augment's
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    positive_fraction: Optional[float] = None  # null = natural order; e.g. 0.5: half the training draws positive
    # null = train on whole images; an int below image_size: train on random crops of that side (validation,
    # evaluation and deployment see whole images), a share crop_foreground of them centred on a pneumothorax
    crop_size: Optional[int] = None
    crop_foreground: float = C.CROP_FOREGROUND
    shuffle_buffer: int = 512
    phantoms: PhantomConfig = field(default_factory=PhantomConfig)

    def augmentation(self):
        """The resolved `ptx_keras.data.augment.Augmentation` of `augment` (and the older `flip`).

        Raises:
            ConfigError: naming the key, for an unknown preset, an invalid value, or `flip` and `augment.flip`
                set to different values.
        """
        values = {name: getattr(self.augment, name) for name in augment.PARAMETERS}
        if self.flip is not None:
            if values["flip"] is not None and values["flip"] != self.flip:
                raise ConfigError(
                    f"data.flip={self.flip} (the older name of data.augment.flip) contradicts "
                    f"data.augment.flip={values['flip']}; keep one of them"
                )
            values["flip"] = self.flip
        try:
            return augment.Augmentation.from_preset(self.augment.preset, **values)
        except ValueError as e:
            raise ConfigError(f"data.augment.{e}") from None


@dataclass(frozen=True)
class ModelConfig:
    """`name` is a `ptx_keras.build_model` preset; `options` are its keyword overrides (e.g. growth_rate)."""

    name: str = "ms_scse_fc_densenet103"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LossConfig:
    """`name` is one of `ptx_keras.losses.get_loss` (sw_cel, wce, ce, dice, ...); `options` its arguments."""

    name: str = "sw_cel"
    options: dict[str, Any] = field(default_factory=dict)
    # Weight of the image-level BCE term of a model with an aux head (model.options.aux_head: true):
    # loss = segmentation loss + aux_weight * BCE(aux probability, image label). Ignored without the head.
    aux_weight: float = 0.4


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule, callbacks and execution (paper: Adam 1e-4, weight decay 1e-4, 200 epochs)."""

    epochs: int = C.EPOCHS
    batch_size: int = 4  # global batch size, split across replicas
    learning_rate: float = C.LEARNING_RATE
    lr_schedule: str = schedules.LR_SCHEDULE  # constant (paper), cosine, plateau (ptx_keras.schedules)
    warmup_epochs: int = schedules.WARMUP_EPOCHS  # linear warm-up from 0 (constant, cosine)
    min_learning_rate: float = schedules.MIN_LEARNING_RATE  # the cosine's end, the plateau's floor
    plateau_factor: float = schedules.PLATEAU_FACTOR
    plateau_patience: int = schedules.PLATEAU_PATIENCE
    beta_1: float = C.BETA_1
    beta_2: float = C.BETA_2
    weight_decay: float = C.WEIGHT_DECAY
    weight_decay_mode: str = C.WEIGHT_DECAY_MODE  # coupled (L2 in the gradient, PyTorch Adam) or decoupled (AdamW)
    early_stopping_patience: Optional[int] = C.EARLY_STOPPING_PATIENCE
    bn_momentum: Optional[float] = None  # None keeps the model's (Keras 0.99); short runs want ~0.9
    monitor: str = "val_dsc1"
    steps_per_epoch: Optional[int] = None  # None: one pass over the training split; a number: the data repeats
    validation_steps: Optional[int] = None
    mixed_precision: str = "auto"  # auto (on with a GPU), on, off
    jit_compile: str = "auto"  # auto (measured fastest), on, off
    graph_optimizer: str = "auto"  # TensorFlow's Grappler: auto (off without a GPU, measured faster), on, off
    deterministic: bool = False
    seed: int = 0
    strategy: str = "auto"  # auto, default, mirrored, multi_worker
    worker_timeout_s: float = C.WORKER_TIMEOUT_S  # multi_worker: start-up and collective timeout (docs/scaling.md)
    tensorboard: bool = True
    evaluate: bool = True  # evaluate the test split at the end of training
    export: bool = True  # export a SavedModel at the end of training
    # Fine-tuning (ptx_keras.finetune): a run directory or .keras file whose weights start this run, matched by
    # layer name; and how many first epochs train with its encoder frozen (0: none; needs init_from).
    init_from: Optional[str] = None
    freeze_encoder_epochs: int = 0
    # A training split of positive images only is refused unless this is set: the masks can be learnt from it
    # (public segmentation sets often keep only positives), but no training image shows the model a negative.
    allow_positive_only: bool = False


@dataclass(frozen=True)
@_section(Thresholds)
class DiagnosisConfig:
    """The paper's rule: pneumothorax if the predicted mask has more than `min_area` pixels at 256 x 256.

    One key per field of `ptx_keras.diagnosis.Thresholds` (`mask_threshold`, `min_area`, `reference_size`; the
    triplet rule's `top_threshold`, null for the paper's two-number rule; `gate`: area, aux or both, with
    `aux_threshold`), which validates them; a threshold search on the validation split replaces them for the run
    (`ptx_keras.runs.RunDir.read_thresholds`).
    """

    # The framework's final mask is empty when the diagnosis is negative (segmentation -> area classifier);
    # evaluation scores that mask and the raw mask, and says which is which.
    gate_masks: bool = True

    def thresholds(self):
        """These numbers as a `ptx_keras.diagnosis.Thresholds`."""
        return Thresholds(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Thresholds)})


@dataclass(frozen=True)
class EvaluationConfig:
    """How `evaluate.py` runs by default."""

    split: str = "test"
    batch_size: int = 8
    search_thresholds: bool = False
    objective: str = "f1"  # f1, youden, or siim_dice (the SIIM-ACR mean Dice of the final masks)
    threshold_form: str = (
        "pair"  # what the search chooses: pair (the paper's rule) or triplet (diagnosis.top_threshold)
    )
    tta: str = "none"  # test-time augmentation: none, or hflip (mean of the image and its horizontal mirror)


@dataclass(frozen=True)
class Config:
    """A whole run. `name` names the run directory `<output_dir>/<name>`."""

    name: str = "run"
    output_dir: str = C.RUNS_DIR
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    diagnosis: DiagnosisConfig = field(default_factory=DiagnosisConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    @property
    def run_dir(self):
        """The run directory `<output_dir>/<name>` (the one place that joins them; `ptx_keras.runs.RunDir` takes
        it from here: the configuration sits below the run directory in the layering)."""
        return os.path.join(self.output_dir, self.name)


_CHOICES = {
    "train.mixed_precision": ("auto", "on", "off"),
    "train.jit_compile": ("auto", "on", "off"),
    "train.graph_optimizer": ("auto", "on", "off"),
    "train.strategy": ("auto", "default", "mirrored", "multi_worker"),
    "train.weight_decay_mode": C.WEIGHT_DECAY_MODES,
    "data.channels": (1, 3),
    "data.phantoms.style": C.PHANTOM_STYLES,
    "evaluation.split": C.SPLITS,
    "evaluation.objective": OBJECTIVES,
    "evaluation.threshold_form": FORMS,
    "evaluation.tta": C.TTA_MODES,
    "diagnosis.gate": GATES,
}
_POSITIVE = (
    "data.shuffle_buffer",
    "data.phantoms.n",
    "data.phantoms.size",
    "data.phantoms.conspicuity",
    "train.epochs",
    "train.batch_size",
    "train.learning_rate",
    "train.worker_timeout_s",
    "data.max_image_pixels",
    "evaluation.batch_size",
    "diagnosis.reference_size",
)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, which also reads exponent floats without a dot (`2e-3`, `1E4`) as numbers.

    PyYAML follows YAML 1.1, where `2e-3` is a string; YAML 1.2, Python and every paper write it as a number, and
    `--set train.learning_rate=2e-3` must not fail as "must be a number".
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(stream):
    """Parses YAML text or a file object with the configuration's loader (`2e-3` is a number)."""
    return yaml.load(stream, Loader=_Loader)


def _suggest(key, valid):
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def _coerce(value, tp, where):
    """Converts a YAML value to the annotated type, raising ConfigError naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of keys. Received: {value!r}")
        return _from_dict(tp, value, where + ".")
    if origin in (tuple, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list. Received: {value!r}")
        if args and args[-1] is not Ellipsis and len(value) != len(args):
            raise ConfigError(f"{where} must have {len(args)} values. Received: {value!r}")
        return tuple(_coerce(v, args[0] if args else Any, where) for v in value)
    if origin in (dict, dict):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping. Received: {value!r}")
        return dict(value)
    if origin in (list, list):
        return list(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false. Received: {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} must be an integer. Received: {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number. Received: {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool):  # YAML reads on/off/yes/no as booleans
            return "on" if value else "off"
        if isinstance(value, (int, float)):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string. Received: {value!r}")
        return value
    return value


def _from_dict(cls, values, prefix=""):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            where = f"{prefix}{key}"
            raise ConfigError(
                f"Unknown configuration key {where!r}.{_suggest(str(key), names)} "
                f"Valid keys{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(names)}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except ValueError as e:  # a section that validates itself (PrepareSettings): name the key with its section
        raise ConfigError(f"{prefix}{e}") from None


def config_to_dict(cfg):
    """Returns the configuration as plain Python types (tuples as lists), ready for YAML."""

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def _deep_merge(base, update):
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "options":
            out[k] = _deep_merge(out[k], v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def parse_override(text):
    """Parses one `--set key.sub=value` into `(["key", "sub"], value)`; the value is read as YAML.

    Raises:
        ConfigError: if there is no `=` or the key is empty.
    """
    if "=" not in text:
        raise ConfigError(f"--set expects key=value (e.g. train.epochs=5). Received: {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects key=value with a dotted key. Received: {text!r}")
    try:
        value = yaml_load(raw) if raw.strip() != "" else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {e}") from None
    return key.split("."), value


def _apply_override(tree, parts, value):
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = {}
            node[part] = child
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(parts)}: {part!r} is not a section.")
        node = child
    node[parts[-1]] = value


def _read_yaml(path):
    if not os.path.isfile(path):
        raise ConfigError(f"Configuration file not found: {path}")
    data = load_yaml_mapping(path, allow_empty=False)
    base = data.pop("base", None)
    if base is not None:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        data = _deep_merge(_read_yaml(base_path), data)
    return data


# Keys older run directories' config.yaml may hold that are no longer configuration: dropped when loading.
# data.prepared_dir: where the data was prepared is run state, now in the run's run.json (ptx_keras.runs).
LEGACY_KEYS = (("data", "prepared_dir"),)


def _drop_legacy(tree):
    for section, key in LEGACY_KEYS:
        if isinstance(tree.get(section), dict):
            tree[section].pop(key, None)
    return tree


def load_config(path=None, overrides=(), extra=None):
    """Loads a configuration file, applies `--set` overrides and validates the result.

    A file may name another as `base: other.yaml` (relative to itself); its keys are merged under this file's.

    Args:
        path: YAML file, or None for the defaults.
        overrides: Iterable of `"key.sub=value"` strings (values parsed as YAML).
        extra: Optional dict merged last (used by the CLIs for --data and --output-dir).

    Returns:
        A validated `Config`.

    Raises:
        ConfigError: on a missing file, invalid YAML, unknown key (with the nearest valid key) or bad value.
    """
    tree = _drop_legacy(_read_yaml(path)) if path else {}
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(tree, parts, value)
    if extra:
        tree = _deep_merge(tree, extra)
    where = f"{path}: " if path else ""
    try:
        cfg = _from_dict(Config, tree)
        validate_config(cfg)
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from None
    return cfg


def validate_config(cfg):
    """Checks value ranges and choices; raises ConfigError naming the key and the value."""
    flat = flatten_tree(config_to_dict(cfg))
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"{key} must be one of {list(choices)}. Received: {flat[key]!r}")
    for key in _POSITIVE:
        if flat[key] is not None and flat[key] <= 0:
            raise ConfigError(f"{key} must be positive. Received: {flat[key]!r}")
    # The preparation settings (data.image_size, ...) validated themselves when the DataConfig was made.
    if cfg.train.bn_momentum is not None and not 0.0 <= cfg.train.bn_momentum < 1.0:
        raise ConfigError(f"train.bn_momentum must be in [0, 1) or null. Received: {cfg.train.bn_momentum!r}")
    try:
        cfg.diagnosis.thresholds()
    except ValueError as e:
        raise ConfigError(f"diagnosis.{e}") from None
    if cfg.diagnosis.gate != "area" and not cfg.model.options.get("aux_head"):
        raise ConfigError(
            f"diagnosis.gate={cfg.diagnosis.gate!r} needs the model's image-level probability: set "
            "model.options.aux_head: true (or diagnosis.gate: area)"
        )
    if not cfg.loss.aux_weight >= 0:
        raise ConfigError(f"loss.aux_weight must be >= 0. Received: {cfg.loss.aux_weight!r}")
    cfg.data.augmentation()
    pf = cfg.data.positive_fraction
    if pf is not None and not 0.0 < pf < 1.0:
        raise ConfigError(f"data.positive_fraction must be null or in (0, 1). Received: {pf!r}")
    crop, size = cfg.data.crop_size, cfg.data.image_size
    if crop is not None and (not isinstance(crop, int) or isinstance(crop, bool) or not 0 < crop < size):
        raise ConfigError(f"data.crop_size must be null or an int below data.image_size={size}. Received: {crop!r}")
    cf = cfg.data.crop_foreground
    if isinstance(cf, bool) or not isinstance(cf, (int, float)) or not 0.0 <= cf <= 1.0:
        raise ConfigError(f"data.crop_foreground must be a number in [0, 1]. Received: {cf!r}")
    t = cfg.train
    try:
        schedules.check_schedule(
            t.lr_schedule, t.learning_rate, t.warmup_epochs, t.min_learning_rate, t.plateau_factor, t.plateau_patience
        )
    except ValueError as e:
        raise ConfigError(f"train.{e}") from None
    if t.freeze_encoder_epochs < 0:
        raise ConfigError(f"train.freeze_encoder_epochs must be >= 0. Received: {t.freeze_encoder_epochs!r}")
    if t.freeze_encoder_epochs and not t.init_from:
        raise ConfigError(
            f"train.freeze_encoder_epochs={t.freeze_encoder_epochs} freezes pre-trained weights: set train.init_from "
            "(--init-from RUN_DIR|FILE.keras), or set train.freeze_encoder_epochs: 0"
        )
    if t.freeze_encoder_epochs > t.epochs:
        raise ConfigError(f"train.freeze_encoder_epochs={t.freeze_encoder_epochs} is more than train.epochs={t.epochs}")
    if not cfg.name or os.sep in cfg.name:
        raise ConfigError(f"name must be a non-empty directory name. Received: {cfg.name!r}")


def flatten_tree(tree, prefix=""):
    """Flattens nested sections into dotted keys (`model.options` stays one value)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k != "options":
            out.update(flatten_tree(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def save_config(cfg, path):
    """Writes the resolved configuration as YAML (the run directory's `config.yaml`)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)


def load_yaml_mapping(path, allow_empty=True):
    """Reads a YAML file whose top level is a mapping, without any `base:` merging or validation.

    For YAML files that are not run configurations (e.g. experiment grids, `ptx_keras.experiments`), so that
    this module stays the only one that reads YAML.

    Args:
        path: The YAML file.
        allow_empty: Whether an empty file (or one holding only comments) reads as `{}`. A run configuration
            refuses it: trained as the built-in defaults, an empty file would silently give the paper's model,
            not what the user meant.

    Returns:
        dict (empty for an empty file).

    Raises:
        ConfigError: if the file is missing, is not valid YAML, is empty while `allow_empty` is False, or its
            top level is not a mapping.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"File not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        if not allow_empty:
            raise ConfigError(
                f"{path}: the file holds no configuration (it is empty or only comments); the top level "
                "must be a mapping of keys, e.g. a copy of configs/quickstart.yaml"
            )
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping. Received: {type(data).__name__}")
    return data
