"""Reading and writing single-frame grayscale DICOM radiographs.

`is_dicom` decides whether a file is DICOM and `read_dicom_header` parses one: every module that recognises or opens
a DICOM file goes through these two. `read_dicom` returns a display-ready image (higher values are brighter) with the metadata that preparation
and evaluation need (pixel spacing for Hausdorff distances in millimetres, the stored bit depth for
intensity scaling). `write_dicom` writes the kind of file SIIM-ACR ships (a Secondary Capture object with
modality CR, optionally JPEG Baseline compressed) so that phantoms and tests exercise the same path as real
data.
"""

import io
import os
import typing

import numpy as np

from ptx_keras.data.limits import check_image_size, j2k_frame_size, jpeg_frame_size
from ptx_keras.errors import DataError

__all__ = [
    "COMPRESSIONS",
    "DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN",
    "DICOM_EXTENSIONS",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "JPEG_BASELINE",
    "JPEG_QUALITY",
    "PHOTOMETRICS",
    "RLE_LOSSLESS",
    "SECONDARY_CAPTURE",
    "is_dicom",
    "read_dicom",
    "read_dicom_header",
    "write_dicom",
]


JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
JPEG_QUALITY = 95  # high enough that the lossy round trip stays within a few grey levels
PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
COMPRESSIONS = (None, "jpeg", "rle", "deflate")  # what write_dicom can write with pydicom and Pillow alone
DICOM_EXTENSIONS = (".dcm", ".dicom")
_PREAMBLE = 128  # bytes before the "DICM" magic of a DICOM file (PS3.10 7.1)


def _pydicom():
    # pydicom is imported lazily: reading PNG folders must not depend on it.
    import pydicom

    return pydicom


def is_dicom(path):
    """True if `path` has a DICOM extension (`DICOM_EXTENSIONS`) or the `DICM` magic after the 128-byte preamble.

    The one test of "is this file DICOM" (what `read_image` reads with `read_dicom`, what DICOM output needs);
    nothing is parsed, so a file it accepts can still fail `read_dicom_header`. A file that cannot be opened is
    not DICOM.
    """
    path = os.fspath(path)
    if path.lower().endswith(DICOM_EXTENSIONS):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(_PREAMBLE + 4)
    except OSError:
        return False
    return len(head) == _PREAMBLE + 4 and head[_PREAMBLE:] == b"DICM"


def read_dicom_header(path, *, pixel_data=False, tags=None):
    """Parses a DICOM file's data set: the one place a DICOM file is opened.

    Error policy: any failure to parse is a `DataError` naming the file, whatever pydicom raised (a cut or
    corrupt header raises `EOFError`, `struct.error`, `ValueError`, ...). Nothing beyond parsing is checked:
    callers check the elements they need. pydicom parses a file truncated between or inside elements without an
    error, so a truncation is seen only where the file size is compared with the last element (`read_dicom`).
    Callers that need another error (`ptx_keras.dicom_net`'s `SendError`) catch this one.

    Args:
        path: The file.
        pixel_data: Also read the pixel data element (still encoded; `read_dicom` decodes it). False stops
            before it.
        tags: Optional keywords: read only these elements (pydicom's `specific_tags`).

    Returns:
        The `pydicom.Dataset`.

    Raises:
        DataError: `"<path>: DICOM file not found"`, `"<path>: not a DICOM file (...)"` (no `DICM` magic or
            file meta information), or `"<path>: unreadable DICOM (<exception>: ...)"` for anything else.
    """
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    path = os.fspath(path)
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixel_data, specific_tags=tags)
    except FileNotFoundError:
        raise DataError(f"{path}: DICOM file not found") from None
    except InvalidDicomError as exc:
        raise DataError(f"{path}: not a DICOM file ({exc})") from None
    except Exception as exc:  # truncated headers raise EOFError, struct.error, ValueError, ...
        raise DataError(f"{path}: unreadable DICOM ({type(exc).__name__}: {exc})") from None


def _spacing(ds):
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is None:
            continue
        try:
            row_mm, col_mm = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if row_mm > 0 and col_mm > 0 and np.isfinite(row_mm) and np.isfinite(col_mm):
            return (row_mm, col_mm)
    return None


def _rescale(ds):
    """Returns (slope, intercept) when the modality LUT is present and not the identity, else None."""
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is None and intercept is None:
        return None
    try:
        slope = 1.0 if slope is None else float(slope)
        intercept = 0.0 if intercept is None else float(intercept)
    except (TypeError, ValueError):
        return None
    if slope == 0 or not np.isfinite(slope) or not np.isfinite(intercept):
        return None  # a zero or broken slope carries no information: keep the stored values
    if slope == 1.0 and intercept == 0.0:
        return None
    return slope, intercept


def _cut_short(ds, path):
    """True when the file ends inside a data element, i.e. was truncated.

    pydicom reads a truncated file without an error: it returns the elements before the cut (the last one
    short, or none at all), so a missing element says nothing by itself. The last element read must end
    exactly where the file does.
    """
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    tags = sorted(ds.keys())
    if not tags:
        return True  # nothing after the file meta information
    last = ds.get_item(tags[-1])
    tell, length = getattr(last, "value_tell", None), getattr(last, "length", None)
    if tell is None or length is None or length == 0xFFFFFFFF:
        return False  # a sequence or undefined length: cannot tell, assume a complete file
    return tell + length != size


def read_dicom(path, max_pixels=None):
    """Reads a single-frame grayscale DICOM image.

    Compressed transfer syntaxes are decoded by pydicom's pixel handlers (JPEG Baseline through
    pylibjpeg). Values are masked to `BitsStored`; signed data is shifted to start at 0; `MONOCHROME1`
    is inverted (`2**BitsStored - 1 - value`) so that higher values are always brighter. A modality LUT
    (`RescaleSlope`/`RescaleIntercept`), when present and not the identity, is linear: since images are
    scaled from `[0, 2**BitsStored - 1]` to the model's range downstream, applying it would change
    nothing but its sign, so a negative slope inverts the image and a positive one leaves it as stored
    (keeping the integer type and `BitsStored` range exact). It is reported in `info["rescale"]`.

    The image size (Rows x Columns x SamplesPerPixel x NumberOfFrames, and for JPEG and JPEG 2000 pixel data
    also the size the compressed stream's own header claims) is checked against `max_pixels` before anything
    is decoded (`ptx_keras.data.limits`).

    Args:
        path: The DICOM file.
        max_pixels: The size limit (None: `ptx_keras.constants.MAX_IMAGE_PIXELS`).

    Returns:
        `(image, info)`: `image` is a 2-D array `(rows, cols)`, uint8 if `BitsStored <= 8`, else uint16.
        `info` holds `spacing` (`(row_mm, col_mm)` from `PixelSpacing`, else `ImagerPixelSpacing`, else
        None), `bits_stored`, `photometric`, `rows`,
        `cols`, `value_range` (`(0, 2**BitsStored - 1)`), `rescale` (`(slope, intercept)` or None when
        absent or the identity), `patient_id` (or None) and `transfer_syntax`.

    Raises:
        DataError: If the file is missing, not DICOM, truncated (said so, whether the cut falls in the header
            or in the pixel data), undecodable, multi-frame, colour, larger than `max_pixels`, malformed
            (an element of the wrong type or value), or complete but without pixel data; the message names
            the file.
    """
    path = os.fspath(path)
    try:
        return _read_dicom(path, max_pixels)
    except DataError:
        raise
    except Exception as exc:  # a malformed element (wrong VR, multi-valued, out of range) read on access
        raise DataError(f"{path}: malformed DICOM ({type(exc).__name__}: {str(exc)[:300]})") from None


def _check_size(ds, path, rows, cols, samples, frames, max_pixels):
    """`check_image_size` on the header's size, and on what a JPEG / JPEG 2000 stream's own header claims."""
    check_image_size(path, rows, cols, samples, frames, max_pixels)
    parse = _stream_header_parser(getattr(ds.file_meta, "TransferSyntaxUID", None))
    if parse is None:
        return
    from pydicom.encaps import generate_fragments

    try:  # the first item may be the Basic Offset Table: look at the first few
        fragments = [f for f, _ in zip(generate_fragments(ds.PixelData), range(3))]
    except Exception:  # malformed encapsulation: left to the decoder, which reports it
        return
    for fragment in fragments:
        claimed = parse(fragment)
        if claimed is not None:
            check_image_size(path, claimed[0], claimed[1], claimed[2] or 1, frames, max_pixels)
            return


def _stream_header_parser(transfer_syntax):
    """The parser of the image header inside the pixel data of `transfer_syntax`, or None where it has none.

    Only the stream of the file's own syntax is parsed: RLE or deflated data can hold any byte sequence,
    including a JPEG 2000 SIZ marker, whose "size" would refuse a valid image.
    """
    import pydicom.uid

    syntax = str(transfer_syntax or "")
    if syntax in pydicom.uid.JPEG2000TransferSyntaxes:
        return j2k_frame_size
    if syntax in pydicom.uid.JPEGTransferSyntaxes:  # JPEG-LS frame headers (SOF55) are not read
        return jpeg_frame_size
    return None


def _read_dicom(path, max_pixels):
    ds = read_dicom_header(path, pixel_data=True)
    truncated = _cut_short(ds, path)  # before any access converts the raw elements
    _check_has_pixels(ds, path, truncated)
    geometry = _check_image(ds, path, max_pixels)
    stored = _decode(ds, path, geometry, truncated)
    rescale = _rescale(ds)
    image = _display_ready(ds, stored, geometry, rescale)
    info = {
        "spacing": _spacing(ds),
        "bits_stored": geometry.bits_stored,
        "photometric": geometry.photometric,
        "rows": geometry.rows,
        "cols": geometry.cols,
        "value_range": (0.0, float(geometry.max_value)),
        "rescale": rescale,
        "patient_id": str(ds.PatientID) if ds.get("PatientID") not in (None, "") else None,
        "transfer_syntax": str(getattr(ds.file_meta, "TransferSyntaxUID", "")),
    }
    return image, info


class _Geometry(typing.NamedTuple):
    """What `read_dicom` supports of an image's pixel module, checked."""

    rows: int
    cols: int
    bits_stored: int
    photometric: str

    @property
    def max_value(self):
        return (1 << self.bits_stored) - 1


def _check_has_pixels(ds, path, truncated):
    """Raises `DataError` for a data set without pixel data, saying whether a truncation is the likely cause."""
    if "PixelData" in ds:
        return
    size = os.path.getsize(path)
    if truncated:
        raise DataError(
            f"{path}: truncated or corrupt DICOM: the file ends inside a data element (after {size} bytes), "
            "so its pixel data is missing or incomplete"
        )
    last = ds[max(ds.keys())]
    where = f"it ends after element {last.tag} {last.keyword or ''}".rstrip()
    if "Rows" not in ds or "Columns" not in ds:
        # A cut between two elements leaves a well-formed but incomplete file: without the image size
        # as well, a truncation is by far the likelier cause.
        raise DataError(f"{path}: truncated or corrupt DICOM: no pixel data and no image size ({where}, {size} bytes)")
    raise DataError(f"{path}: DICOM has no pixel data ({where}: truncated there, or saved without its image)")


def _check_image(ds, path, max_pixels):
    """The `_Geometry` of a single-frame grayscale image within `max_pixels`, or a `DataError` saying which not."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DataError(f"{path}: multi-frame DICOM ({frames} frames) is not supported; expected one image")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if samples != 1 or photometric not in PHOTOMETRICS:
        raise DataError(
            f"{path}: colour DICOM (PhotometricInterpretation={photometric}, SamplesPerPixel={samples}) "
            "is not supported; expected MONOCHROME1 or MONOCHROME2 grayscale"
        )
    try:
        bits_allocated = int(ds.BitsAllocated)
        bits_stored = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: DICOM lacks a valid Rows/Columns/BitsAllocated ({exc})") from None
    _check_size(ds, path, rows, cols, samples, frames, max_pixels)
    if not 1 <= bits_stored <= min(bits_allocated, 16):
        raise DataError(
            f"{path}: unsupported BitsStored={bits_stored} (BitsAllocated={bits_allocated}); expected 1..16"
        )
    return _Geometry(rows, cols, bits_stored, photometric)


def _decode(ds, path, geometry, truncated):
    """The stored pixel array `(rows, cols)`; a decoding failure is a `DataError` (truncated, or undecodable)."""
    try:
        stored = ds.pixel_array
    except Exception as exc:  # truncated or corrupt pixel data, missing decoder plugin
        transfer = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        if truncated:
            raise DataError(
                f"{path}: truncated or corrupt DICOM: the file ({os.path.getsize(path)} bytes) ends inside its "
                f"pixel data ({type(exc).__name__}: {exc})"
            ) from None
        raise DataError(
            f"{path}: cannot decode pixel data (transfer syntax {transfer}): {type(exc).__name__}: {exc}"
        ) from None
    if stored.shape != (geometry.rows, geometry.cols):
        raise DataError(
            f"{path}: decoded pixel array has shape {stored.shape}, expected ({geometry.rows}, {geometry.cols})"
        )
    return stored


def _display_ready(ds, stored, geometry, rescale):
    """Stored values to `[0, 2**BitsStored - 1]`, higher brighter: signed shifted, masked, inverted as needed."""
    max_value = geometry.max_value
    values = stored.astype(np.int64)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        # Two's complement over BitsStored: shift so the smallest representable value is 0.
        values = values + (1 << (geometry.bits_stored - 1))
    values &= max_value
    if geometry.photometric == "MONOCHROME1":
        values = max_value - values
    if rescale is not None and rescale[0] < 0:
        # The modality LUT is linear and images are scaled to their full range downstream, so its only
        # effect on a display-ready image is its sign: a negative slope makes high stored values dark.
        values = max_value - values
    return values.astype(np.uint8 if geometry.bits_stored <= 8 else np.uint16)


def _encode_jpeg(image):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _check_write_arguments(image, photometric, compress, bits_stored, spacing):
    """`write_dicom`'s argument checks; returns `(bits_stored, spacing)` with their defaults filled in."""
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"image must be a non-empty 2-D array (rows, cols). Received: shape={image.shape}")
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image must be uint8 or uint16. Received: dtype={image.dtype}")
    if photometric not in PHOTOMETRICS:
        raise ValueError(f"photometric must be one of {PHOTOMETRICS}. Received: photometric={photometric!r}")
    if compress not in COMPRESSIONS:
        raise ValueError(f"compress must be one of {COMPRESSIONS}. Received: compress={compress!r}")
    bits_allocated = 8 * image.dtype.itemsize
    bits_stored = bits_allocated if bits_stored is None else int(bits_stored)
    if not 1 <= bits_stored <= bits_allocated:
        raise ValueError(
            f"bits_stored must be in 1..{bits_allocated} for {image.dtype}. Received: bits_stored={bits_stored}"
        )
    max_value = (1 << bits_stored) - 1
    if int(image.max()) > max_value:
        raise ValueError(
            f"image values up to {int(image.max())} do not fit bits_stored={bits_stored} (max {max_value})"
        )
    if compress == "jpeg" and (image.dtype != np.uint8 or bits_stored != 8):
        raise ValueError(
            f"compress='jpeg' (JPEG Baseline) needs an 8-bit uint8 image. Received: dtype={image.dtype}, "
            f"bits_stored={bits_stored}"
        )
    if spacing is not None:
        spacing = tuple(float(v) for v in spacing)
        if len(spacing) != 2 or min(spacing) <= 0:
            raise ValueError(f"spacing must be (row_mm, col_mm) > 0. Received: spacing={spacing}")
    return bits_stored, spacing


def _secondary_capture(stored, *, photometric, bits_stored, spacing, patient_id, sop_instance_uid, compress):
    """The Secondary Capture data set (modality CR, as SIIM-ACR ships) holding the stored values `stored`
    (a new `SOPInstanceUID` when `sop_instance_uid` is None; new study and series UIDs)."""
    pydicom = _pydicom()
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import generate_uid

    sop_instance_uid = sop_instance_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = {"jpeg": JPEG_BASELINE, "deflate": DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN}.get(
        compress, EXPLICIT_VR_LITTLE_ENDIAN
    )
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.ConversionType = "WSD"
    ds.BodyPartExamined = "CHEST"
    ds.PatientID = patient_id or "ANONYMOUS"
    ds.PatientName = ds.PatientID
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 8 * stored.dtype.itemsize
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if spacing is not None:
        ds.PixelSpacing = [f"{v:.6g}" for v in spacing]
    _set_pixel_data(ds, stored, compress)
    return ds


def _set_pixel_data(ds, stored, compress):
    """Stores `stored` in `ds`: JPEG Baseline encapsulated, RLE Lossless, or native (the file deflates it)."""
    from pydicom.encaps import encapsulate

    if compress == "jpeg":
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.PixelData = encapsulate([_encode_jpeg(stored)])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = stored.astype(stored.dtype.newbyteorder("<"), copy=False).tobytes()
        ds["PixelData"].VR = "OB" if stored.dtype.itemsize == 1 else "OW"
    if compress == "rle":
        sop_instance_uid = ds.SOPInstanceUID
        ds.compress(RLE_LOSSLESS, stored)
        # pydicom 3 gives a re-encoded instance a new UID by default; the caller's UID names the file
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid


def write_dicom(
    path,
    image,
    *,
    photometric="MONOCHROME2",
    spacing=None,
    compress=None,
    patient_id=None,
    sop_instance_uid=None,
    bits_stored=None,
):
    """Writes a display-ready grayscale image as a single-frame DICOM file.

    The object is a Secondary Capture with modality CR, as in SIIM-ACR. `read_dicom(path)` returns
    `image` again (exactly when uncompressed): for `MONOCHROME1` the stored values are inverted
    (`2**bits_stored - 1 - image`) and `read_dicom` inverts them back.

    Args:
        path: Output file (parent folders are created).
        image: 2-D array `(rows, cols)`, uint8 or uint16, higher values brighter.
        photometric: `"MONOCHROME2"` or `"MONOCHROME1"`.
        spacing: Optional `(row_mm, col_mm)` written as `PixelSpacing`.
        compress: None (Explicit VR Little Endian), `"jpeg"` (JPEG Baseline 1.2.840.10008.1.2.4.50,
            lossy, encoded with Pillow; 8-bit images only), `"rle"` (RLE Lossless 1.2.840.10008.1.2.5,
            pydicom's own encoder) or `"deflate"` (Deflated Explicit VR Little Endian 1.2.840.10008.1.2.1.99:
            the whole data set zlib-compressed). JPEG Lossless, JPEG-LS and JPEG 2000 need encoders this
            package does not depend on.
        patient_id: `PatientID` (default `"ANONYMOUS"`).
        sop_instance_uid: `SOPInstanceUID` (default a new UID).
        bits_stored: Significant bits (default 8 for uint8, 16 for uint16); the image must fit.

    Returns:
        The path written, as a string.

    Raises:
        ValueError: If an argument is invalid (naming it and the received value).
    """
    image = np.asarray(image)
    bits_stored, spacing = _check_write_arguments(image, photometric, compress, bits_stored, spacing)
    max_value = (1 << bits_stored) - 1
    stored = (max_value - image.astype(np.int64)).astype(image.dtype) if photometric == "MONOCHROME1" else image
    stored = np.ascontiguousarray(stored)
    ds = _secondary_capture(
        stored,
        photometric=photometric,
        bits_stored=bits_stored,
        spacing=spacing,
        patient_id=patient_id,
        sop_instance_uid=sop_instance_uid,
        compress=compress,
    )
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return path
