"""The image size limit: every reader checks an image's size from its header before decoding its pixels.

A small file can claim a huge image (a "decompression bomb": a 69-byte PNG header claiming 60000 x 60000, a
JPEG DICOM claiming the same): decoding it would reserve gigabytes before failing, or succeed and exhaust the
memory. `check_image_size` refuses any image whose rows x columns x samples per pixel x frames exceeds the limit
(`ptx_keras.constants.MAX_IMAGE_PIXELS` unless the caller gives another: `data.max_image_pixels`,
`--max-image-pixels`), so the memory a read can take is bounded by the limit (docs/data.md).
"""

from ptx_keras.constants import MAX_IMAGE_PIXELS
from ptx_keras.errors import DataError

__all__ = [
    "SETTING",
    "check_image_size",
    "j2k_frame_size",
    "jpeg_frame_size",
    "resolve_limit",
]


SETTING = "data.max_image_pixels / --max-image-pixels"  # where users change the limit (named in the message)


def resolve_limit(max_pixels):
    """The limit to apply: `max_pixels`, or `MAX_IMAGE_PIXELS` for None.

    Raises:
        ValueError: if `max_pixels` is not a positive integer.
    """
    if max_pixels is None:
        return MAX_IMAGE_PIXELS
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer or None. Received: max_pixels={max_pixels!r}")
    return max_pixels


def check_image_size(path, rows, cols, samples=1, frames=1, max_pixels=None):
    """Refuses an image larger than the limit, from the sizes its header claims (nothing decoded yet).

    Args:
        path: The file, named in the message.
        rows, cols: The image's height and width as the header gives them.
        samples: Samples (channels) per pixel.
        frames: Frames (pages) in the file.
        max_pixels: The limit (None: `MAX_IMAGE_PIXELS`).

    Raises:
        DataError: naming the file, the claimed size and the limit, if a size is not positive or the product
            exceeds the limit.
    """
    limit = resolve_limit(max_pixels)
    sizes = [int(v) for v in (rows, cols, samples, frames)]
    if min(sizes) < 1:
        raise DataError(
            f"{path}: invalid image size in the header: {sizes[0]} x {sizes[1]} "
            f"(x {sizes[2]} samples x {sizes[3]} frames)"
        )
    total = sizes[0] * sizes[1] * sizes[2] * sizes[3]
    if total > limit:
        extra = "".join(f" x {n} {what}" for n, what in ((sizes[2], "samples"), (sizes[3], "frames")) if n != 1)
        raise DataError(
            f"{path}: image too large: its header claims {sizes[0]} x {sizes[1]}{extra} = {total:,} values, over the "
            f"limit of {limit:,} (raise it with {SETTING} if the image is genuine); not decoded"
        )


def jpeg_frame_size(data):
    """`(rows, cols, components)` from a JPEG stream's start-of-frame marker, or None if none is found.

    Reads only the markers before the first scan, as a decoder does before it allocates its buffer.
    """
    data = bytes(data[: 1 << 20])  # the frame header comes before the (large) entropy-coded data
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            body = data[pos + 4 : pos + 2 + length]
            if len(body) < 6:
                return None
            return int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big"), body[5]
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"  # start of codestream, then the image and tile size marker
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"  # the JP2 file format's first box


def j2k_frame_size(data):
    """`(rows, cols, components)` from a JPEG 2000 codestream's SIZ marker (or a JP2 file's), or None.

    A codestream starts with its SOC and SIZ markers; a JP2 file with its signature box, the codestream
    following in its boxes. Other data (an RLE or deflated stream) is not searched: any byte sequence can
    occur in it.
    """
    data = bytes(data[: 1 << 16])
    if data.startswith(_J2K_SOC_SIZ):
        start = 0
    elif data.startswith(_JP2_SIGNATURE):
        start = data.find(_J2K_SOC_SIZ)
    else:
        return None
    if start < 0 or len(data) < start + 42:
        return None
    siz = data[start + 4 :]
    # Lsiz(2) Rsiz(2) Xsiz(4) Ysiz(4) XOsiz(4) YOsiz(4) XTsiz(4) YTsiz(4) XTOsiz(4) YTOsiz(4) Csiz(2)
    x, y, x0, y0 = (int.from_bytes(siz[o : o + 4], "big") for o in (4, 8, 12, 16))
    components = int.from_bytes(siz[36:38], "big")
    return max(y - y0, 0), max(x - x0, 0), components
