"""The preparation settings: one value type read by the configuration, the `ptx-prepare` flags and `prepare_dataset`.

Adding a setting is one field here (with its `metadata`: help text, command-line flag, whether it changes
the per-sample arrays) plus its use in `ptx_keras.data.arrays.prepare_arrays`; `DataConfig` inherits the
fields, `ptx-prepare` builds its flags from them and the prepared data's fingerprint hashes them.
"""

import dataclasses
import difflib
import math
import numbers
from typing import Optional

from ptx_keras import constants

__all__ = ["BIT_DEPTHS", "NORMALIZATIONS", "WEIGHT_DTYPES", "PrepareSettings"]


BIT_DEPTHS = (8, 16)
WEIGHT_DTYPES = ("float32", "float16")
NORMALIZATIONS = (None, "mean")


def _setting(default, help, flag, array):
    """A field with what the CLI and the preparation need to know about it.

    Args:
        default: The default value (from `ptx_keras.constants`).
        help: One line for `ptx-prepare --help`.
        flag: The `ptx-prepare` option name.
        array: True when the setting changes the prepared image, mask or weight map of a sample (a change
            then needs every sample processed again); False when it only changes the split or the sharding.
    """
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "array": array})


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class PrepareSettings:
    """How a source is turned into prepared TFRecord shards (`ptx_keras.data.prepare.prepare_dataset`).

    Attributes:
        image_size: Side of the square the images are resized to (pixels).
        bit_depth: 8 or 16 bits per stored image pixel.
        boundary_width: Cross dilations of the weight map's boundary band (eq. 6).
        normalize: Weight-map normalisation: None (the paper) or "mean" (mean weight 1).
        clip: Upper bound of the weights, or None (the paper).
        weight_dtype: How the weight maps are stored: "float32" (exact) or "float16" (clamped at 65,504).
        split_fractions: Train, validation and test fractions (Table 1: 0.64, 0.16, 0.20).
        split_seed: Seed of the split and of the order within shards.
        shard_size: Examples per TFRecord shard.

    Raises:
        ValueError: naming the first invalid setting.
    """

    image_size: int = _setting(constants.IMAGE_SIZE, "square image size in pixels", "--size", True)
    bit_depth: int = _setting(constants.IMAGE_BIT_DEPTH, "stored image bit depth (8 or 16)", "--bit-depth", True)
    boundary_width: int = _setting(
        constants.BOUNDARY_WIDTH, "cross dilations of the weight-map boundary band", "--boundary-width", True
    )
    normalize: Optional[str] = _setting(
        constants.WEIGHT_NORMALIZE, "weight-map normalisation: none (the paper) or mean", "--normalize", True
    )
    clip: Optional[float] = _setting(constants.WEIGHT_CLIP, "upper bound of the weights", "--clip", True)
    weight_dtype: str = _setting(
        constants.WEIGHT_DTYPE, "stored weight-map precision (float32 exact; float16 clamps)", "--weight-dtype", True
    )
    split_fractions: tuple[float, float, float] = _setting(
        constants.SPLIT_FRACTIONS, "train,val,test split fractions", "--split", False
    )
    split_seed: int = _setting(constants.SPLIT_SEED, "split and shard-order seed", "--seed", False)
    shard_size: int = _setting(constants.SHARD_SIZE, "examples per shard", "--shard-size", False)

    def __post_init__(self):
        from ptx_keras.data.split import validate_fractions

        for name, minimum in (("image_size", 1), ("shard_size", 1), ("split_seed", 0), ("boundary_width", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < minimum:
                kind = "non-negative" if minimum == 0 else "positive"
                raise ValueError(f"{name} must be a {kind} integer. Received: {name}={value!r}")
            object.__setattr__(self, name, int(value))
        if self.bit_depth not in BIT_DEPTHS or isinstance(self.bit_depth, bool):
            raise ValueError(f"bit_depth must be one of {BIT_DEPTHS}. Received: bit_depth={self.bit_depth!r}")
        if self.weight_dtype not in WEIGHT_DTYPES:
            raise ValueError(
                f"weight_dtype must be one of {WEIGHT_DTYPES}. Received: weight_dtype={self.weight_dtype!r}"
            )
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}. Received: normalize={self.normalize!r}")
        if self.clip is not None:
            if (
                isinstance(self.clip, bool)
                or not isinstance(self.clip, numbers.Real)
                or not (math.isfinite(self.clip) and self.clip > 0)
            ):
                raise ValueError(f"clip must be a positive number or None. Received: clip={self.clip!r}")
            object.__setattr__(self, "clip", float(self.clip))
        try:
            fractions = validate_fractions(self.split_fractions)
        except ValueError as e:
            raise ValueError(f"split_fractions: {e}") from None
        object.__setattr__(self, "split_fractions", fractions)

    @classmethod
    def names(cls):
        """The setting names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(PrepareSettings))

    @classmethod
    def array_names(cls):
        """The settings that change a sample's prepared arrays (`prepare_arrays` takes exactly these)."""
        return tuple(f.name for f in dataclasses.fields(PrepareSettings) if f.metadata["array"])

    @classmethod
    def from_kwargs(cls, base=None, **kwargs):
        """`base` (default: the defaults) with some settings changed by keyword.

        Raises:
            ValueError: for an unknown setting (naming the nearest valid one) or an invalid value.
        """
        valid = cls.names()
        for key in kwargs:
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"Unknown preparation setting {key!r}.{hint} Valid settings: {', '.join(valid)}")
        values = (base or PrepareSettings()).to_dict()
        values.update(kwargs)
        return PrepareSettings(**values)

    @classmethod
    def of(cls, settings):
        """A `PrepareSettings` from itself, a subclass instance (e.g. the run's `DataConfig`) or a mapping."""
        if isinstance(settings, PrepareSettings):
            return PrepareSettings(**{name: getattr(settings, name) for name in PrepareSettings.names()})
        if isinstance(settings, dict):
            return PrepareSettings.from_kwargs(**settings)
        raise ValueError(f"settings must be a PrepareSettings or a mapping. Received: {settings!r}")

    def to_dict(self):
        """The settings as JSON-ready values (tuples as lists), in declaration order."""
        out = {}
        for name in PrepareSettings.names():
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def array_settings(self):
        """`{name: value}` of `array_names()`: the keyword arguments of `prepare_arrays`."""
        return {name: getattr(self, name) for name in PrepareSettings.array_names()}
