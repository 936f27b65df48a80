"""SIIM-ACR run-length encoding: hand-written examples, round trips and malformed strings."""

import numpy as np
import pytest

from ptx_keras.data import rle_decode, rle_encode
from ptx_keras.errors import DataError


def _hand_mask():
    # 4 x 4 mask with pixels (row, col) = (1, 0), (2, 0), (1, 2).
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 0] = mask[2, 0] = mask[1, 2] = True
    return mask


# Column-major flat index = col * height + row: (1,0) -> 1, (2,0) -> 2, (1,2) -> 2*4+1 = 9.
# Run 1: start 1, offset 1 - 0 = 1, length 2 (pixels 1, 2), ends at 3.
# Run 2: start 9, offset 9 - 3 = 6, length 1.
HAND_RLE = "1 2 6 1"


def test_encode_hand_example():
    assert rle_encode(_hand_mask()) == HAND_RLE


def test_decode_hand_example():
    np.testing.assert_array_equal(rle_decode(HAND_RLE, 4, 4), _hand_mask())


def test_decode_is_column_major_on_non_square():
    # 2 rows x 3 cols; flat column-major index 3 is (row 1, col 1); index 4 is (row 0, col 2).
    # "3 2": offset 3, length 2 -> pixels 3 and 4.
    expected = np.array([[0, 0, 1], [0, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(rle_decode("3 2", 2, 3), expected)
    assert rle_encode(expected) == "3 2"


def test_first_and_last_pixel_runs():
    # 3 x 2 image: the whole first column is indices 0..2 (offset 0, length 3, ends at 3); pixel (2, 1)
    # is index 1*3 + 2 = 5 (offset 5 - 3 = 2, length 1).
    mask = np.array([[1, 0], [1, 0], [1, 1]], dtype=bool)
    assert rle_encode(mask) == "0 3 2 1"
    np.testing.assert_array_equal(rle_decode("0 3 2 1", 3, 2), mask)


@pytest.mark.parametrize("empty", ["-1", " -1", "", "   ", None, float("nan")])
def test_empty_values_decode_to_empty_mask(empty):
    out = rle_decode(empty, 5, 7)
    assert out.shape == (5, 7) and out.dtype == bool and not out.any()


def test_encode_empty_mask():
    assert rle_encode(np.zeros((8, 8), dtype=np.uint8)) == "-1"


def test_encode_full_mask():
    # One run from pixel 0 covering all 12 pixels.
    assert rle_encode(np.ones((3, 4), dtype=bool)) == "0 12"


@pytest.mark.parametrize("shape", [(1, 1), (4, 4), (7, 13), (64, 64), (128, 96)])
@pytest.mark.parametrize("density", [0.02, 0.5, 0.97])
def test_round_trip_random(shape, density):
    rng = np.random.default_rng([shape[0], shape[1], int(density * 100)])
    mask = rng.random(shape) < density
    np.testing.assert_array_equal(rle_decode(rle_encode(mask), *shape), mask)


def test_round_trip_1024_blobs():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:1024, :1024]
    mask = np.zeros((1024, 1024), dtype=bool)
    for _ in range(5):
        cy, cx, r = rng.integers(100, 900), rng.integers(100, 900), rng.integers(10, 120)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    np.testing.assert_array_equal(rle_decode(rle_encode(mask), 1024, 1024), mask)


def test_union_of_several_strings():
    a = np.zeros((6, 6), dtype=bool)
    b = np.zeros((6, 6), dtype=bool)
    a[0:2, 0] = True
    b[3:5, 4] = True
    union = rle_decode(rle_encode(a), 6, 6) | rle_decode(rle_encode(b), 6, 6)
    np.testing.assert_array_equal(union, a | b)


def test_encode_accepts_0_255_masks():
    mask = _hand_mask().astype(np.uint8) * 255
    assert rle_encode(mask) == HAND_RLE


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("1 2 6", "odd number"),
        ("1 2 x 1", "non-integer"),
        ("1.5 2", "non-integer"),
        ("-2 3", "negative offset"),
        ("1 -3", "negative run length"),
        ("10 7", "past the end"),  # 10 + 7 = 17 > 16 pixels
        ("0 16 0 1", "past the end"),
    ],
)
def test_malformed_rle_refused(bad, fragment):
    with pytest.raises(DataError, match=fragment):
        rle_decode(bad, 4, 4)


def test_error_names_origin():
    with pytest.raises(DataError, match="train-rle.csv row 3"):
        rle_decode("1 2 6", 4, 4, where="train-rle.csv row 3")


def test_run_ending_exactly_at_image_end_is_valid():
    out = rle_decode("15 1", 4, 4)
    assert out[3, 3] and out.sum() == 1


def test_invalid_arguments():
    with pytest.raises(ValueError, match="height"):
        rle_decode("1 1", 0, 4)
    with pytest.raises(ValueError, match="2-D"):
        rle_encode(np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match="string"):
        rle_decode(12, 4, 4)


def test_validate_counts_pixels_and_checks_extent():
    from ptx_keras.data.rle import rle_validate

    # "1 2 6 1": runs of 2 and 1 pixels -> 3 pixels; the last run ends at 1 + 2 + 6 + 1 = 10.
    assert rle_validate(HAND_RLE) == 3
    assert rle_validate(HAND_RLE, 4, 4) == 3
    assert rle_validate(" -1") == 0
    assert rle_validate("0 0") == 0
    with pytest.raises(DataError, match="past the end"):
        rle_validate(HAND_RLE, 3, 3)  # 10 > 9 pixels
    with pytest.raises(DataError, match="odd number"):
        rle_validate("1 2 3")
