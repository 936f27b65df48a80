"""Stored weight maps: bytes per example and what decoding them costs the tf.data pipeline.

Prints one JSON line per measurement, with a machine description:

* `weight_map_bytes` (`--sizes`): for masks at 256, 512 and 1024 px (empty, 5 pixels, moderate, large), the
  bytes of the map stored as the prepared data stores it (`encode_weight_map`: zlib, float32), beside raw
  float32 and raw float16, and the NumPy microseconds to encode and to decode it (best of 5);
* `pipeline` (`--pipeline`): images per second that `make_dataset(training=True)` delivers from a prepared
  directory (prepared here from phantoms at `--size` if missing), over `--epochs` epochs after one uncounted
  warm-up epoch. Run it in alternating fresh processes against two checkouts to compare storage formats:

    python benchmarks/weight_storage.py --sizes
    PYTHONPATH=CHECKOUT python benchmarks/weight_storage.py --pipeline --size 512 --workdir DIR
"""

import argparse
import json
import os
import sys
import tempfile
import time
import timeit

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _machine import machine  # noqa: E402


def _emit(name, info, **values):
    print(json.dumps({"measurement": name, **values, "machine": info}), flush=True)


def _masks(size):
    rows, cols = np.mgrid[0:size, 0:size]
    blob = lambda r: (rows - size // 3) ** 2 + 2 * (cols - size // 4) ** 2 <= r * r  # noqa: E731
    five = np.zeros((size, size), bool)
    five[size // 5, size // 3 : size // 3 + 5] = True
    return {"empty": np.zeros((size, size), bool), "5px": five, "moderate": blob(size // 10), "large": blob(size // 4)}


def sizes(info):
    from ptx_keras.data.codec import decode_weight_map, encode_weight_map
    from ptx_keras.data.weight_maps import spatial_weight_map

    for size in (256, 512, 1024):
        for case, mask in _masks(size).items():
            weight = spatial_weight_map(mask)
            data = encode_weight_map(weight)
            encode = min(timeit.repeat(lambda: encode_weight_map(weight), number=3, repeat=5)) / 3
            decode = (
                min(timeit.repeat(lambda: decode_weight_map(data, "float32", weight.shape), number=3, repeat=5)) / 3
            )
            _emit(
                "weight_map_bytes",
                info,
                size=size,
                mask=case,
                pixels=int(mask.sum()),
                distinct_values=int(np.unique(weight).size),
                stored=len(data),
                raw_float32=weight.size * 4,
                raw_float16=weight.size * 2,
                encode_us=round(encode * 1e6),
                decode_us=round(decode * 1e6),
            )


def pipeline(info, size, workdir, n, epochs, batch_size):
    from ptx_keras.data.phantoms import write_phantom_dataset
    from ptx_keras.data.pipeline import make_dataset
    from ptx_keras.data.prepare import prepare_dataset
    from ptx_keras.data.prepared import is_prepared_dir, load_prepared_info

    source = os.path.join(workdir, f"phantoms-{n}-{size}")
    prepared = os.path.join(workdir, f"prepared-{n}-{size}")
    if not is_prepared_dir(prepared):
        write_phantom_dataset(source, n, size=size, format="png", seed=0)
        prepare_dataset(source, prepared, image_size=size, split_fractions=(1, 0, 0), progress=False)
    stored = load_prepared_info(prepared)
    ds = make_dataset(prepared, "train", batch_size, training=True)
    for _ in ds:  # warm-up epoch: file cache, tf.data autotuning
        pass
    start = time.perf_counter()
    images = 0
    for _ in range(epochs):
        for batch, _ in ds:
            images += int(batch.shape[0])
    seconds = time.perf_counter() - start
    shard_bytes = sum(os.path.getsize(os.path.join(prepared, s)) for s in stored["shards"]["train"])
    _emit(
        "pipeline",
        info,
        size=size,
        images=images,
        images_per_s=round(images / seconds, 1),
        format_version=stored["format_version"],
        weight_dtype=stored["weight_dtype"],
        weight_encoding=stored.get("weight_encoding", "raw"),
        bytes_per_example=round(shard_bytes / n),
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", action="store_true")
    p.add_argument("--pipeline", action="store_true")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "ptx_keras_bench_weights"))
    args = p.parse_args(argv)

    import ptx_keras

    info = machine(numpy=np.__version__, ptx_keras_path=os.path.dirname(ptx_keras.__file__))
    if args.sizes:
        sizes(info)
    if args.pipeline:
        pipeline(info, args.size, args.workdir, args.n, args.epochs, args.batch_size)


if __name__ == "__main__":
    main()
