"""DICOM reading and writing: round trips, MONOCHROME1, BitsStored, JPEG Baseline, spacing, bad files."""

import os

import numpy as np
import pydicom
import pytest

from ptx_keras.data import read_dicom, write_dicom
from ptx_keras.data.dicom import JPEG_BASELINE, is_dicom, read_dicom_header
from ptx_keras.errors import DataError


def _ramp(rows=48, cols=64, dtype=np.uint8, high=255):
    yy, xx = np.mgrid[:rows, :cols]
    return ((yy * cols + xx) * high // (rows * cols - 1)).astype(dtype)


def _edit(path, **changes):
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            del ds[key]
        else:
            setattr(ds, key, value)
    ds.save_as(path)


def test_uncompressed_8bit_round_trip(tmp_path):
    image = _ramp()
    path = write_dicom(tmp_path / "a.dcm", image, patient_id="P7")
    out, info = read_dicom(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, image)
    assert info["bits_stored"] == 8 and info["photometric"] == "MONOCHROME2"
    assert (info["rows"], info["cols"]) == (48, 64)
    assert info["spacing"] is None and info["patient_id"] == "P7"
    assert info["value_range"] == (0.0, 255.0)


def test_monochrome1_is_stored_inverted_and_read_back(tmp_path):
    image = _ramp()
    path = write_dicom(tmp_path / "m1.dcm", image, photometric="MONOCHROME1")
    raw = pydicom.dcmread(path).pixel_array
    # Stored value = 255 - display value, e.g. the first pixel 0 is stored as 255.
    assert raw[0, 0] == 255 and raw[-1, -1] == 0
    np.testing.assert_array_equal(raw, 255 - image)
    out, info = read_dicom(path)
    assert info["photometric"] == "MONOCHROME1"
    np.testing.assert_array_equal(out, image)


def test_16bit_with_12_bits_stored(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 4096, size=(30, 40)).astype(np.uint16)
    path = write_dicom(tmp_path / "b12.dcm", image, bits_stored=12)
    out, info = read_dicom(path)
    assert out.dtype == np.uint16 and info["bits_stored"] == 12
    np.testing.assert_array_equal(out, image)
    assert info["value_range"] == (0.0, 4095.0)


def test_12_bit_monochrome1_inverts_from_4095(tmp_path):
    image = np.array([[0, 100], [4000, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "m1_12.dcm", image, bits_stored=12, photometric="MONOCHROME1")
    np.testing.assert_array_equal(pydicom.dcmread(path).pixel_array, [[4095, 3995], [95, 0]])
    np.testing.assert_array_equal(read_dicom(path)[0], image)


def test_bits_above_bits_stored_are_masked(tmp_path):
    image = np.array([[1, 2], [3, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "junk.dcm", image, bits_stored=12)
    ds = pydicom.dcmread(path)
    # Garbage in the 4 unused high bits (overlay bits in old files): 0xF000 | value.
    ds.PixelData = (image | np.uint16(0xF000)).astype("<u2").tobytes()
    ds.save_as(path)
    np.testing.assert_array_equal(read_dicom(path)[0], image)


def test_signed_pixels_are_shifted_to_unsigned(tmp_path):
    path = write_dicom(tmp_path / "s.dcm", np.zeros((1, 3), np.uint16), bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.PixelRepresentation = 1
    ds.PixelData = np.array([[-2048, 0, 2047]], dtype="<i2").tobytes()
    ds.save_as(path)
    # -2048 + 2048 = 0, 0 + 2048 = 2048, 2047 + 2048 = 4095.
    np.testing.assert_array_equal(read_dicom(path)[0], [[0, 2048, 4095]])


def test_jpeg_baseline_round_trip(tmp_path):
    image = _ramp(64, 96)
    path = write_dicom(tmp_path / "j.dcm", image, compress="jpeg")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == JPEG_BASELINE
    assert ds.file_meta.TransferSyntaxUID.is_compressed
    out, info = read_dicom(path)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert info["transfer_syntax"] == JPEG_BASELINE
    assert np.abs(out.astype(float) - image).mean() < 3


def test_jpeg_baseline_monochrome1(tmp_path):
    image = _ramp(32, 32)
    path = write_dicom(tmp_path / "j1.dcm", image, compress="jpeg", photometric="MONOCHROME1")
    out, _ = read_dicom(path)
    assert np.abs(out.astype(float) - image).mean() < 3


def test_pixel_spacing(tmp_path):
    path = write_dicom(tmp_path / "sp.dcm", _ramp(), spacing=(0.168, 0.139))
    assert read_dicom(path)[1]["spacing"] == pytest.approx((0.168, 0.139))


def test_imager_pixel_spacing_fallback(tmp_path):
    path = write_dicom(tmp_path / "ips.dcm", _ramp())
    _edit(path, ImagerPixelSpacing=["0.2", "0.25"])
    assert read_dicom(path)[1]["spacing"] == pytest.approx((0.2, 0.25))


def test_rescale_keeps_stored_values_and_negative_slope_inverts(tmp_path):
    image = np.array([[0, 10], [20, 255]], dtype=np.uint8)
    path = write_dicom(tmp_path / "r.dcm", image)
    _edit(path, RescaleSlope="1", RescaleIntercept="0")
    out, info = read_dicom(path)
    assert out.dtype == np.uint8 and info["rescale"] is None
    np.testing.assert_array_equal(out, image)
    # A positive slope is a monotone linear map: scaled to [0, 255] downstream it is the stored image.
    _edit(path, RescaleSlope="2", RescaleIntercept="-10")
    out, info = read_dicom(path)
    assert out.dtype == np.uint8 and info["rescale"] == (2.0, -10.0)
    np.testing.assert_array_equal(out, image)
    # A negative slope makes high stored values dark: 255 - value.
    _edit(path, RescaleSlope="-1", RescaleIntercept="255")
    np.testing.assert_array_equal(read_dicom(path)[0], [[255, 245], [235, 0]])


def test_truncated_file_refused(tmp_path):
    path = write_dicom(tmp_path / "t.dcm", _ramp(128, 128))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(DataError, match="t.dcm: truncated or corrupt DICOM.*ends inside its pixel data"):
        read_dicom(path)


@pytest.mark.parametrize("compress", [None, "jpeg"])
@pytest.mark.parametrize("fraction", [0.01, 0.02, 0.03, 0.5, 0.99])
def test_truncated_file_is_called_truncated_wherever_the_cut(tmp_path, compress, fraction):
    # pydicom reads a file cut in its header without an error, just without the later elements: this used
    # to be reported as "has no pixel data", pointing at the wrong problem.
    path = write_dicom(tmp_path / "cut.dcm", _ramp(128, 128), compress=compress)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: max(140, int(len(data) * fraction))])
    with pytest.raises(DataError, match="cut.dcm: truncated or corrupt DICOM"):
        read_dicom(path)


def test_truncated_header_refused(tmp_path):
    path = write_dicom(tmp_path / "h.dcm", _ramp())
    data = open(path, "rb").read()
    open(path, "wb").write(data[:200])
    with pytest.raises(DataError, match="h.dcm"):
        read_dicom(path)


def test_not_dicom_and_missing_refused(tmp_path):
    bogus = tmp_path / "bogus.dcm"
    bogus.write_text("this is not a DICOM file")
    with pytest.raises(DataError, match="bogus.dcm.*not a DICOM"):
        read_dicom(bogus)
    with pytest.raises(DataError, match="missing.dcm.*not found"):
        read_dicom(tmp_path / "missing.dcm")


def test_read_dicom_header_one_error_policy(tmp_path):
    """The one reader of DICOM files: pixels only on request, only the tags asked for, and every failure to parse
    a `DataError` naming the file."""
    path = write_dicom(tmp_path / "h.dcm", _ramp(8, 8), patient_id="P1")
    header = read_dicom_header(path)
    assert (header.Rows, header.Columns) == (8, 8) and "PixelData" not in header
    assert "PixelData" in read_dicom_header(path, pixel_data=True)
    only = read_dicom_header(path, tags=["PatientID"])
    assert only.PatientID == "P1" and "Rows" not in only
    (tmp_path / "bogus.dcm").write_bytes(b"not DICOM")
    for target, message in [
        (tmp_path / "missing.dcm", "missing.dcm: DICOM file not found"),
        (tmp_path / "bogus.dcm", "bogus.dcm: not a DICOM file"),
        (tmp_path, rf"{tmp_path.name}: unreadable DICOM \(IsADirectoryError"),
    ]:
        with pytest.raises(DataError, match=message):
            read_dicom_header(target)


def test_is_dicom_by_extension_or_magic(tmp_path):
    renamed = tmp_path / "no_extension"
    os.replace(write_dicom(tmp_path / "a.dcm", _ramp(8, 8)), renamed)
    assert is_dicom(renamed)  # the DICM magic after the 128-byte preamble
    assert is_dicom(tmp_path / "absent.DICOM")  # the extension alone: nothing is opened
    (tmp_path / "x.png").write_bytes(b"\x89PNG" + bytes(200))
    (tmp_path / "short").write_bytes(b"DICM")
    assert not any(is_dicom(tmp_path / name) for name in ("x.png", "short", "absent.bin"))


def test_multi_frame_refused(tmp_path):
    image = _ramp(8, 8)
    path = write_dicom(tmp_path / "mf.dcm", image)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 2
    ds.PixelData = np.stack([image, image]).tobytes()
    ds.save_as(path)
    with pytest.raises(DataError, match="mf.dcm.*multi-frame"):
        read_dicom(path)


def test_colour_refused(tmp_path):
    image = _ramp(8, 8)
    path = write_dicom(tmp_path / "rgb.dcm", image)
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.PixelData = np.repeat(image[..., None], 3, axis=-1).tobytes()
    ds.save_as(path)
    with pytest.raises(DataError, match="rgb.dcm.*colour"):
        read_dicom(path)


def test_no_pixel_data_refused(tmp_path):
    path = write_dicom(tmp_path / "np.dcm", _ramp(8, 8))
    _edit(path, PixelData=None)
    # Well formed, with its image size: the file may have been saved without pixels, or cut right there.
    with pytest.raises(DataError, match=r"np.dcm: DICOM has no pixel data \(it ends after element \(0028,0103\)"):
        read_dicom(path)


@pytest.mark.parametrize(
    "image, kwargs, fragment",
    [
        (np.zeros((4, 4, 3), np.uint8), {}, "2-D"),
        (np.zeros((4, 4), np.float32), {}, "uint8 or uint16"),
        (np.zeros((4, 4), np.uint8), {"photometric": "RGB"}, "photometric"),
        (np.zeros((4, 4), np.uint8), {"compress": "png"}, "compress"),
        (np.zeros((4, 4), np.uint8), {"bits_stored": 12}, "bits_stored"),
        (np.full((4, 4), 5000, np.uint16), {"bits_stored": 12}, "do not fit"),
        (np.zeros((4, 4), np.uint16), {"compress": "jpeg"}, "8-bit"),
        (np.zeros((4, 4), np.uint8), {"spacing": (0.1, -1)}, "spacing"),
    ],
)
def test_write_dicom_invalid_arguments(tmp_path, image, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        write_dicom(tmp_path / "x.dcm", image, **kwargs)


def test_written_file_is_valid_dicom(tmp_path):
    path = write_dicom(tmp_path / "v.dcm", _ramp(), sop_instance_uid="1.2.3.4", patient_id="P1")
    with open(path, "rb") as handle:
        assert handle.read(132)[128:] == b"DICM"
    ds = pydicom.dcmread(path)
    assert ds.SOPInstanceUID == "1.2.3.4" and ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4"
    assert ds.Modality == "CR" and ds.PatientID == "P1"
