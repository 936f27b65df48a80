"""Bad inputs users meet: non-finite and constant images, manifest errors under skip_bad, and messages
that must name the right file, path or option (issue 13)."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from ptx_keras.data.prepare import load_prepared_info, prepare_dataset
from ptx_keras.errors import DataError

SIZE = 16


def _folder(root, n=6, size=24):
    """`n` random uint8 images; the odd ones have a rectangular pneumothorax mask (the others no mask file)."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size)).astype(np.uint8)).save(os.path.join(root, "images", f"s{i}.png"))
        if i % 2:
            mask = np.zeros((size, size), np.uint8)
            mask[4:12, 6:14] = 255
            Image.fromarray(mask).save(os.path.join(root, "masks", f"s{i}.png"))
    return root


def _float_tiff(path, special, count=1):
    """A float32 TIFF (ramp in [0, 1]) with `count` pixels set to `special` (NaN, inf or -inf)."""
    image = np.linspace(0, 1, 24 * 24, dtype=np.float32).reshape(24, 24)
    image.flat[:count] = special
    Image.fromarray(image, mode="F").save(path)
    return str(path)


def _prepare(source, out, **kwargs):
    return prepare_dataset(str(source), str(out), image_size=SIZE, workers=1, progress=False, **kwargs)


# --- 1. Non-finite and constant images ----------------------------------------------------------------------


@pytest.mark.parametrize("special, fragment", [(np.nan, "2 NaN and 0 infinite"), (np.inf, "0 NaN and 2 infinite")])
def test_preparation_refuses_a_non_finite_image_and_skips_it_with_skip_bad(tmp_path, special, fragment):
    src = _folder(str(tmp_path / "src"))
    bad = _float_tiff(tmp_path / "src" / "images" / "float.tif", special, count=2)
    with pytest.raises(DataError, match=fragment) as info:
        _prepare(src, tmp_path / "out")
    assert bad in str(info.value) and "skip-bad" in str(info.value)
    summary = _prepare(src, tmp_path / "out2", skip_bad=True)
    listed = load_prepared_info(str(tmp_path / "out2"))["bad_samples"]
    assert [b["file"] for b in listed] == [bad] and fragment in listed[0]["reason"]
    assert summary["counts"]["all"]["total"] == 6


def test_preparation_warns_about_a_constant_image(tmp_path, caplog):
    src = _folder(str(tmp_path / "src"))
    blank = os.path.join(src, "images", "blank.png")
    Image.fromarray(np.full((24, 24), 7, np.uint8)).save(blank)
    with caplog.at_level(logging.WARNING):
        summary = _prepare(src, tmp_path / "out")
    assert summary["counts"]["all"]["total"] == 7  # kept: constant is legal, only suspicious
    warned = [r.getMessage() for r in caplog.records if "constant image" in r.getMessage()]
    assert len(warned) == 1 and blank in warned[0]
