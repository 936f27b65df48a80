"""Training-time augmentation of `(image, mask, weight map)` batches in the tf.data pipeline.

`Augmentation` says what to do (validated numbers, from a named preset plus overrides); `augment_batch` does it
to a batch inside `ptx_keras.data.pipeline` (training only; evaluation and prediction never augment).

**What moves what.** Geometric transforms (horizontal flip, rotation, scale, translation) move the image, the
mask and the weight map together: one affine map per example, applied once (`keras.ops.image.affine_transform`)
with bilinear sampling for the image and nearest-neighbour sampling for the mask and the weight map, which are
resampled in the same call (the weight signed by the mask) so that every output pixel takes mask and weight
from the same source pixel: the mask stays binary and the weights keep their stored values. Intensity
transforms (noise, blur/sharpen, gamma, contrast, brightness) change only the image.

**Pixels brought in from outside the image** (a rotated corner, a zoomed-out border, a shifted edge) are
black in the image, 0 in the mask and get the weight a *background pixel away from the pneumothorax* has in
that image: `|N| / |T_background|` of eq. 6 (1 for a negative image), after the data set's normalisation and
clip. Not 0: the loss keeps seeing about `|N|` pixels' worth of weight per class term, so images stay equally
weighted whatever their augmentation, and a blank border (as collimation leaves on real radiographs) is
background; not the boundary weight, as no pneumothorax edge is there. It is read from the stored map itself
(its smallest value over the background pixels: the boundary band only adds to the background term), so it
follows whatever normalisation and clip the data was prepared with.

**What is approximate.** The weight map is computed once, before training (the paper, `docs/loss.md`), and
moved, not recomputed. Rotation and translation keep areas, so the class terms stay exact except for the
part of a pneumothorax pushed out of the image. A zoom by `s` scales areas by `s**2`, so the ideal class
term `|N| / |T_c|` would change by `1 / s**2` (+-21 % at the `standard` preset's `s` in [0.91, 1.1]) and
the boundary band gets `s` times as wide; nearest-neighbour sampling keeps the band on the mask's edge
(tests/test_augment.py checks it). Recomputing eq. 6 in the graph would be exact but would be a second
definition of the weight map (`ptx_keras.data.weight_maps` is the one).

**Order** (the physical chain of a radiograph): geometric (positioning) -> noise (acquisition) -> blur or
unsharp masking (detector processing) -> gamma, contrast, brightness (the display look-up table) -> clip to
[0, 1].

**Randomness.** Every example of a training stream has a random 64-bit integer (`tf.data.Dataset.random`,
seeded by the run's seed; the pipeline draws it). The flip is its lowest bit, exactly as before this module
existed, so the paper's setting (`preset: flip`) reproduces the earlier flip stream. The other parameters
of a batch are drawn per example with stateless random ops seeded by the first example's integer: the same
seed gives the same augmentation stream, run after run, whatever the parallelism of the pipeline.

**Why not the Keras preprocessing layers** (`keras.layers.RandomRotation`, `RandomZoom`,
`RandomTranslation`, `RandomContrast`, `RandomBrightness`, `RandomGaussianBlur`, `RandomSharpness`): their
random parameters come from a `SeedGenerator` variable, which a parallel `tf.data` map updates in an
arbitrary order (the same seed gave a different stream from run to run when tried in a parallel map), and
`get_random_transformation` refuses a tensor seed, so they cannot follow the pipeline's seeded stream;
chaining rotation, zoom and translation layers would also resample the image three times (three bilinear
blurs) and the mask three times; their fill value is one constant for every input, where the weight map
needs a per-image background weight; `RandomGaussianBlur` draws one sigma per batch. The transforms here
therefore draw their own parameters and use Keras' image op for the geometry
(`keras.ops.image.affine_transform`, TensorFlow's `ImageProjectiveTransformV3`). Written by hand: the affine
matrix (rotation, scale, translation composed), gamma (no Keras op or layer), the Gaussian of blur and
unsharp masking (`keras.ops.image.gaussian_blur` gives the same values at several times the CPU time, see
`_gaussian`), and the one-line brightness, contrast and noise formulas, which follow `RandomBrightness` (add a
delta), `RandomContrast` (scale about the image mean) and `GaussianNoise` (add N(0, std)) but with a
per-example strength.

This module imports TensorFlow and Keras only inside the functions that build graph ops, so that
`ptx_keras.config` can validate `data.augment` without importing them.
"""

import dataclasses
import math
import numbers

__all__ = [
    "DEFAULT_PRESET",
    "PARAMETERS",
    "PRESETS",
    "Augmentation",
    "affine_matrices",
    "as_augmentation",
    "augment_batch",
    "background_weight",
    "draw_parameters",
    "transform_geometry",
    "transform_intensity",
]

DEFAULT_PRESET = "flip"

_GEOMETRIC = ("rotation", "scale", "translation")
_INTENSITY = ("noise", "blur", "sharpen", "gamma", "contrast", "brightness")
# Salts that separate the stateless streams drawn from one seed.
_PARAMETER_SALT, _NOISE_SALT = 0x5EED_A, 0x5EED_B


def _parameter(meaning, low=None, high=None, *, off=0.0, default=None):
    """An `Augmentation` field: `off` switches the transform off and is the default unless `default` is given."""
    return dataclasses.field(
        default=off if default is None else default, metadata={"meaning": meaning, "low": low, "high": high, "off": off}
    )


def _in_range(value, low, high):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    return ok and low <= value <= high


def _check(name, value):
    if name == "flip":
        if not isinstance(value, bool):
            raise ValueError(f"flip must be true or false. Received: flip={value!r}")
        return value
    meaning, low, high = PARAMETERS[name]
    if name == "unsharp_sigma":
        if not (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(_in_range(v, low, high) for v in value)
            and value[0] <= value[1]
        ):
            raise ValueError(
                f"{name} must be two numbers low <= high in [{low:g}, {high:g}] ({meaning}). Received: {name}={value!r}"
            )
        return (float(value[0]), float(value[1]))
    if not _in_range(value, low, high):
        raise ValueError(f"{name} must be a number in [{low:g}, {high:g}] ({meaning}). Received: {name}={value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """What training-time augmentation does; every field is validated (ranges in `PARAMETERS`).

    The defaults are the paper's setting (`PRESETS["flip"]`). Build one from a preset with `from_preset`.

    Attributes:
        flip: Random horizontal flip.
        rotation: Largest rotation in degrees, in [0, 45].
        scale: Largest zoom, in [0, 1]: the factor is log-uniform in [1 / (1 + scale), 1 + scale] (zooming in
            and out equally likely).
        translation: Largest shift per axis as a fraction of the image side, in [0, 0.5].
        noise: Largest standard deviation of additive Gaussian noise (fraction of full scale), in [0, 0.5].
        blur: Largest blur amount, in [0, 1]; 1 gives the Gaussian-smoothed image.
        sharpen: Largest unsharp-mask amount, in [0, 10]. The amount `a` of an example is uniform in
            [-blur, sharpen] and the image becomes `image + a * (image - gaussian(image))`.
        unsharp_sigma: `(low, high)`, the range of that Gaussian's sigma as a fraction of the image side
            (so that it means the same anatomy at every resolution), within [0.001, 0.05]; each example draws
            its sigma log-uniformly from it. The cost grows with `high` (the kernel spans 3 sigma).
        gamma: Largest gamma change, in [0, 4]: the image becomes `image ** g` with `g` log-uniform in
            [1 / (1 + gamma), 1 + gamma].
        contrast: Largest contrast change, in [0, 1]: `(image - mean) * c + mean`, `c` in [1 - contrast,
            1 + contrast].
        brightness: Largest brightness change, in [0, 1]: `image + b`, `b` in [-brightness, brightness].

    Raises:
        ValueError: naming the first invalid value and its valid range.
    """

    # One line per parameter: its type, meaning, valid range and the value that switches it off (its default
    # unless given). `PARAMETERS`, the presets' starting point and `ptx_keras.config.AugmentConfig` (the
    # `data.augment` keys) are derived from these fields; a preset that uses a new parameter names it below.
    flip: bool = _parameter("random horizontal flip (the paper's augmentation)", off=False, default=True)
    rotation: float = _parameter("largest rotation, degrees (uniform in [-rotation, rotation])", 0.0, 45.0)
    scale: float = _parameter("largest zoom: factor log-uniform in [1 / (1 + scale), 1 + scale]", 0.0, 1.0)
    translation: float = _parameter("largest shift per axis, fraction of the image side", 0.0, 0.5)
    noise: float = _parameter("largest standard deviation of additive Gaussian noise, fraction of full scale", 0.0, 0.5)
    blur: float = _parameter(
        "largest blur: image + a * (image - gaussian(image)), a uniform in [-blur, sharpen]", 0.0, 1.0
    )
    sharpen: float = _parameter("largest unsharp-mask amount: the a > 0 side of the same formula", 0.0, 10.0)
    unsharp_sigma: tuple[float, float] = _parameter(
        "range [low, high] of the sigma of that Gaussian, log-uniform, fraction of the image side",
        0.001,
        0.05,
        off=(0.004, 0.015),
    )
    gamma: float = _parameter("largest gamma change: exponent log-uniform in [1 / (1 + gamma), 1 + gamma]", 0.0, 4.0)
    contrast: float = _parameter(
        "largest contrast change: factor in [1 - contrast, 1 + contrast] about the image mean", 0.0, 1.0
    )
    brightness: float = _parameter(
        "largest brightness change: delta in [-brightness, brightness], fraction of full scale", 0.0, 1.0
    )

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _check(f.name, getattr(self, f.name)))

    @classmethod
    def from_preset(cls, preset=DEFAULT_PRESET, **overrides):
        """A preset (`none`, `flip`, `standard`, `strong`) with some parameters changed.

        Args:
            preset: A name of `PRESETS`.
            **overrides: Parameters of `PARAMETERS`; None keeps the preset's value.

        Raises:
            ValueError: for an unknown preset or parameter (listing the valid ones) or an invalid value.
        """
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {list(PRESETS)}. Received: preset={preset!r}")
        unknown = sorted(set(overrides) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"Unknown augmentation parameter(s) {unknown}; valid: {', '.join(PARAMETERS)}")
        values = dict(PRESETS[preset])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def geometric(self):
        """True when rotation, scale or translation is on (the flip is applied separately, exactly)."""
        return any(getattr(self, k) > 0 for k in _GEOMETRIC)

    @property
    def intensity(self):
        """True when any intensity transform is on."""
        return any(getattr(self, k) > 0 for k in _INTENSITY)

    @property
    def enabled(self):
        """True when training batches are changed at all."""
        return self.flip or self.geometric or self.intensity

    def to_dict(self):
        """The parameters as plain Python values (JSON/YAML-ready)."""
        return dataclasses.asdict(self)


# Every parameter: (meaning, lower bound, upper bound). 0 (or False) switches a transform off.
PARAMETERS = {
    f.name: (f.metadata["meaning"], f.metadata["low"], f.metadata["high"]) for f in dataclasses.fields(Augmentation)
}
_OFF = {f.name: f.metadata["off"] for f in dataclasses.fields(Augmentation)}
# Presets. `flip` is the paper's setting and the default. `standard`: what a radiograph varies by between
# sites and machines (positioning a few degrees and ~10 %, exposure and look-up table, detector noise and
# edge enhancement). `strong`: about twice that, for small data sets.
PRESETS = {
    "none": dict(_OFF),
    "flip": dict(_OFF, flip=True),
    "standard": dict(
        _OFF,
        flip=True,
        rotation=10.0,
        scale=0.1,
        translation=0.05,
        noise=0.02,
        blur=0.5,
        sharpen=1.0,
        gamma=0.3,
        contrast=0.2,
        brightness=0.1,
    ),
    "strong": dict(
        _OFF,
        flip=True,
        rotation=15.0,
        scale=0.2,
        translation=0.1,
        noise=0.04,
        blur=1.0,
        sharpen=2.0,
        unsharp_sigma=(0.004, 0.03),
        gamma=0.5,
        contrast=0.4,
        brightness=0.2,
    ),
}


def as_augmentation(augment):
    """Accepts an `Augmentation`, a preset name, a mapping `{preset: ..., <parameter>: ...}` or None (default).

    Raises:
        ValueError: for an unknown preset or parameter, or an invalid value.
    """
    if isinstance(augment, Augmentation):
        return augment
    if augment is None:
        return Augmentation.from_preset(DEFAULT_PRESET)
    if isinstance(augment, str):
        return Augmentation.from_preset(augment)
    if isinstance(augment, dict):
        values = dict(augment)
        return Augmentation.from_preset(values.pop("preset", DEFAULT_PRESET) or DEFAULT_PRESET, **values)
    raise ValueError(f"augment must be an Augmentation, a preset name or a mapping. Received: {augment!r}")


# ----------------------------------------------------------------------------------------------------------
# Graph ops (TensorFlow/Keras imported here only)
# ----------------------------------------------------------------------------------------------------------
def draw_parameters(aug, seed, batch_size):
    """Draws the per-example parameters of one batch with stateless random ops.

    Args:
        aug: `Augmentation`.
        seed: int64 scalar tensor (the batch's first random integer).
        batch_size: Scalar tensor, the examples in the batch.

    Returns:
        dict of float32 tensors of shape `(batch,)`: `angle` (degrees), `scale`, `shift_x`, `shift_y`
        (fractions of the side), `noise`, `amount` (blur < 0 < sharpen), `sigma` (fraction of the side),
        `gamma`, `contrast`, `brightness`.
        Transforms that are off get their identity value.
    """
    import tensorflow as tf

    u = tf.random.stateless_uniform(
        [batch_size, 10], seed=tf.stack([seed, tf.constant(_PARAMETER_SALT, tf.int64)]), minval=-1.0, maxval=1.0
    )

    def log_uniform(column, spread):  # exp(U(-log(1 + spread), log(1 + spread)))
        return tf.exp(u[:, column] * math.log1p(spread))

    return {
        "angle": u[:, 0] * aug.rotation,
        "scale": log_uniform(1, aug.scale),
        "shift_x": u[:, 2] * aug.translation,
        "shift_y": u[:, 3] * aug.translation,
        "noise": (u[:, 4] + 1.0) / 2.0 * aug.noise,
        "amount": -aug.blur + (u[:, 5] + 1.0) / 2.0 * (aug.blur + aug.sharpen),
        "sigma": tf.exp(
            math.log(aug.unsharp_sigma[0])
            + (u[:, 9] + 1.0) / 2.0 * math.log(aug.unsharp_sigma[1] / aug.unsharp_sigma[0])
        ),
        "gamma": log_uniform(6, aug.gamma),
        "contrast": 1.0 + u[:, 7] * aug.contrast,
        "brightness": u[:, 8] * aug.brightness,
    }


def affine_matrices(angle, scale, shift_x, shift_y, height, width):
    """The `(batch, 8)` transforms of `keras.ops.image.affine_transform` for rotation, zoom and shift.

    An output pixel `p` (x = column, y = row) samples the input at `c + R(-angle) (p - c - t) / scale`, where
    `c` is the image centre and `t = (shift_x * width, shift_y * height)`: the image is rotated by `angle`
    about its centre, zoomed by `scale` (> 1 magnifies) and shifted by `t` pixels.

    Args:
        angle: Degrees, float32 `(batch,)`.
        scale: Zoom factors, `(batch,)`.
        shift_x, shift_y: Shifts as fractions of the width and height, `(batch,)`.
        height, width: The image size (Python ints).

    Returns:
        float32 tensor `(batch, 8)`: `[a0, a1, a2, b0, b1, b2, 0, 0]`, the output-to-input map.
    """
    import tensorflow as tf

    theta = angle * (math.pi / 180.0)
    cos, sin = tf.cos(theta) / scale, tf.sin(theta) / scale
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    px, py = cx + shift_x * width, cy + shift_y * height  # where the centre goes
    a0, a1, b0, b1 = cos, sin, -sin, cos
    a2 = cx - a0 * px - a1 * py
    b2 = cy - b0 * px - b1 * py
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def background_weight(mask, weight):
    """Per example, the weight of a background pixel away from the pneumothorax: `(batch,)`.

    The smallest weight over the background pixels (the boundary band only adds to it); an image without
    background pixels (a mask covering everything) gives its smallest weight.
    """
    import tensorflow as tf

    inf = tf.constant(float("inf"), weight.dtype)
    bg = tf.reduce_min(tf.where(mask > 0, inf, weight), axis=[1, 2])
    return tf.where(tf.math.is_inf(bg), tf.reduce_min(weight, axis=[1, 2]), bg)


def transform_geometry(image, mask, weight, params):
    """Rotates, zooms and shifts each example; image, mask and weight map move together.

    Args:
        image: float32 `(batch, H, W, 1)`.
        mask: `(batch, H, W)`, 0/1, any numeric dtype.
        weight: `(batch, H, W)` float (16 or 32 bit).
        params: dict with `angle`, `scale`, `shift_x`, `shift_y`, each `(batch,)` (see `draw_parameters`).

    Returns:
        `(image, mask, weight)`: float32 image (bilinear, 0 outside), float32 mask (nearest, 0 outside) and
        float32 weight map (nearest, the example's background weight outside).
    """
    import tensorflow as tf
    from keras import ops

    height, width = image.shape[1], image.shape[2]
    if height is None or width is None:
        height, width = tf.shape(image)[1], tf.shape(image)[2]
    transform = affine_matrices(params["angle"], params["scale"], params["shift_x"], params["shift_y"], height, width)
    mask = tf.cast(mask, tf.float32)
    weight = tf.cast(weight, tf.float32)
    image = ops.image.affine_transform(image, transform, interpolation="bilinear", fill_mode="constant", fill_value=0.0)
    # Mask and weight in one channel and one call, so both come from the same source pixel: weights are
    # positive by construction (eq. 6), so the sign can carry the mask and the fill 0 marks exactly the pixels
    # brought in from outside. (Half the CPU time of resampling a stacked (mask, weight) pair.)
    signed = tf.where(mask > 0, weight, -weight)[..., None]
    moved = ops.image.affine_transform(
        signed, transform, interpolation="nearest", fill_mode="constant", fill_value=0.0
    )[..., 0]
    bg = background_weight(mask, weight)
    new_mask = tf.cast(moved > 0, tf.float32)
    new_weight = tf.where(tf.equal(moved, 0.0), bg[:, None, None], tf.abs(moved))
    return image, new_mask, new_weight


def _gaussian(image, sigma, max_sigma):
    """Separable Gaussian blur, one sigma per example, with reflected borders (zero padding darkens edges).

    Args:
        image: float32 `(batch, H, W, 1)`.
        sigma: `(batch,)`, sigmas as fractions of the larger image side.
        max_sigma: The largest possible sigma (Python float, same unit): sets the kernel's radius.

    Computed as weighted sums of shifted slices: on CPU they are several times faster than TensorFlow's
    convolutions of a one-channel image with a `(k, 1)` kernel (what `keras.ops.image.gaussian_blur` and
    `keras.ops.conv` run; docs/benchmarks.md, "Measurements behind implementation choices"), with the same
    result to 2e-7; and the sums take a different kernel per example at no extra cost.
    """
    import tensorflow as tf

    height, width = image.shape[1], image.shape[2]
    side = max(height, width)
    radius = max(1, min(math.ceil(round(3 * max_sigma * side, 6)), height - 1, width - 1))  # 3 sigma
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    taps = tf.exp(-0.5 * tf.square(offsets[None, :] / (sigma[:, None] * side)))  # (batch, 2 * radius + 1)
    taps = taps / tf.reduce_sum(taps, axis=1, keepdims=True)
    padded = tf.pad(image, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    k = 2 * radius + 1
    rows = tf.add_n([taps[:, i, None, None, None] * padded[:, i : i + height, :, :] for i in range(k)])
    return tf.add_n([taps[:, i, None, None, None] * rows[:, :, i : i + width, :] for i in range(k)])


def transform_intensity(aug, image, params, seed):
    """Noise, blur/unsharp masking, gamma, contrast and brightness on the image only; clipped to [0, 1].

    Args:
        aug: `Augmentation` (transforms that are off are left out of the graph).
        image: float32 `(batch, H, W, 1)` in [0, 1].
        params: dict from `draw_parameters`.
        seed: int64 scalar tensor for the noise field.

    Returns:
        float32 image of the same shape in [0, 1].
    """
    import tensorflow as tf

    def per_example(v):
        return v[:, None, None, None]

    if aug.noise > 0:
        noise = tf.random.stateless_normal(tf.shape(image), seed=tf.stack([seed, tf.constant(_NOISE_SALT, tf.int64)]))
        image = image + per_example(params["noise"]) * noise
    if aug.blur > 0 or aug.sharpen > 0:
        blurred = _gaussian(image, params["sigma"], aug.unsharp_sigma[1])
        image = image + per_example(params["amount"]) * (image - blurred)
    image = tf.clip_by_value(image, 0.0, 1.0)
    if aug.gamma > 0:
        image = tf.pow(image, per_example(params["gamma"]))
    if aug.contrast > 0:
        mean = tf.reduce_mean(image, axis=[1, 2, 3], keepdims=True)
        image = (image - mean) * per_example(params["contrast"]) + mean
    if aug.brightness > 0:
        image = image + per_example(params["brightness"])
    return tf.clip_by_value(image, 0.0, 1.0)


def augment_batch(aug, coins, image, mask, weight, full_scale):
    """Augments one training batch as stored: flip, geometry, intensity.

    Args:
        aug: `Augmentation`.
        coins: int64 `(batch,)`, the examples' random integers (the flip is the lowest bit).
        image: `(batch, H, W, 1)` as stored (uint8 or uint16).
        mask: `(batch, H, W)` uint8.
        weight: `(batch, H, W)` float.
        full_scale: The stored full-scale value (255 or 65535).

    Returns:
        `(image, mask, weight)`: image float32 `(batch, H, W, 1)` in [0, 1]; mask and weight `(batch, H, W)`
        (float32 when geometric or intensity transforms ran, else as stored).
    """
    import tensorflow as tf

    if aug.flip:  # on the stored dtypes: exact and cheaper than after casting
        flips = tf.equal(coins % 2, 1)
        image = tf.where(flips[:, None, None, None], tf.reverse(image, axis=[2]), image)
        mask = tf.where(flips[:, None, None], tf.reverse(mask, axis=[2]), mask)
        weight = tf.where(flips[:, None, None], tf.reverse(weight, axis=[2]), weight)
    image = tf.cast(image, tf.float32) / full_scale
    if not (aug.geometric or aug.intensity):
        return image, mask, weight
    seed = coins[0]
    params = draw_parameters(aug, seed, tf.shape(coins)[0])
    if aug.geometric:
        image, mask, weight = transform_geometry(image, mask, weight, params)
    if aug.intensity:
        image = transform_intensity(aug, image, params, seed)
    return image, mask, weight
