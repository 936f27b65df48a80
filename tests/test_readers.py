"""Source readers: images, masks, folder / CSV / SIIM-ACR layouts, auto-detection and sample loading."""

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ptx_keras.data import (
    discover_source,
    load_sample,
    read_csv_manifest,
    read_folder,
    read_image,
    read_mask,
    read_siim,
    rle_encode,
    write_dicom,
)
from ptx_keras.data.readers import SourceRecords
from ptx_keras.errors import DataError


def _image(shape=(16, 20), seed=0, dtype=np.uint8, high=256):
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(dtype)


def _mask(shape=(16, 20), box=(2, 6, 3, 9)):
    mask = np.zeros(shape, dtype=bool)
    r0, r1, c0, c1 = box
    mask[r0:r1, c0:c1] = True
    return mask


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    return path


def _save(path, array, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return str(path)


# --- read_image -------------------------------------------------------------------------------------------


def test_read_png_8bit(tmp_path):
    image = _image()
    out, info = read_image(_save(tmp_path / "a.png", image))
    assert out.dtype == np.uint8 and info["bits_stored"] == 8 and info["spacing"] is None
    np.testing.assert_array_equal(out, image)
    assert (info["rows"], info["cols"]) == (16, 20) and info["value_range"] == (0.0, 255.0)


def test_read_png_16bit(tmp_path):
    image = _image(dtype=np.uint16, high=65536)
    out, info = read_image(_save(tmp_path / "a16.png", image))
    assert out.dtype == np.uint16 and info["bits_stored"] == 16
    np.testing.assert_array_equal(out, image)


def test_read_jpeg(tmp_path):
    image = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    out, info = read_image(_save(tmp_path / "a.jpg", image, quality=95))
    assert out.dtype == np.uint8 and out.shape == (32, 32)
    assert np.abs(out.astype(float) - image).mean() < 3


def test_rgb_with_equal_channels_is_exact(tmp_path):
    image = _image()
    out, _ = read_image(_save(tmp_path / "g.png", np.stack([image] * 3, axis=-1)))
    np.testing.assert_array_equal(out, image)


def test_rgb_colour_converted_with_luma(tmp_path):
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)  # 0.299 * 255 = 76.2 -> 76
    rgb[0, 1] = (0, 255, 0)  # 0.587 * 255 = 149.7 -> 149 or 150
    rgb[1, 1] = (255, 255, 255)
    out, _ = read_image(_save(tmp_path / "c.png", rgb))
    assert out.shape == (2, 2)
    assert out[0, 0] == 76 and out[0, 1] in (149, 150) and out[1, 0] == 0 and out[1, 1] == 255


def test_palette_image_mapped_through_palette(tmp_path):
    palette_image = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), mode="P")
    palette_image.putpalette([10, 10, 10, 200, 200, 200] + [0, 0, 0] * 254)
    palette_image.save(tmp_path / "p.png")
    out, _ = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out, [[10, 200], [200, 10]])


def test_float_tiff_scaled_to_unit_range(tmp_path):
    values = np.array([[-2.0, 0.0], [2.0, 6.0]], dtype=np.float32)
    out, info = read_image(_save(tmp_path / "f.tif", values))
    # (x - (-2)) / (6 - (-2)): -2 -> 0, 0 -> 0.25, 2 -> 0.5, 6 -> 1.
    np.testing.assert_allclose(out, [[0, 0.25], [0.5, 1.0]])
    assert out.dtype == np.float32 and info["value_range"] == (0.0, 1.0)


@pytest.mark.parametrize(
    "specials, fragment",
    [
        ((np.nan,), "1 NaN and 0 infinite pixel\\(s\\) of 4"),
        ((np.inf, -np.inf), "0 NaN and 2 infinite"),
        ((np.nan, np.inf), "1 NaN and 1 infinite"),
    ],
)
def test_float_tiff_with_non_finite_pixels_refused(tmp_path, specials, fragment):
    # Scaling used to zero NaN and, with an infinity, the whole image: such an image has no intensities.
    values = np.array([[0.0, 0.5], [0.75, 1.0]], dtype=np.float32)
    values.flat[: len(specials)] = specials
    with pytest.raises(DataError, match="nonfinite.tif: " + fragment):
        read_image(_save(tmp_path / "nonfinite.tif", values))


@pytest.mark.parametrize("kind", ["png", "float tif", "dicom"])
def test_constant_image_read_with_a_warning_naming_it(tmp_path, caplog, kind):
    if kind == "dicom":
        path = str(tmp_path / "blank.dcm")
        write_dicom(path, np.zeros((8, 8), np.uint16), bits_stored=12)
    else:
        dtype = np.uint8 if kind == "png" else np.float32
        path = _save(tmp_path / ("blank.png" if kind == "png" else "blank.tif"), np.full((8, 8), 3, dtype))
    with caplog.at_level("WARNING", logger="ptx_keras.data.readers"):
        image, _ = read_image(path)
    assert image.shape == (8, 8)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert path in caplog.records[0].getMessage() and "constant image" in caplog.records[0].getMessage()
    caplog.clear()
    read_image(_save(tmp_path / "ramp.png", _image()))
    assert not caplog.records


def test_read_image_dicom_by_extension_and_magic(tmp_path):
    image = _image()
    write_dicom(tmp_path / "d.dcm", image, spacing=(0.2, 0.3))
    out, info = read_image(tmp_path / "d.dcm")
    np.testing.assert_array_equal(out, image)
    assert info["spacing"] == pytest.approx((0.2, 0.3))
    os.rename(tmp_path / "d.dcm", tmp_path / "noext")
    np.testing.assert_array_equal(read_image(tmp_path / "noext")[0], image)


def test_read_image_bad_files(tmp_path):
    path = _truncate(_save(tmp_path / "t.png", _image((64, 64))))
    with pytest.raises(DataError, match="t.png.*unreadable"):
        read_image(path)
    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(DataError, match="x.png.*not a readable image"):
        read_image(tmp_path / "x.png")
    with pytest.raises(DataError, match="none.png.*not found"):
        read_image(tmp_path / "none.png")


def test_read_image_multi_frame_refused(tmp_path):
    frames = [Image.fromarray(_image(seed=s)) for s in range(2)]
    frames[0].save(tmp_path / "two.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(DataError, match="two.tif: image has 2 frames"):
        read_image(tmp_path / "two.tif")


def test_read_image_truncated_dicom(tmp_path):
    path = _truncate(write_dicom(tmp_path / "t.dcm", _image((64, 64))))
    with pytest.raises(DataError, match="t.dcm"):
        read_image(path)


# --- read_mask --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, value", [(np.uint8, 1), (np.uint8, 255), (np.uint16, 1), (np.uint16, 65535), (np.uint16, 255)]
)
def test_read_mask_binary_encodings(tmp_path, dtype, value):
    mask = _mask()
    path = _save(tmp_path / "m.png", mask.astype(dtype) * dtype(value))
    np.testing.assert_array_equal(read_mask(path, expected_shape=(16, 20)), mask)


def test_read_mask_one_bit_and_empty(tmp_path):
    mask = _mask()
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "b.png", mask)), mask)
    assert not read_mask(_save(tmp_path / "e.png", np.zeros((4, 4), np.uint8))).any()


def test_read_mask_palette_uses_indices(tmp_path):
    palette_mask = Image.fromarray(np.array([[0, 1], [1, 1]], dtype=np.uint8), mode="P")
    palette_mask.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 254)
    palette_mask.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), [[False, True], [True, True]])


def test_read_mask_rgb_equal_channels_accepted_unequal_refused(tmp_path):
    mask = _mask().astype(np.uint8) * 255
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "g.png", np.stack([mask] * 3, -1))), mask > 0)
    colour = np.stack([mask, mask, np.zeros_like(mask)], -1)
    with pytest.raises(DataError, match="c.png.*colour mask"):
        read_mask(_save(tmp_path / "c.png", colour))


def test_read_mask_non_binary_lists_values(tmp_path):
    values = np.array([[0, 128], [255, 7]], dtype=np.uint8)
    with pytest.raises(DataError, match=r"nb.png.*not binary.*offending \[7, 128\]"):
        read_mask(_save(tmp_path / "nb.png", values))
    with pytest.raises(DataError, match=r"offending \[1, 255\]|offending \[0, 1, 255\]"):
        read_mask(_save(tmp_path / "mixed.png", np.array([[0, 1], [255, 0]], dtype=np.uint8)))


def test_read_mask_jpeg_hint(tmp_path):
    mask = _mask((32, 32), (5, 20, 7, 25)).astype(np.uint8) * 255
    with pytest.raises(DataError, match="JPEG is lossy"):
        read_mask(_save(tmp_path / "m.jpg", mask, quality=75))


def test_read_mask_shape_mismatch_names_both(tmp_path):
    path = _save(tmp_path / "m.png", _mask().astype(np.uint8))
    with pytest.raises(DataError, match=r"m.png.*\(16, 20\).*\(32, 32\)"):
        read_mask(path, expected_shape=(32, 32))


# --- read_folder ------------------------------------------------------------------------------------------


def _folder(tmp_path):
    root = tmp_path / "ds"
    _save(root / "images" / "a.png", _image(seed=1))
    _save(root / "masks" / "a.png", _mask().astype(np.uint8) * 255)
    _save(root / "images" / "b.jpg", _image(seed=2))
    _save(root / "masks" / "b_mask.png", _mask(box=(0, 3, 0, 3)).astype(np.uint8))
    _save(root / "images" / "c.png", _image(seed=3, dtype=np.uint16, high=4096))  # negative, no mask
    write_dicom(root / "images" / "d.dcm", _image(seed=4))
    _save(root / "masks" / "d.png", np.zeros((16, 20), np.uint8))
    (root / "images" / "notes.txt").write_text("ignored")
    return root


def test_read_folder(tmp_path):
    root = _folder(tmp_path)
    records = read_folder(root)
    assert isinstance(records, SourceRecords) and records.format == "folder"
    by_id = {r.sample_id: r for r in records}
    assert sorted(by_id) == ["a", "b", "c", "d"]
    assert by_id["a"].mask_path.endswith(os.path.join("masks", "a.png")) and by_id["a"].label is None
    assert by_id["b"].mask_path.endswith("b_mask.png")
    assert by_id["c"].mask_path is None and by_id["c"].label == 0
    assert by_id["d"].kind == "dicom" and by_id["a"].kind == "image"
    assert any("1 image(s) without a mask" in n for n in records.notes)
    assert any("non-image" in n for n in records.notes)
    loaded = {r.sample_id: load_sample(r) for r in records}
    assert loaded["a"].label == 1 and loaded["a"].mask.sum() == 4 * 6
    assert loaded["b"].label == 1 and loaded["b"].mask.sum() == 9
    assert loaded["c"].label == 0 and not loaded["c"].mask.any() and loaded["c"].image.dtype == np.uint16
    assert loaded["c"].bits_stored == 16
    assert loaded["d"].label == 0 and loaded["d"].image.shape == loaded["d"].mask.shape == (16, 20)


def test_read_folder_orphan_mask_refused(tmp_path):
    root = _folder(tmp_path)
    _save(root / "masks" / "zz.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="1 mask.*without an image.*zz"):
        read_folder(root)


def test_read_folder_layout_errors(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="masks/"):
        read_folder(tmp_path)
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no images"):
        read_folder(tmp_path)
    _save(tmp_path / "images" / "a.png", _image())
    _save(tmp_path / "images" / "a.jpg", _image())
    with pytest.raises(DataError, match="share the name 'a'"):
        read_folder(tmp_path)


def test_read_folder_ambiguous_masks_refused(tmp_path):
    _save(tmp_path / "images" / "a.png", _image())
    _save(tmp_path / "masks" / "a.png", np.zeros((16, 20), np.uint8))
    _save(tmp_path / "masks" / "a_mask.png", np.zeros((16, 20), np.uint8))
    with pytest.raises(DataError, match="two masks"):
        read_folder(tmp_path)


def test_load_sample_mask_size_mismatch_names_both_files(tmp_path):
    _save(tmp_path / "images" / "a.png", _image((16, 20)))
    _save(tmp_path / "masks" / "a.png", np.zeros((8, 8), np.uint8))
    (record,) = read_folder(tmp_path)
    with pytest.raises(DataError, match=r"masks.a\.png.*\(8, 8\).*\(16, 20\).*images.a\.png"):
        load_sample(record)


def test_load_sample_non_binary_mask(tmp_path):
    _save(tmp_path / "images" / "a.png", _image((2, 2)))
    _save(tmp_path / "masks" / "a.png", np.array([[0, 3], [0, 0]], np.uint8))
    (record,) = read_folder(tmp_path)
    with pytest.raises(DataError, match=r"not binary.*offending \[3\]"):
        load_sample(record)


def test_load_sample_truncated_image(tmp_path):
    _truncate(_save(tmp_path / "images" / "a.png", _image((64, 64))))
    (tmp_path / "masks").mkdir()
    (record,) = read_folder(tmp_path)
    with pytest.raises(DataError, match="a.png.*unreadable"):
        load_sample(record)


# --- read_csv_manifest ------------------------------------------------------------------------------------


def _csv(tmp_path, rows, name="manifest.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _csv_files(tmp_path):
    _save(tmp_path / "img" / "p1.png", _image(seed=1))
    _save(tmp_path / "img" / "n1.png", _image(seed=2))
    _save(tmp_path / "msk" / "p1.png", _mask().astype(np.uint8))
    _save(tmp_path / "msk" / "n1.png", np.zeros((16, 20), np.uint8))


def test_read_csv_manifest(tmp_path):
    _csv_files(tmp_path)
    path = _csv(
        tmp_path,
        {
            "image": ["img/p1.png", "img/n1.png", "img/n1.png"],
            "mask": ["msk/p1.png", "msk/n1.png", ""],
            "label": ["1", "0", ""],
            "split": ["train", "Validation", "test"],
            "patient_id": ["A", "B", "B"],
            "id": ["p1", "n1", "n1-copy"],
        },
    )
    records = read_csv_manifest(path)
    assert records.format == "csv" and [r.sample_id for r in records] == ["p1", "n1", "n1-copy"]
    assert [r.split for r in records] == ["train", "val", "test"]
    assert [r.group for r in records] == ["A", "B", "B"]
    assert [r.label for r in records] == [1, 0, 0]  # the row without mask or label is a negative
    assert records[2].mask_path is None
    assert records[0].image_path == str(tmp_path / "img" / "p1.png")
    assert load_sample(records[0]).mask.sum() == 4 * 6


def test_csv_ids_fall_back_to_relative_path_on_name_collision(tmp_path):
    _save(tmp_path / "pos" / "001.png", _image())
    _save(tmp_path / "neg" / "001.png", _image())
    records = read_csv_manifest(_csv(tmp_path, {"image": ["pos/001.png", "neg/001.png"]}))
    assert [r.sample_id for r in records] == ["pos__001", "neg__001"]
    records = read_csv_manifest(_csv(tmp_path, {"image": ["pos/001.png"]}, "one.csv"))
    assert records[0].sample_id == "001"


@pytest.mark.parametrize(
    "rows, fragment",
    [
        ({"image": ["img/p1.png", "img/missing.png"]}, r"line 3: image file not found: .*missing.png"),
        ({"image": ["img/p1.png"], "mask": ["msk/gone.png"]}, r"line 2: mask file not found: .*gone.png"),
        ({"image": ["img/p1.png"], "split": ["holdout"]}, r"line 2: unknown split 'holdout'"),
        ({"image": ["img/p1.png"], "label": ["2"]}, r"line 2: label '2' is not 0 or 1"),
        ({"image": ["img/p1.png"], "label": ["1"]}, r"line 2: label 1 .* no mask"),
        ({"image": ["img/p1.png", "img/n1.png"], "id": ["x", "x"]}, r"line 3: sample id 'x' already used on line 2"),
        ({"path": ["img/p1.png"]}, r"needs an 'image' column; found \['path'\]"),
        ({"image": ["  "], "mask": ["msk/p1.png"]}, r"line 2: empty 'image' path"),
    ],
)
def test_read_csv_manifest_errors(tmp_path, rows, fragment):
    _csv_files(tmp_path)
    with pytest.raises(DataError, match=fragment):
        read_csv_manifest(_csv(tmp_path, rows))


def test_read_csv_manifest_empty_and_missing(tmp_path):
    (tmp_path / "empty.csv").write_text("image,mask\n")
    with pytest.raises(DataError, match="no rows"):
        read_csv_manifest(tmp_path / "empty.csv")
    with pytest.raises(DataError, match="nope.csv.*not found"):
        read_csv_manifest(tmp_path / "nope.csv")


def test_csv_label_disagreeing_with_mask_refused_at_load(tmp_path):
    _csv_files(tmp_path)
    records = read_csv_manifest(_csv(tmp_path, {"image": ["img/n1.png"], "mask": ["msk/n1.png"], "label": ["1"]}))
    with pytest.raises(DataError, match=r"n1.png: label 1 disagrees with the mask .*msk.n1.png.*empty"):
        load_sample(records[0])


# --- read_siim --------------------------------------------------------------------------------------------


def _siim(tmp_path, size=(32, 32), column=" EncodedPixels"):
    """Three labelled DICOMs (one with two RLE rows) and one without a CSV row, in nested folders."""
    root = tmp_path / "siim"
    part1, part2 = _mask(size, (2, 6, 3, 9)), _mask(size, (20, 25, 20, 30))
    write_dicom(root / "train" / "s1" / "x" / "pos.dcm", _image(size, 1), patient_id="PA", spacing=(0.14, 0.14))
    write_dicom(root / "train" / "s2" / "neg.dcm", _image(size, 2), patient_id="PB", photometric="MONOCHROME1")
    write_dicom(root / "train" / "s3" / "neg2.dcm", _image(size, 3), compress="jpeg")
    write_dicom(root / "test" / "unl.dcm", _image(size, 4))
    frame = pd.DataFrame(
        {
            "ImageId": ["pos", "neg", "pos", "neg2"],
            column: [" " + rle_encode(part1), " -1", " " + rle_encode(part2), "-1"],
        }
    )
    frame.to_csv(root / "train-rle.csv", index=False)
    return root, part1 | part2


def test_read_siim(tmp_path):
    root, expected = _siim(tmp_path)
    records = read_siim(root)
    assert records.format == "siim" and [r.sample_id for r in records] == ["pos", "neg", "neg2"]
    pos, neg, neg2 = records
    assert pos.label == 1 and len(pos.rle) == 2 and pos.kind == "dicom"
    assert neg.label == 0 and neg.rle == () and neg2.label == 0
    assert pos.mask_size == (32, 32) and pos.group == "PA" and neg.group == "PB"
    assert records.unlabelled == [str(root / "test" / "unl.dcm")]
    assert any("1 DICOM file(s) without a row" in n for n in records.notes)
    loaded = load_sample(pos)
    np.testing.assert_array_equal(loaded.mask, expected)  # the two rows are unioned
    assert loaded.label == 1 and loaded.spacing == pytest.approx((0.14, 0.14)) and loaded.bits_stored == 8
    np.testing.assert_array_equal(loaded.image, _image((32, 32), 1))
    loaded_neg = load_sample(neg)
    assert not loaded_neg.mask.any() and loaded_neg.meta["photometric"] == "MONOCHROME1"
    np.testing.assert_array_equal(loaded_neg.image, _image((32, 32), 2))  # MONOCHROME1 inverted back
    assert np.abs(load_sample(neg2).image.astype(float) - _image((32, 32), 3)).mean() < 12  # JPEG of noise


def test_read_siim_column_without_space(tmp_path):
    root, expected = _siim(tmp_path, column="EncodedPixels")
    np.testing.assert_array_equal(load_sample(read_siim(root)[0]).mask, expected)


def test_read_siim_missing_dicom(tmp_path):
    root, _ = _siim(tmp_path)
    with open(root / "train-rle.csv", "a") as handle:
        handle.write("ghost, -1\n")
    with pytest.raises(DataError, match=r"line 6: ImageId 'ghost' has no DICOM"):
        read_siim(root)
    records = read_siim(root, skip_bad=True)
    assert len(records) == 3 and records.skipped[0][0] == "ghost"
    assert any("1 image(s) skipped" in n for n in records.notes)


@pytest.mark.parametrize(
    "rle, fragment",
    [(" 1 2 3", "line 6 \\(neg\\).*odd number"), (" 1 x", "non-integer"), (" 1000 100", "past the end of the 32x32")],
)
def test_read_siim_malformed_rle(tmp_path, rle, fragment):
    root, _ = _siim(tmp_path)
    with open(root / "train-rle.csv", "a") as handle:
        handle.write(f"neg,{rle}\n")
    with pytest.raises(DataError, match=fragment):
        read_siim(root)
    assert [r.sample_id for r in read_siim(root, skip_bad=True)] == ["pos", "neg2"]


def test_read_siim_size_checked_at_load_without_headers(tmp_path):
    root, _ = _siim(tmp_path)
    records = read_siim(root, read_headers=False)
    assert records[0].mask_size == (1024, 1024) and records[0].group is None
    with pytest.raises(DataError, match=r"pos.dcm: image is 32x32 but the RLE .* is for 1024x1024"):
        load_sample(records[0])


def test_read_siim_csv_errors(tmp_path):
    root, _ = _siim(tmp_path)
    (root / "other-rle.csv").write_text("ImageId,EncodedPixels\n")
    with pytest.raises(DataError, match="exactly one"):
        read_siim(root)
    with pytest.raises(DataError, match="no rows"):
        read_siim(root, rle_csv=root / "other-rle.csv")
    (root / "bad.csv").write_text("Id,Pixels\npos,-1\n")
    with pytest.raises(DataError, match="needs columns 'ImageId' and 'EncodedPixels'"):
        read_siim(root, rle_csv=root / "bad.csv")


def test_read_siim_all_bad_is_empty_dataset(tmp_path):
    root = tmp_path / "s"
    write_dicom(root / "a.dcm", _image())
    (root / "train-rle.csv").write_text("ImageId, EncodedPixels\nghost, -1\n")
    with pytest.raises(DataError, match="no usable SIIM-ACR samples"):
        read_siim(root, skip_bad=True)


def test_read_siim_duplicate_image_id(tmp_path):
    root, _ = _siim(tmp_path)
    write_dicom(root / "elsewhere" / "pos.dcm", _image((32, 32)))
    with pytest.raises(DataError, match="'pos' has two DICOM files"):
        read_siim(root)


# --- discover_source --------------------------------------------------------------------------------------


def test_discover_source_each_layout(tmp_path):
    folder = _folder(tmp_path)
    assert discover_source(folder)[0] == "folder"
    root, _ = _siim(tmp_path)
    fmt, records = discover_source(root)
    assert fmt == "siim" and len(records) == 3
    fmt, records = discover_source(root / "train-rle.csv")
    assert fmt == "siim" and len(records) == 3
    _csv_files(tmp_path)
    fmt, records = discover_source(_csv(tmp_path, {"image": ["img/p1.png"], "mask": ["msk/p1.png"]}))
    assert fmt == "csv" and records[0].sample_id == "p1"


def test_discover_source_unknown_layouts(tmp_path):
    with pytest.raises(DataError, match="not found"):
        discover_source(tmp_path / "missing")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(DataError, match="accepted: a CSV manifest.*images/.*SIIM-ACR"):
        discover_source(tmp_path / "x.txt")
    with pytest.raises(DataError, match="not a recognised data source"):
        discover_source(tmp_path)
    # An RLE CSV without any DICOM is not SIIM-ACR.
    (tmp_path / "train-rle.csv").write_text("ImageId, EncodedPixels\na, -1\n")
    with pytest.raises(DataError, match="not a recognised data source"):
        discover_source(tmp_path)


def test_discover_source_empty_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no images"):
        discover_source(tmp_path)


# --- Phantoms in each layout ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom_sets(tmp_path_factory):
    from ptx_keras.data import write_phantom_dataset

    root = tmp_path_factory.mktemp("phantoms")
    return {
        fmt: write_phantom_dataset(root / fmt, 6, 64, format=fmt, seed=5, progress=False)
        for fmt in ("png", "siim", "csv")
    }


def _loaded(source):
    fmt, records = discover_source(source)
    return fmt, {r.sample_id: load_sample(r) for r in records}


def test_phantoms_folder_layout(phantom_sets):
    summary = phantom_sets["png"]
    fmt, loaded = _loaded(summary["path"])
    assert fmt == "folder" and len(loaded) == 6
    assert sum(s.label for s in loaded.values()) == summary["positives"] == 3
    for sample in loaded.values():
        assert sample.image.shape == sample.mask.shape == (64, 64) and sample.image.dtype == np.uint8
        assert sample.label == int(sample.mask.any())


def test_phantoms_siim_layout_matches_png(phantom_sets):
    fmt, records = discover_source(phantom_sets["siim"]["path"])
    _, png = _loaded(phantom_sets["png"]["path"])
    # SIIM ImageIds are UIDs; the phantom id is the PatientID, read into the record's group.
    siim = {r.group: load_sample(r) for r in records}
    assert fmt == "siim" and sorted(siim) == sorted(png)
    for sample_id, sample in siim.items():
        # The RLE rows (one per region, unioned) give exactly the PNG mask of the same phantom.
        np.testing.assert_array_equal(sample.mask, png[sample_id].mask)
        assert np.abs(sample.image.astype(float) - png[sample_id].image).mean() < 3  # JPEG Baseline
        assert sample.spacing == pytest.approx((0.14 * 1024 / 64,) * 2)


def test_phantoms_csv_written_over_png_layout(phantom_sets, tmp_path):
    root = phantom_sets["png"]["path"]
    names = sorted(os.listdir(os.path.join(root, "images")))
    # A manifest beside (not inside) the data: paths relative to the CSV, a split and patient groups.
    manifest = _csv(
        tmp_path,
        {
            "image": [os.path.relpath(os.path.join(root, "images", n), tmp_path) for n in names],
            "mask": [os.path.relpath(os.path.join(root, "masks", n), tmp_path) for n in names],
            "split": ["train", "train", "val", "val", "test", "test"],
            "group": ["g0", "g0", "g1", "g1", "g2", "g2"],
        },
    )
    fmt, loaded = _loaded(manifest)
    _, png = _loaded(root)
    assert fmt == "csv" and sorted(loaded) == sorted(png)
    for sample_id, sample in loaded.items():
        np.testing.assert_array_equal(sample.image, png[sample_id].image)
        np.testing.assert_array_equal(sample.mask, png[sample_id].mask)


def test_phantoms_own_csv_layout(phantom_sets):
    summary = phantom_sets["csv"]
    fmt, loaded = _loaded(summary["manifest"])
    assert fmt == "csv" and len(loaded) == 6
    assert sum(s.label for s in loaded.values()) == summary["positives"]
