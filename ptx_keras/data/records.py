"""The contract between source readers and data preparation.

A reader turns a source (folder, CSV, SIIM-ACR, phantoms) into a list of `SampleRecord`s: small, picklable
descriptions that preparation workers load in parallel with `load_sample(record)` (in
`ptx_keras.data.readers`), which returns a `LoadedSample`.
"""

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

__all__ = ["LoadedSample", "SampleRecord"]


@dataclass(frozen=True)
class SampleRecord:
    """One sample of a source, before loading.

    Attributes:
        sample_id: Unique id within the source (file stem or SIIM ImageId).
        image_path: Absolute path of the image (PNG/JPEG/DICOM).
        kind: How to read the image: `"image"` (PNG/JPEG via Pillow) or `"dicom"`.
        mask_path: Absolute path of the mask image, or None (no mask file: negative unless `rle` is set).
        rle: SIIM-ACR run-length strings for this image (unioned), `()` for a negative, None if unused.
        mask_size: `(height, width)` the RLE refers to (SIIM-ACR: 1024 x 1024), None if unused.
        label: 1 pneumothorax, 0 none; None if it has to be read from the mask.
        group: Patient-level grouping key for the split (None: each sample is its own group).
        split: A split given by the source (`"train"`, `"val"`, `"test"`), or None.
        source: The file that described this sample (CSV, RLE file or folder), for error messages.
    """

    sample_id: str
    image_path: str
    kind: str = "image"
    mask_path: Optional[str] = None
    rle: Optional[tuple[str, ...]] = None
    mask_size: Optional[tuple[int, int]] = None
    label: Optional[int] = None
    group: Optional[str] = None
    split: Optional[str] = None
    source: Optional[str] = None


@dataclass
class LoadedSample:
    """A loaded sample at its native resolution.

    Attributes:
        sample_id: As in the record.
        image: 2-D array `(height, width)`, uint8, uint16 or float32, grayscale, display-ready (MONOCHROME1
            already inverted: higher values are brighter).
        mask: 2-D bool array `(height, width)`, same shape as `image`.
        label: 1 if the mask has any pixel (or the source said so), else 0.
        spacing: `(row_mm, col_mm)` pixel spacing when known (DICOM PixelSpacing), else None.
        bits_stored: Significant bits of the image (8 for 8-bit PNG, DICOM BitsStored).
        meta: Free-form extra metadata (strings and numbers only).
    """

    sample_id: str
    image: np.ndarray
    mask: np.ndarray
    label: int
    spacing: Optional[tuple[float, float]] = None
    bits_stored: int = 8
    meta: dict = field(default_factory=dict)
