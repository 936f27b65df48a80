"""The stored example: a `tf.train.Example` written without TensorFlow, and the weight map's encoding.

Preparation workers (spawned processes) never import TensorFlow: `encode_example` serializes each example with
a minimal protobuf writer, and the tf.data pipeline parses it with `tf.io.parse_single_example` like any
`tf.train.Example`. The weight map is stored losslessly: zlib-compressed little-endian values
(`encode_weight_map`), which the pipeline decodes with `tf.io.decode_compressed` and `tf.io.decode_raw`.
"""

import zlib

import numpy as np

from ptx_keras.errors import DataError

__all__ = [
    "FEATURES",
    "WEIGHT_COMPRESS_LEVEL",
    "WEIGHT_ENCODING",
    "decode_weight_map",
    "encode_example",
    "encode_weight_map",
]


FEATURES = ("image", "mask", "weight", "sample_id", "label", "height", "width")
# zlib level 1 on the weight map: measured faster to compress and to decompress than the default 6, and the
# stored map (~2 KB at 256 px, ~23 KB at 1024) is small beside the image's PNG either way (docs/data.md).
WEIGHT_COMPRESS_LEVEL = 1
WEIGHT_ENCODING = "zlib"  # recorded in dataset.json; the pipeline decodes it with tf.io.decode_compressed


def _varint(value):
    if value < 0:
        value += 1 << 64  # int64 two's complement, as protobuf encodes negative int64
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _header(number, length):
    """The tag and length of a length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(length)


def _wrap(number, chunks, length):
    """Wraps `chunks` (total `length` bytes) as field `number`: returns the new chunks and length."""
    head = _header(number, length)
    return [head, *chunks], len(head) + length


def encode_example(features):
    """Serializes a `tf.train.Example` without TensorFlow.

    `Example{features=1: Features{feature=1: map<string, Feature>}}`, `Feature{bytes_list=1, int64_list=3}`,
    `BytesList{value=1}`, `Int64List{value=1 (packed)}`. `tf.io.parse_single_example` reads the result
    exactly like `tf.train.Example(...).SerializeToString()` (the tests check it). The pieces are joined
    once at the end, so the large payloads (image, weight map) are copied only once.

    Args:
        features: dict of feature name -> `bytes`, `str` (UTF-8 encoded) or int / list of ints.

    Returns:
        The serialized example, bytes.
    """
    chunks, total = [], 0
    for key, value in features.items():
        if isinstance(value, str):
            value = value.encode("utf-8")
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value)
            feature, length = _wrap(1, *_wrap(1, [value], len(value)))
        else:
            values = [value] if isinstance(value, (int, np.integer)) else list(value)
            packed = b"".join(_varint(int(v)) for v in values)
            feature, length = _wrap(3, *_wrap(1, [packed], len(packed)))
        name = key.encode("utf-8")
        key_field = _header(1, len(name)) + name
        entry, length = _wrap(2, feature, length)
        entry, length = _wrap(1, [key_field, *entry], len(key_field) + length)
        chunks += entry
        total += length
    return b"".join(_wrap(1, chunks, total)[0])


def encode_weight_map(weight):
    """The stored `weight` feature: zlib-compressed little-endian values of `weight`'s dtype, row-major.

    Lossless: `decode_weight_map` (NumPy) and the tf.data pipeline (`tf.io.decode_compressed` then
    `tf.io.decode_raw`) give back the array bit for bit.
    """
    little = np.ascontiguousarray(weight, dtype=weight.dtype.newbyteorder("<"))
    return zlib.compress(little.tobytes(), WEIGHT_COMPRESS_LEVEL)


def decode_weight_map(data, weight_dtype, shape):
    """Inverse of `encode_weight_map`: a `weight_dtype` array of `shape` (e.g. `(image_size, image_size)`).

    Raises:
        DataError: if `data` is not a zlib stream of `shape` values of `weight_dtype`.
    """
    dtype = np.dtype(weight_dtype)
    try:
        values = np.frombuffer(zlib.decompress(data), dtype.newbyteorder("<"))
        return values.reshape(shape).astype(dtype)
    except (zlib.error, ValueError) as e:
        raise DataError(f"not a stored weight map of shape {tuple(shape)} ({weight_dtype}): {e}") from None
