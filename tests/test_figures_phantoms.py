"""The phantom page figure: one panel per sample, contours on positives, captions, bad arguments."""

import numpy as np
import pytest
from PIL import Image

from ptx_keras.data.phantoms import generate_phantoms
from ptx_keras.figures.phantoms import plot_phantom_page


def test_page_has_a_captioned_panel_per_sample_and_contours_on_positives(tmp_path):
    samples = list(generate_phantoms(6, size=48, seed=0))
    path = tmp_path / "page" / "phantoms.png"
    figure = plot_phantom_page(samples, path, ncols=4)
    axes = figure.get_axes()
    assert len(axes) == 6
    for axis, (sample_id, _, mask, info) in zip(axes, samples):
        title = axis.get_title()
        assert title.startswith(sample_id)
        assert ("no pneumothorax" in title) != info["positive"]
        if info["positive"]:
            assert info["kind"] in title and info["size_class"] in title
        assert (len(axis.collections) > 0) == bool(mask.any())  # the contour
    width, height = Image.open(path).size
    assert width > height  # 4 columns, 2 rows


def test_page_draws_16_bit_images_in_their_full_range():
    samples = list(generate_phantoms(2, size=40, seed=1, bit_depth=16))
    figure = plot_phantom_page(samples, ncols=2)
    assert figure.get_axes()[0].get_images()[0].get_clim() == (0, 65535)


@pytest.mark.parametrize(
    "samples, ncols, match",
    [
        ([], 4, "samples=\\[\\]"),
        (None, 0, "ncols=0"),
        ([("x", np.zeros((8, 8), np.uint8), np.zeros((4, 4), bool), {"positive": False})], 1, "mask.shape"),
    ],
)
def test_page_rejects_bad_arguments(samples, ncols, match):
    if samples is None:
        samples = list(generate_phantoms(1, size=32))
    with pytest.raises(ValueError, match=match):
        plot_phantom_page(samples, ncols=ncols)


def test_style_page_shows_each_style_with_its_name(tmp_path):
    from ptx_keras.figures.phantoms import plot_phantom_styles

    path = tmp_path / "styles.png"
    figure = plot_phantom_styles(path, styles=("varied", "heldout"), per_style=2, size=48)
    titles = [axis.get_title() for axis in figure.get_axes()]
    assert len(titles) == 4
    assert [t.splitlines()[0].endswith("(varied)") for t in titles] == [True, True, False, False]
    assert all(t.splitlines()[0].endswith("(heldout)") for t in titles[2:])
    assert path.is_file()
    with pytest.raises(ValueError, match="Did you mean 'varied'"):
        plot_phantom_styles(styles=("varid",), per_style=1, size=32)
