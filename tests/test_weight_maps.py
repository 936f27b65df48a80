import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from ptx_keras.data import weight_maps as wm
from ptx_keras.data.weight_maps import boundary_mask, class_weight_map, spatial_weight_map, weight_map_terms
from ptx_keras.errors import DataError


def square_6x6():
    """6x6 image with a 2x2 pneumothorax at rows 2-3, columns 2-3."""
    mask = np.zeros((6, 6), np.uint8)
    mask[2:4, 2:4] = 1
    return mask


def test_square_default_width_hand_computed():
    mask = square_6x6()
    # |N| = 36, |T_ptx| = 4, |T_bg| = 32 -> w_ptx = 36/4 = 9, w_bg = 36/32 = 1.125.
    # Contour: all 4 PTX pixels have a background 8-neighbour. One cross dilation adds the 2 pixels above,
    # below, left and right of the square: |B| = 4 + 8 = 12 -> w_B = 36/12 = 3.
    expected = np.full((6, 6), 1.125, np.float32)
    expected[2:4, 2:4] = 9 + 3  # PTX and boundary
    for r, c in [(1, 2), (1, 3), (4, 2), (4, 3), (2, 1), (3, 1), (2, 4), (3, 4)]:
        expected[r, c] = 1.125 + 3  # background pixels inside the widened band
    weights = spatial_weight_map(mask)
    assert weights.dtype == np.float32 and weights.shape == (6, 6)
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    # Each present term sums to |N| over the image: mean = number of terms = 3 (4*12 + 8*4.125 + 24*1.125 = 108).
    assert weights.sum() == pytest.approx(108.0)
    assert weight_map_terms(mask) == {
        "pixels": 36,
        "ptx_pixels": 4,
        "boundary_pixels": 12,
        "background": 1.125,
        "ptx": 9.0,
        "boundary": 3.0,
    }


def test_square_width_zero_and_two():
    mask = square_6x6()
    # width 0: B = the 4 contour pixels -> w_B = 36/4 = 9; PTX = 9 + 9 = 18, background 1.125.
    expected0 = np.full((6, 6), 1.125, np.float32)
    expected0[2:4, 2:4] = 18
    np.testing.assert_allclose(spatial_weight_map(mask, boundary_width=0), expected0, rtol=1e-6)
    # width 2: B = pixels within city-block distance 2 of the square: 4 + 8 + 12 = 24 -> w_B = 36/24 = 1.5.
    band2 = boundary_mask(mask, boundary_width=2)
    rows, cols = np.mgrid[:6, :6]
    distance = np.maximum(np.maximum(2 - rows, rows - 3), 0) + np.maximum(np.maximum(2 - cols, cols - 3), 0)
    np.testing.assert_array_equal(band2, distance <= 2)
    assert band2.sum() == 24
    w2 = spatial_weight_map(mask, boundary_width=2)
    np.testing.assert_allclose(w2[2, 2], 9 + 1.5)
    np.testing.assert_allclose(w2[0, 2], 1.125 + 1.5)
    np.testing.assert_allclose(w2[0, 0], 1.125)


def test_empty_and_full_masks_give_ones():
    np.testing.assert_array_equal(spatial_weight_map(np.zeros((5, 7), np.uint8)), np.ones((5, 7), np.float32))
    # Full mask: |N|/|T_ptx| = 1, no background and (border is not background) no boundary.
    np.testing.assert_array_equal(spatial_weight_map(np.ones((5, 7), bool)), np.ones((5, 7), np.float32))
    assert not boundary_mask(np.ones((5, 7), bool)).any()
    np.testing.assert_array_equal(class_weight_map(np.zeros((3, 3))), np.ones((3, 3), np.float32))
    np.testing.assert_array_equal(spatial_weight_map(np.zeros((4, 4)), normalize="mean"), np.ones((4, 4)))


def test_mask_encodings_agree():
    mask = square_6x6()
    expected = spatial_weight_map(mask)
    for form in (
        mask.astype(bool),
        mask * 255,
        mask.astype(np.float32),
        (mask * 255).astype(np.float64),
        mask.astype(np.int64),
        mask.astype(np.uint16) * 255,
    ):
        np.testing.assert_array_equal(spatial_weight_map(form), expected)


def test_border_touching_mask():
    mask = np.zeros((4, 4), bool)
    mask[0:2, 0:2] = True
    # Pixels outside the image are not background, so (0, 0) is not a contour pixel: its in-image
    # neighbours are all PTX. Contour = (0,1), (1,0), (1,1).
    contour = np.zeros((4, 4), bool)
    contour[[0, 1, 1], [1, 0, 1]] = True
    np.testing.assert_array_equal(boundary_mask(mask, boundary_width=0), contour)
    # |N| = 16, |T_ptx| = 4, |T_bg| = 12 -> w_ptx = 4, w_bg = 4/3; |B| = 3 -> w_B = 16/3.
    w0 = spatial_weight_map(mask, boundary_width=0)
    assert w0[0, 0] == pytest.approx(4.0)
    assert w0[1, 1] == pytest.approx(4 + 16 / 3)
    assert w0[3, 3] == pytest.approx(4 / 3)
    # One cross dilation: the contour plus (0,0), (0,2), (1,2), (2,0), (2,1) -> |B| = 8, w_B = 2.
    band = boundary_mask(mask)
    expected_band = np.zeros((4, 4), bool)
    expected_band[[0, 0, 0, 1, 1, 1, 2, 2], [0, 1, 2, 0, 1, 2, 0, 1]] = True
    np.testing.assert_array_equal(band, expected_band)
    w1 = spatial_weight_map(mask)
    assert w1[0, 0] == pytest.approx(4 + 2)
    assert w1[2, 1] == pytest.approx(4 / 3 + 2)
    assert w1[2, 2] == pytest.approx(4 / 3)


def test_single_pixel():
    mask = np.zeros((5, 5), np.uint8)
    mask[2, 2] = 255
    # |N| = 25, |T_ptx| = 1 -> 25, |T_bg| = 24 -> 25/24; B = the pixel and its 4 cross neighbours -> 25/5 = 5.
    w = spatial_weight_map(mask)
    assert w[2, 2] == pytest.approx(25 + 5)
    for r, c in [(1, 2), (3, 2), (2, 1), (2, 3)]:
        assert w[r, c] == pytest.approx(25 / 24 + 5)
    assert w[1, 1] == pytest.approx(25 / 24)
    assert w[0, 0] == pytest.approx(25 / 24)
    # A single pixel in a corner: its contour is itself, the band is clipped by the image border.
    corner = np.zeros((3, 3), bool)
    corner[0, 0] = True
    assert boundary_mask(corner).sum() == 3
    # A 1-pixel-wide image works too.
    np.testing.assert_array_equal(boundary_mask(np.array([[0, 1, 1, 0]]), 0), [[False, True, True, False]])


def test_class_weight_map_is_eq6_without_boundary():
    mask = square_6x6()
    expected = np.where(mask == 1, 9.0, 1.125)
    np.testing.assert_allclose(class_weight_map(mask), expected, rtol=1e-7)
    assert class_weight_map(mask).dtype == np.float32


def test_normalize_and_clip():
    mask = square_6x6()
    # Raw terms: 12 (PTX), 4.125 (band background), 1.125; mean is 3 -> normalised 4, 1.375, 0.375.
    norm = spatial_weight_map(mask, normalize="mean")
    assert norm.mean() == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(np.unique(norm), [0.375, 1.375, 4.0], rtol=1e-6)
    # The clip applies after the normalisation.
    clipped = spatial_weight_map(mask, normalize="mean", clip=2.0)
    np.testing.assert_allclose(np.unique(clipped), [0.375, 1.375, 2.0], rtol=1e-6)
    clipped_raw = spatial_weight_map(mask, clip=5)
    np.testing.assert_allclose(np.unique(clipped_raw), [1.125, 4.125, 5.0], rtol=1e-6)
    assert clipped_raw.dtype == np.float32


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.zeros((2, 4, 4)), "2-D"),
        (np.zeros(4), "2-D"),
        (np.zeros((0, 4)), "empty"),
        (np.array([[0, 2], [2, 0]]), r"binary \(0/1 or 0/255\); found values \[0, 2\]"),
        (np.array([[0, 3, 7]]), r"found values \[0, 3, 7\]"),
        (np.array([[0, 1, 255]]), r"found values \[0, 1, 255\]"),
        (np.array([[0, -1]]), r"found values \[-1, 0\]"),
        (np.array([[0.0, 0.5, 1.0]]), r"found values \[0, 0.5, 1\]"),
        (np.array([[0.0, np.nan]]), "NaN"),
        (np.array([["a", "b"]]), "dtype"),
    ],
)
def test_refuses_bad_masks(mask, message):
    with pytest.raises(DataError, match=message):
        spatial_weight_map(mask)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"boundary_width": -1}, "boundary_width=-1"),
        ({"boundary_width": 1.5}, "boundary_width=1.5"),
        ({"boundary_width": True}, "boundary_width=True"),
        ({"normalize": "max"}, "normalize='max'"),
        ({"clip": 0}, "clip=0"),
        ({"clip": -2.0}, "clip=-2.0"),
        ({"clip": float("inf")}, "clip=inf"),
    ],
)
def test_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        spatial_weight_map(square_6x6(), **kwargs)


def test_boundary_mask_refuses_bad_width():
    with pytest.raises(ValueError, match="boundary_width=-2"):
        boundary_mask(square_6x6(), boundary_width=-2)


def test_matches_scipy_reference_on_random_masks():
    rng = np.random.default_rng(0)
    eight = np.ones((3, 3), bool)
    cross = ndi.generate_binary_structure(2, 1)
    for i in range(200):
        height, width = rng.integers(1, 24, size=2)
        mask = rng.random((height, width)) < rng.random()
        if i % 2:
            mask = ndi.binary_opening(mask)
        steps = int(rng.integers(0, 4))
        # Reference straight from the definition: contour via 8-neighbour erosion with the outside counted
        # as foreground (border_value=1), then `steps` cross dilations.
        reference = mask & ~ndi.binary_erosion(mask, eight, border_value=1)
        if steps:
            reference = ndi.binary_dilation(reference, cross, iterations=steps)
        np.testing.assert_array_equal(boundary_mask(mask, steps), reference)
        n = mask.size
        expected = np.zeros(mask.shape)
        for members in (mask, ~mask, reference):
            if members.any():
                expected += members * (n / members.sum())
        np.testing.assert_allclose(spatial_weight_map(mask, steps), expected, rtol=1e-6)


def test_large_mask_is_exact():
    rows, cols = np.mgrid[:512, :512]
    mask = ((rows - 200) / 150) ** 2 + ((cols - 300) / 80) ** 2 < 1
    mask[500:, :] = True  # a second region touching the border
    weights = spatial_weight_map(mask, boundary_width=2)
    # The mean of the raw map is the number of present terms (3), exactly up to float32 rounding.
    assert weights.mean(dtype=np.float64) == pytest.approx(3.0, rel=1e-5)
    terms = weight_map_terms(mask, boundary_width=2)
    assert terms["boundary_pixels"] == boundary_mask(mask, 2).sum()
    assert weights.max() == pytest.approx(terms["ptx"] + terms["boundary"], rel=1e-6)


def test_module_imports_no_tensorflow():
    code = (
        "import sys, ptx_keras.data.weight_maps, ptx_keras.data as d; d.spatial_weight_map; "
        "bad = [m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lazy_export_from_data_package():
    import ptx_keras.data as data

    assert data.spatial_weight_map is wm.spatial_weight_map
    assert data.boundary_mask is wm.boundary_mask
    assert data.class_weight_map is wm.class_weight_map
