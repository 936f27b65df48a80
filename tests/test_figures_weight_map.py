import numpy as np
import pytest
from PIL import Image

from ptx_keras.data.weight_maps import spatial_weight_map
from ptx_keras.figures.weight_map import plot_weight_map


def _sample(size=32):
    rng = np.random.default_rng(0)
    image = rng.random((size, size)).astype(np.float32)
    mask = np.zeros((size, size), np.uint8)
    mask[4:12, 6:14] = 1
    return image, mask, spatial_weight_map(mask)


def test_writes_png_with_three_panels_and_colorbar(tmp_path):
    image, mask, weights = _sample()
    path = tmp_path / "fig4.png"
    figure = plot_weight_map(image, mask, weights, path=path, title="phantom 0")
    # Three image panels plus the colorbar axis.
    assert len(figure.axes) == 4
    assert figure.axes[2].get_title().startswith("(c) spatial weight map (log scale)")
    assert figure._suptitle.get_text() == "phantom 0"
    colorbar_low, colorbar_high = figure.axes[3].get_ylim()
    assert colorbar_low == pytest.approx(weights.min()) and colorbar_high == pytest.approx(weights.max())
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (1200, 420)


def test_linear_scale_rgb_image_and_channel_axes():
    image, mask, _ = _sample()
    flat = np.ones(mask.shape, np.float32)  # a negative image: all ones, linear scale
    figure = plot_weight_map(np.repeat(image[..., None], 3, -1) * 255, mask[..., None], flat[..., None])
    assert "(linear scale)" in figure.axes[2].get_title()
    assert figure.axes[2].images[0].get_array().shape == mask.shape
    forced = plot_weight_map(image, mask, spatial_weight_map(mask), log_scale=False)
    assert "(linear scale)" in forced.axes[2].get_title()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image": np.zeros((2, 32, 32, 3))}, r"image must be .*Received: image.shape=\(2, 32, 32, 3\)"),
        ({"mask": np.zeros((32, 32, 2))}, r"mask must be \(height, width\)"),
        ({"weight_map": np.ones((16, 16))}, "same height and width"),
        ({"weight_map": np.zeros((32, 32))}, "finite, positive"),
        ({"weight_map": np.full((32, 32), np.nan)}, "finite, positive"),
    ],
)
def test_refuses_bad_inputs(change, message):
    image, mask, weights = _sample()
    args = {"image": image, "mask": mask, "weight_map": weights, **change}
    with pytest.raises(ValueError, match=message):
        plot_weight_map(**args)
