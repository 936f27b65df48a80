"""One sample's prepared arrays: the image and mask resized to the prepared size, and the weight map of eq. 6.

Decisions (docs/data.md):

* **Aspect ratio.** Images are resized to a square without padding or cropping, as the paper feeds a fixed
  256x256 input; chest radiographs are close to square (SIIM-ACR is 1024x1024), so the distortion of other
  sources is small.
* **Resampling.** Images: Pillow's antialiased bilinear filter (its support widens with the reduction
  factor), computed in float32 on the original values and rounded once to the output bit depth, so a
  source already at the prepared size comes through bit-exactly. Masks: the area fraction of each output
  pixel (box filter) thresholded at 0.5, so they stay binary and the pneumothorax keeps its area.
* **Bit depth.** `bit_depth=8` scales the range the source type can take (`LoadedSample.meta["value_max"]`,
  else `2**bits_stored - 1`; `[0, 1]` for float images) onto `[0, 255]`; `bit_depth=16` onto `[0, 65535]`
  (a 16-bit PNG is kept as it is, a 12-bit DICOM is stretched to the full range).
* **Weight maps.** Computed from the resized mask (`spatial_weight_map`) and kept exact in float32;
  `weight_dtype="float16"` is an opt-in that clamps at 65,504.
"""

import io

import numpy as np
from PIL import Image

from ptx_keras import constants
from ptx_keras.errors import DataError

__all__ = [
    "FLOAT16_MAX",
    "MASK_AREA_THRESHOLD",
    "PNG_COMPRESS_LEVEL",
    "png_bytes",
    "prepare_arrays",
    "resize_image",
    "resize_mask",
]


FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65,504
# zlib level 1: slightly larger shards than Pillow's default 6, encoded several times faster (docs/benchmarks.md).
PNG_COMPRESS_LEVEL = 1
# Area fraction at which a resized mask pixel counts as pneumothorax (float32 sums of 1/k may land a hair
# below an exact 0.5, hence the tolerance).
MASK_AREA_THRESHOLD = 0.5 - 1e-6


def resize_image(image, size, value_max=None, bit_depth=constants.IMAGE_BIT_DEPTH):
    """Resizes a grayscale image to `size x size` and converts it to `bit_depth` bits.

    `[0, value_max]` is mapped onto `[0, 2**bit_depth - 1]` after resampling, with a single rounding.

    Args:
        image: 2-D array `(height, width)`, uint8, uint16 or float.
        size: Output height and width.
        value_max: The largest value the input type can take (a 12-bit DICOM: 4095); default 255 for
            uint8, 65535 for uint16 and 1.0 for floats.
        bit_depth: 8 or 16, the output depth.

    Returns:
        uint8 (`bit_depth=8`) or uint16 array `(size, size)`.
    """
    image = np.asarray(image)
    if value_max is None:
        value_max = float(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1.0
    pixels = image.astype(np.float32)
    if pixels.shape != (size, size):
        pixels = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))
    out_max = float(2**bit_depth - 1)
    if float(value_max) != out_max:
        pixels = pixels * np.float32(out_max / float(value_max))
    return np.clip(np.rint(pixels), 0, out_max).astype(np.uint8 if bit_depth == 8 else np.uint16)


def resize_mask(mask, size):
    """Resizes a binary mask to `size x size`: a pixel is set when at least half its area is.

    Args:
        mask: 2-D array `(height, width)`, bool or 0/1.
        size: Output height and width.

    Returns:
        bool array `(size, size)`.
    """
    mask = np.asarray(mask).astype(bool)
    height, width = mask.shape
    if (height, width) == (size, size):
        return mask.copy()
    if height % size == 0 and width % size == 0:
        # Whole blocks (1024 -> 256): count the pixels of each block exactly, faster than resampling.
        fy, fx = height // size, width // size
        counts = mask.reshape(size, fy, size, fx).sum(axis=(1, 3), dtype=np.int32)
        return 2 * counts >= fy * fx
    return _box_fraction(mask, size) >= MASK_AREA_THRESHOLD


def _box_fraction(mask, size):
    """The fraction of each output pixel's area covered by `mask` (Pillow's box filter)."""
    return np.asarray(Image.fromarray(mask.astype(np.float32)).resize((size, size), Image.Resampling.BOX))


def png_bytes(array):
    """PNG-encodes a 2-D uint8 or uint16 array (grayscale, 8 or 16 bit)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def prepare_arrays(loaded, image_size, bit_depth, boundary_width, normalize, clip, weight_dtype):
    """Resizes a loaded sample and computes its weight map from the resized mask.

    Args:
        loaded: A `LoadedSample`.
        image_size, bit_depth, boundary_width, normalize, clip, weight_dtype: As in `prepare_dataset`.

    Returns:
        `(image, mask, weight)`: uint8/uint16 `(size, size)`, uint8 0/1 `(size, size)`, `weight_dtype`
        `(size, size)`.

    Raises:
        DataError: if the image is not 2-D, is empty or the mask does not have the image's shape.
    """
    from ptx_keras.data.weight_maps import spatial_weight_map

    image = np.asarray(loaded.image)
    mask = np.asarray(loaded.mask)
    if image.ndim != 2 or image.size == 0:
        raise DataError(f"image must be a non-empty 2-D grayscale array. Received: shape={image.shape}")
    if mask.shape != image.shape:
        raise DataError(f"mask shape {mask.shape} differs from image shape {image.shape}")
    resized_mask = resize_mask(mask, image_size)
    weight = spatial_weight_map(resized_mask, boundary_width=boundary_width, normalize=normalize, clip=clip)
    value_max = loaded.meta.get("value_max")
    if value_max is None and np.issubdtype(image.dtype, np.integer):
        value_max = 2 ** int(loaded.bits_stored) - 1
    return (
        resize_image(image, image_size, value_max, bit_depth),
        resized_mask.astype(np.uint8),
        _cast_weights(weight, weight_dtype),
    )


def _cast_weights(weight, weight_dtype):
    """Casts a weight map for storage; float16 saturates at its largest finite value instead of becoming inf.

    float32 (the default) holds every weight exactly. float16 does not: |N|/|B| exceeds its 65,504 for a
    pneumothorax of one pixel at 256 x 256, of 5 pixels at 512 and of about 21 at 1024; such maps are stored
    saturated, and `prepare_dataset` warns and lists them in `dataset.json` (`weights_saturated_float16`).
    """
    dtype = np.dtype(weight_dtype)
    if dtype == np.float16:
        weight = np.minimum(weight, FLOAT16_MAX)
    return weight.astype(dtype)
