"""Training-time augmentation: image, mask and weight map stay aligned; intensity leaves the targets alone."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from ptx_keras.data.augment import (
    PARAMETERS,
    PRESETS,
    Augmentation,
    affine_matrices,
    as_augmentation,
    augment_batch,
    draw_parameters,
    transform_geometry,
    transform_intensity,
)
from ptx_keras.data.weight_maps import spatial_weight_map

SIZE = 32
BRIGHT = 200  # stored value of the square (uint8); the background is 20


def _square_case(top=6, left=9, height=10, width=7):
    """A bright off-centre rectangle, its mask and its eq. 6 weight map (three distinct weight levels)."""
    image = np.full((SIZE, SIZE), 20, np.uint8)
    image[top : top + height, left : left + width] = BRIGHT
    mask = (image == BRIGHT).astype(np.uint8)
    weight = spatial_weight_map(mask).astype(np.float32)
    return image, mask, weight


def _batch(*cases):
    images = np.stack([c[0] for c in cases])[..., None]
    masks = np.stack([c[1] for c in cases])
    weights = np.stack([c[2] for c in cases])
    return tf.constant(images), tf.constant(masks), tf.constant(weights)


def _geometry(angle=0.0, scale=1.0, shift_x=0.0, shift_y=0.0, n=1):
    return {
        k: tf.constant([v] * n, tf.float32)
        for k, v in dict(angle=angle, scale=scale, shift_x=shift_x, shift_y=shift_y).items()
    }


def _move(case, **geometry):
    image, mask, weight = _batch(case)
    image = tf.cast(image, tf.float32) / 255.0
    out_image, out_mask, out_weight = transform_geometry(image, mask, weight, _geometry(**geometry))
    return np.asarray(out_image)[0, ..., 0], np.asarray(out_mask)[0], np.asarray(out_weight)[0]


def _levels(mask, weight):
    """The map's values: plain background, plain pneumothorax, and the boundary band's levels."""
    bg = weight[mask == 0].min()
    fg = weight[mask == 1].min()
    return bg, fg


def _forward(point, angle, scale, shift_x, shift_y):
    """Where an input point (x, y) lands: c + scale * R(angle) (p - c) + t (inverse of `affine_matrices`)."""
    c = (SIZE - 1) / 2.0
    t = math.radians(angle)
    x, y = point[0] - c, point[1] - c
    return (
        c + scale * (math.cos(t) * x - math.sin(t) * y) + shift_x * SIZE,
        c + scale * (math.sin(t) * x + math.cos(t) * y) + shift_y * SIZE,
    )


def _contour4(mask):
    """Pneumothorax pixels with a background pixel among their 4 neighbours (inside the image)."""
    padded = np.pad(mask, 1, constant_values=1)
    up, down, left, right = padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]
    return (mask == 1) & ((up == 0) | (down == 0) | (left == 0) | (right == 0))


# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------
def test_presets_overrides_and_the_paper_default():
    assert Augmentation() == Augmentation.from_preset("flip") == as_augmentation(None)
    assert Augmentation().flip and not Augmentation().geometric and not Augmentation().intensity
    assert not Augmentation.from_preset("none").enabled
    std = Augmentation.from_preset("standard", rotation=5, noise=None)
    assert std.rotation == 5.0 and std.noise == PRESETS["standard"]["noise"] and std.geometric and std.intensity
    assert as_augmentation({"preset": "strong", "flip": False}) == Augmentation.from_preset("strong", flip=False)
    assert as_augmentation("standard") == Augmentation.from_preset("standard")
    assert set(Augmentation().to_dict()) == set(PARAMETERS)
    for preset in PRESETS.values():  # every preset is valid and names every parameter
        assert set(preset) == set(PARAMETERS) and Augmentation(**preset)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(preset="heavy"), r"preset must be one of \['none', 'flip', 'standard', 'strong'\]"),
        (dict(rotaton=5), r"Unknown augmentation parameter\(s\) \['rotaton'\]; valid: flip, rotation"),
        (dict(rotation=90), r"rotation must be a number in \[0, 45\].*rotation=90"),
        (dict(scale=-0.1), r"scale must be a number in \[0, 1\]"),
        (dict(noise=float("nan")), r"noise must be a number"),
        (dict(contrast=True), r"contrast must be a number"),
        (dict(flip="yes"), r"flip must be true or false"),
        (dict(unsharp_sigma=0.01), r"unsharp_sigma must be two numbers low <= high in \[0.001, 0.05\]"),
        (dict(unsharp_sigma=(0.02, 0.01)), r"unsharp_sigma must be two numbers low <= high"),
        (dict(unsharp_sigma=(0.01, 0.2)), r"unsharp_sigma must be two numbers low <= high"),
    ],
)
def test_invalid_augmentation_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Augmentation.from_preset(**kwargs)


def test_as_augmentation_refuses_other_types():
    with pytest.raises(ValueError, match="augment must be"):
        as_augmentation(3)


# ---------------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------------
def test_affine_matrix_hand_computed():
    # 90 degrees on a 5 x 5 image: the output pixel (x=4, y=2) samples the input at
    # c + R(-90)(p - c) = (2, 2) + [[0, 1], [-1, 0]] (2, 0) = (2, 0).
    m = affine_matrices(tf.constant([90.0]), tf.constant([1.0]), tf.constant([0.0]), tf.constant([0.0]), 5, 5)
    a0, a1, a2, b0, b1, b2, c0, c1 = np.asarray(m)[0]
    np.testing.assert_allclose([a0 * 4 + a1 * 2 + a2, b0 * 4 + b1 * 2 + b2], [2.0, 0.0], atol=1e-6)
    assert c0 == c1 == 0
    # Zoom 2 with a shift of a quarter of the width: input = c + (p - c - t) / 2.
    m = affine_matrices(tf.constant([0.0]), tf.constant([2.0]), tf.constant([0.25]), tf.constant([0.0]), 8, 8)
    a0, a1, a2, b0, b1, b2, _, _ = np.asarray(m)[0]
    x, y = 7.0, 1.0
    np.testing.assert_allclose(
        [a0 * x + a1 * y + a2, b0 * x + b1 * y + b2], [3.5 + (x - 3.5 - 2.0) / 2, 3.5 + (y - 3.5) / 2], atol=1e-6
    )


def test_translation_moves_image_mask_and_weight_by_the_same_pixels():
    image, mask, weight = _square_case()
    out_image, out_mask, out_weight = _move((image, mask, weight), shift_x=4 / SIZE, shift_y=-2 / SIZE)
    bg = _levels(mask, weight)[0]

    def shifted(a, fill):  # 4 px right, 2 px up; what comes in from outside gets `fill`
        out = np.full_like(a, fill, dtype=np.float32)
        out[: SIZE - 2, 4:] = a[2:, : SIZE - 4]
        return out

    np.testing.assert_array_equal(out_image, shifted(image / np.float32(255.0), 0.0))  # integer shift: exact
    np.testing.assert_array_equal(out_mask, shifted(mask, 0))
    np.testing.assert_array_equal(out_weight, shifted(weight, bg))
    assert bg == pytest.approx(SIZE * SIZE / (SIZE * SIZE - 70))  # |N| / |T_background| of eq. 6


@pytest.mark.parametrize("angle", [7.0, 30.0, -45.0])
def test_rotation_keeps_mask_on_the_bright_pixels_and_the_ring_on_its_edge(angle):
    image, mask, weight = _square_case()
    out_image, out_mask, out_weight = _move((image, mask, weight), angle=angle)
    _check_moved(image, mask, weight, out_image, out_mask, out_weight, angle=angle, scale=1.0)


@pytest.mark.parametrize("scale", [0.85, 1.2])
def test_zoom_keeps_mask_on_the_bright_pixels_and_the_ring_on_its_edge(scale):
    image, mask, weight = _square_case()
    out_image, out_mask, out_weight = _move((image, mask, weight), scale=scale)
    _check_moved(image, mask, weight, out_image, out_mask, out_weight, angle=0.0, scale=scale)
    assert out_mask.sum() == pytest.approx(mask.sum() * scale**2, rel=0.15)


def _check_moved(image, mask, weight, out_image, out_mask, out_weight, angle, scale):
    bg, fg = _levels(mask, weight)
    # The mask stays binary and every (mask, weight) pair is one the input had (same source pixel), or the
    # background fill.
    assert set(np.unique(out_mask)) <= {0.0, 1.0} and out_mask.sum() > 0
    pairs_in = set(zip(mask.ravel().tolist(), weight.ravel().tolist())) | {(0, float(bg))}
    assert set(zip(out_mask.ravel().astype(int).tolist(), out_weight.ravel().tolist())) <= pairs_in
    # The mask is where the bright pixels went: they differ only along the edge (bilinear vs nearest).
    bright = out_image > (20 + BRIGHT) / 2 / 255
    assert np.sum(bright != (out_mask == 1)) <= 0.25 * _contour4(out_mask).sum()
    # ... and where the geometry sends the rectangle: its centroid lands where the forward map says.
    ys, xs = np.nonzero(mask)
    expected = _forward((xs.mean(), ys.mean()), angle, scale, 0.0, 0.0)
    ys, xs = np.nonzero(out_mask)
    np.testing.assert_allclose((xs.mean(), ys.mean()), expected, atol=0.5)
    # The boundary ring sits on the mask's edge: every edge pixel of the moved mask has a boundary weight
    # (inside the pneumothorax the band's weight exceeds the plain pneumothorax weight) ...
    edge = _contour4(out_mask)
    assert np.all(out_weight[edge] > fg)
    # ... and every band pixel is near the edge (the band is 3 pixels wide; zooming widens it by `scale`).
    band = ((out_mask == 1) & (out_weight > fg)) | ((out_mask == 0) & (out_weight > bg))
    distance = ndimage.distance_transform_cdt(~edge, metric="chessboard")
    assert distance[band].max() <= math.ceil(2 * max(scale, 1.0))


def test_identity_geometry_changes_nothing():
    image, mask, weight = _square_case()
    out_image, out_mask, out_weight = _move((image, mask, weight))
    np.testing.assert_array_equal(out_image, image / np.float32(255.0))
    np.testing.assert_array_equal(out_mask, mask)
    np.testing.assert_array_equal(out_weight, weight)


def test_fill_weight_of_a_negative_image_is_one_and_of_a_normalised_map_is_its_background():
    image = np.zeros((SIZE, SIZE), np.uint8)
    negative = (image, image.copy(), spatial_weight_map(image).astype(np.float32))
    _, m, w = _move(negative, angle=30.0, scale=0.8)
    assert np.all(m == 0) and np.all(w == 1.0)
    square = _square_case()
    normalised = spatial_weight_map(square[1], normalize="mean").astype(np.float32)
    _, m, w = _move((square[0], square[1], normalised), shift_x=0.25)
    outside = np.zeros((SIZE, SIZE), bool)
    outside[:, :8] = True
    np.testing.assert_array_equal(w[outside], normalised[square[1] == 0].min())


# ---------------------------------------------------------------------------------------------------------
# Intensity
# ---------------------------------------------------------------------------------------------------------
INTENSITY = ("noise", "blur", "sharpen", "gamma", "contrast", "brightness")


@pytest.mark.parametrize("name", INTENSITY + ("all",))
def test_intensity_changes_only_the_image(name):
    values = {k: PRESETS["strong"][k] for k in INTENSITY} if name == "all" else {name: PRESETS["strong"][name]}
    aug = Augmentation.from_preset("none", **values)
    assert aug.intensity and not aug.geometric and not aug.flip
    cases = [_square_case(), _square_case(top=3, left=2), _square_case(top=15, left=12, height=5, width=9)]
    image, mask, weight = _batch(*cases)
    coins = tf.constant([11, 12, 13], tf.int64)
    out_image, out_mask, out_weight = augment_batch(aug, coins, image, mask, weight, 255.0)
    # Bit-identical targets: same values and dtypes.
    assert out_mask.dtype == mask.dtype and out_weight.dtype == weight.dtype
    np.testing.assert_array_equal(out_mask, mask)
    np.testing.assert_array_equal(out_weight, weight)
    out_image = np.asarray(out_image)
    assert out_image.min() >= 0.0 and out_image.max() <= 1.0
    assert not np.array_equal(out_image, np.asarray(image) / np.float32(255.0))


def test_intensity_formulas_hand_computed():
    image = tf.constant(np.array([0.0, 0.25, 0.5, 1.0], np.float32).reshape(1, 2, 2, 1))
    params = {
        "gamma": tf.constant([2.0]),
        "contrast": tf.constant([0.5]),
        "brightness": tf.constant([0.1]),
        "noise": tf.constant([0.0]),
        "amount": tf.constant([0.0]),
    }
    seed = tf.constant(1, tf.int64)
    aug = Augmentation.from_preset("none", gamma=0.5)
    np.testing.assert_allclose(np.ravel(transform_intensity(aug, image, params, seed)), [0, 0.0625, 0.25, 1])
    aug = Augmentation.from_preset("none", contrast=0.5)  # mean 0.4375: (x - m) * 0.5 + m
    np.testing.assert_allclose(
        np.ravel(transform_intensity(aug, image, params, seed)), [0.21875, 0.34375, 0.46875, 0.71875], rtol=1e-6
    )
    aug = Augmentation.from_preset("none", brightness=0.2)
    np.testing.assert_allclose(np.ravel(transform_intensity(aug, image, params, seed)), [0.1, 0.35, 0.6, 1.0])


def test_blur_and_sharpen_keep_a_flat_image_flat_up_to_its_borders():
    """Reflected borders: a zero-padded Gaussian would darken the edges of a flat image."""
    image = tf.fill([2, 16, 16, 1], 0.6)
    params = {"amount": tf.constant([-1.0, 2.0]), "sigma": tf.constant([0.02, 0.05])}  # 0.3 and 0.8 px
    aug = Augmentation.from_preset("none", blur=1.0, sharpen=2.0, unsharp_sigma=(0.001, 0.05))
    out = transform_intensity(aug, image, params, tf.constant(0, tf.int64))
    np.testing.assert_allclose(out, 0.6, atol=1e-6)


def test_unsharp_masking_raises_edge_contrast_and_blur_lowers_it():
    step = np.zeros((1, 16, 16, 1), np.float32)
    step[:, 8:] = 1.0  # rows 8-15
    step = tf.constant(np.concatenate([step * 0.5 + 0.25] * 3))  # 0.25 | 0.75
    params = {"amount": tf.constant([0.0, -1.0, 1.0]), "sigma": tf.constant([0.05, 0.05, 0.05])}  # 0.8 px
    aug = Augmentation.from_preset("none", blur=1.0, sharpen=1.0, unsharp_sigma=(0.05, 0.05))
    out = np.asarray(transform_intensity(aug, step, params, tf.constant(0, tf.int64)))[..., 0]
    np.testing.assert_array_equal(out[0], np.asarray(step)[0, ..., 0])
    assert out[1, 7, 5] > 0.25 and out[1, 8, 5] < 0.75  # blurred: the edge softens
    assert out[2, 7, 5] < 0.25 and out[2, 8, 5] > 0.75  # sharpened: overshoot on both sides


# ---------------------------------------------------------------------------------------------------------
# Randomness
# ---------------------------------------------------------------------------------------------------------
def test_parameters_are_per_example_within_their_ranges_and_seeded():
    aug = Augmentation.from_preset("strong")
    p = {k: np.asarray(v) for k, v in draw_parameters(aug, tf.constant(5, tf.int64), 400).items()}
    assert np.abs(p["angle"]).max() <= 15 and np.unique(p["angle"]).size == 400
    assert 1 / 1.2 <= p["scale"].min() and p["scale"].max() <= 1.2
    assert np.abs(p["shift_x"]).max() <= 0.1 and np.abs(p["shift_y"]).max() <= 0.1
    assert 0 <= p["noise"].min() and p["noise"].max() <= 0.04
    assert -1.0 <= p["amount"].min() and p["amount"].max() <= 2.0
    assert 0.004 <= p["sigma"].min() and p["sigma"].max() <= 0.03
    assert 1 / 1.5 <= p["gamma"].min() and p["gamma"].max() <= 1.5
    # Zooming in and out equally likely (log-uniform), both directions of every range used.
    assert 0.4 < np.mean(p["scale"] > 1) < 0.6 and 0.4 < np.mean(p["angle"] > 0) < 0.6
    again = draw_parameters(aug, tf.constant(5, tf.int64), 400)
    other = draw_parameters(aug, tf.constant(6, tf.int64), 400)
    np.testing.assert_array_equal(again["angle"], p["angle"])
    assert not np.array_equal(other["angle"], p["angle"])
    off = draw_parameters(Augmentation.from_preset("none"), tf.constant(5, tf.int64), 4)
    identities = dict(angle=0, scale=1, shift_x=0, noise=0, amount=0, gamma=1, contrast=1, brightness=0)
    for key, identity in identities.items():
        np.testing.assert_array_equal(np.abs(off[key]), identity)


def test_same_coins_same_batch_other_coins_other_batch():
    aug = Augmentation.from_preset("strong")
    image, mask, weight = _batch(_square_case(), _square_case(top=3, left=2))
    a = augment_batch(aug, tf.constant([3, 8], tf.int64), image, mask, weight, 255.0)
    b = augment_batch(aug, tf.constant([3, 8], tf.int64), image, mask, weight, 255.0)
    c = augment_batch(aug, tf.constant([4, 8], tf.int64), image, mask, weight, 255.0)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_flip_is_the_lowest_bit_of_the_coin_and_moves_all_three():
    aug = Augmentation.from_preset("flip")
    image, mask, weight = _batch(_square_case(), _square_case())
    out = augment_batch(aug, tf.constant([6, 7], tf.int64), image, mask, weight, 255.0)
    np.testing.assert_array_equal(out[0][0, ..., 0], np.asarray(image)[0, ..., 0] / np.float32(255))
    np.testing.assert_array_equal(out[0][1, ..., 0], np.fliplr(np.asarray(image)[1, ..., 0]) / np.float32(255))
    np.testing.assert_array_equal(out[1][1], np.fliplr(np.asarray(mask)[1]))
    np.testing.assert_array_equal(out[2][1], np.fliplr(np.asarray(weight)[1]))


# ---------------------------------------------------------------------------------------------------------
# Configuration files (data.augment, data.flip)
# ---------------------------------------------------------------------------------------------------------
def test_config_section_names_every_parameter_and_defaults_to_the_paper():
    import dataclasses

    from ptx_keras.config import AugmentConfig, load_config

    assert [f.name for f in dataclasses.fields(AugmentConfig)] == ["preset"] + list(PARAMETERS)
    assert load_config().data.augmentation() == Augmentation.from_preset("flip")
    cfg = load_config(overrides=["data.augment={preset: standard, rotation: 5}"])
    assert cfg.data.augmentation() == Augmentation.from_preset("standard", rotation=5.0)


def test_older_flip_key_still_works(tmp_path):
    from ptx_keras.config import load_config

    old = tmp_path / "old.yaml"
    old.write_text("data: {flip: false}\n")  # a file written before data.augment existed
    assert load_config(str(old)).data.augmentation() == Augmentation.from_preset("none")
    cfg = load_config(str(old), ["data.augment.preset=standard"])
    assert cfg.data.augmentation() == Augmentation.from_preset("standard", flip=False)
    assert load_config(overrides=["data.flip=true", "data.augment.flip=true"]).data.augmentation().flip


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["data.augment.preset=heavy"], r"data.augment.preset must be one of \['none', 'flip', 'standard', 'strong'\]"),
        (
            ["data.augment.rotaton=5"],
            r"Unknown configuration key 'data.augment.rotaton'. Did you mean 'rotation'\? "
            r"Valid keys under data.augment: preset, flip, rotation",
        ),
        (["data.augment.scale=2"], r"data.augment.scale must be a number in \[0, 1\]"),
        (
            ["data.flip=false", "data.augment.flip=true"],
            r"data.flip=False \(the older name of data.augment.flip\) "
            r"contradicts data.augment.flip=True",
        ),
        (["data.augment=standard"], r"data.augment must be a mapping of keys"),
        (["data.positive_fraction=0"], r"data.positive_fraction must be null or in \(0, 1\)"),
        (["data.positive_fraction=1.5"], r"data.positive_fraction must be null or in \(0, 1\)"),
    ],
)
def test_config_errors_name_the_key(overrides, match):
    from ptx_keras.config import load_config
    from ptx_keras.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        load_config(overrides=overrides)


def test_gaussian_matches_a_numpy_reference_per_example_sigma():
    """Each example blurred with its own sigma: a reflected-border separable Gaussian computed in NumPy."""
    from ptx_keras.data.augment import _gaussian

    rng = np.random.default_rng(1)
    image = rng.random((2, 20, 20, 1)).astype(np.float32)
    sigmas = [0.05, 0.1]  # 1 and 2 px at 20 px
    out = np.asarray(_gaussian(tf.constant(image), tf.constant(sigmas), 0.1))
    radius = 6
    for b, sigma in enumerate(sigmas):
        x = np.arange(-radius, radius + 1)
        taps = np.exp(-0.5 * (x / (sigma * 20)) ** 2)
        taps /= taps.sum()
        padded = np.pad(image[b, ..., 0], radius, mode="reflect")
        rows = sum(t * padded[i : i + 20, :] for i, t in enumerate(taps))
        expected = sum(t * rows[:, i : i + 20] for i, t in enumerate(taps))
        np.testing.assert_allclose(out[b, ..., 0], expected, atol=1e-5)
