"""Data preparation and tf.data pipeline speed.

Prints one JSON line per measurement, with a machine description:

* `example_encoding`: microseconds to serialize one 256x256 example with the package's minimal protobuf
  writer (what the TensorFlow-free preparation workers use) and with `tf.train.Example`;
* `prepare_1024`: seconds per 1,000 images to prepare 1024x1024 PNG phantoms at 256x256 (measured on
  `--prepare-n` images with all cores, scaled);
* `pipeline_256`: images per second delivered by `make_dataset(training=True)` from prepared 256x256 shards
  (`--pipeline-n` phantoms, `--epochs` epochs after one warm-up epoch that is not counted);
* `on_the_fly_256`: the same for `make_dataset_from_source` (resizing and weight maps in the pipeline);
* `augment_<size>`: images per second and per CPU-second of `make_dataset(training=True, augment=PRESET)` at
  each of `--augment-sizes`, one fresh process per measurement, the presets alternating in rotated order
  over `--rounds` rounds (what else runs on a shared machine then slows all presets alike); then
  `augment_<size>_summary` with the medians and their ratio to `none`. `PRESET@F` also oversamples positive
  images to the fraction F (`positive_fraction`), e.g. `flip@0.5`.

    python benchmarks/pipeline.py [--workdir DIR] [--pipeline-n 512] [--prepare-n 100] [--epochs 3]
    python benchmarks/pipeline.py --skip encoding prepare pipeline --augment none flip standard strong

The phantoms are cached in `--workdir` (default: a folder in the system temp directory), so a second run
only measures.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

# Run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._machine import machine  # noqa: E402

# TensorFlow is imported inside the functions: preparation workers (spawned) import this script again.


def _emit(name, machine_info, **values):
    print(json.dumps({"measurement": name, **values, "machine": machine_info}), flush=True)


def _encoding(machine_info, repeats=200):
    import tensorflow as tf

    from ptx_keras.data.arrays import png_bytes
    from ptx_keras.data.codec import encode_example
    from ptx_keras.data.phantoms import make_phantom
    from ptx_keras.data.weight_maps import spatial_weight_map

    image, mask = make_phantom(256, seed=3, positive=True)[:2]
    image_png, mask_png = png_bytes(np.asarray(image, np.uint8)), png_bytes(np.asarray(mask, np.uint8))
    weight = spatial_weight_map(mask).astype(np.float16).tobytes()
    features = {
        "image": image_png,
        "mask": mask_png,
        "weight": weight,
        "sample_id": "x",
        "label": 1,
        "height": 256,
        "width": 256,
    }

    def ours():
        return encode_example(features)

    def theirs():
        def b(v):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

        def i(v):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

        return tf.train.Example(
            features=tf.train.Features(
                feature={
                    "image": b(image_png),
                    "mask": b(mask_png),
                    "weight": b(weight),
                    "sample_id": b(b"x"),
                    "label": i(1),
                    "height": i(256),
                    "width": i(256),
                }
            )
        ).SerializeToString()

    result = {}
    for name, fn in (("minimal_writer_us", ours), ("tf_train_example_us", theirs)):
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        result[name] = round((time.perf_counter() - start) / repeats * 1e6, 1)
    _emit("example_encoding", machine_info, bytes=len(ours()), **result)


def _prepare_1024(workdir, n, machine_info):
    from ptx_keras.data.phantoms import write_phantom_dataset
    from ptx_keras.data.prepare import prepare_dataset

    source = os.path.join(workdir, f"phantoms-1024-{n}")
    write_phantom_dataset(source, n, size=1024, format="png", seed=0)
    out = os.path.join(workdir, "prepared-from-1024")
    shutil.rmtree(out, ignore_errors=True)
    workers = os.cpu_count()
    start = time.perf_counter()
    summary = prepare_dataset(source, out, image_size=256, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    _emit(
        "prepare_1024",
        machine_info,
        images=n,
        workers=workers,
        seconds=round(seconds, 2),
        seconds_per_1000=round(seconds / n * 1000, 1),
        images_per_s=round(n / seconds, 2),
        shards_written=summary["shards_written"],
        load_average=round(os.getloadavg()[0], 1),
    )


def _throughput(make, epochs):
    """`(images, wall seconds, CPU seconds of this process)` over `epochs` epochs after an uncounted warm-up.

    The CPU seconds (all threads) give images per CPU-second, which depends much less than the wall time on
    what else the machine runs.
    """
    ds = make()
    for _ in ds:
        pass
    images = 0
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        for image, _y in ds:
            images += int(image.shape[0])
    return images, time.perf_counter() - start, time.process_time() - cpu


def _pipeline_256(workdir, n, epochs, batch_size, machine_info):
    from ptx_keras.data.phantoms import write_phantom_dataset
    from ptx_keras.data.pipeline import make_dataset, make_dataset_from_source
    from ptx_keras.data.prepare import prepare_dataset

    source = os.path.join(workdir, f"phantoms-256-{n}")
    write_phantom_dataset(source, n, size=256, format="png", seed=0)
    out = os.path.join(workdir, "prepared-256")
    # All samples in "train": the pipeline measurement needs one large split.
    prepare_dataset(source, out, image_size=256, split_fractions=(1.0, 0.0, 0.0), progress=False)
    for name, make, n_epochs in (
        ("pipeline_256", lambda: make_dataset(out, "train", batch_size, training=True), epochs),
        ("on_the_fly_256", lambda: make_dataset_from_source(source, batch_size, True, image_size=256), 1),
    ):
        images, seconds, cpu_seconds = _throughput(make, n_epochs)
        _emit(
            name,
            machine_info,
            images=images,
            epochs=n_epochs,
            batch_size=batch_size,
            channels=3,
            seconds=round(seconds, 2),
            images_per_s=round(images / seconds, 1),
            cpu_seconds=round(cpu_seconds, 2),
            images_per_cpu_s=round(images / cpu_seconds, 1),
            load_average=round(os.getloadavg()[0], 1),
        )


def _augment_worker(prepared, preset, epochs, batch_size):
    """One measurement in this (fresh) process: prints `{images, seconds, cpu_seconds}` as JSON."""
    from ptx_keras.data.pipeline import make_dataset

    preset, _, fraction = preset.partition("@")
    images, seconds, cpu_seconds = _throughput(
        lambda: make_dataset(
            prepared,
            "train",
            batch_size,
            training=True,
            augment=preset,
            positive_fraction=float(fraction) if fraction else None,
        ),
        epochs,
    )
    print(json.dumps({"images": images, "seconds": seconds, "cpu_seconds": cpu_seconds}), flush=True)


def _augment(workdir, n, sizes, presets, rounds, epochs, batch_size, machine_info):
    import subprocess

    from ptx_keras.data.phantoms import write_phantom_dataset
    from ptx_keras.data.prepare import prepare_dataset

    for size in sizes:
        source = os.path.join(workdir, f"phantoms-{size}-{n}")
        write_phantom_dataset(source, n, size=size, format="png", seed=0)
        out = os.path.join(workdir, f"prepared-{size}")
        prepare_dataset(source, out, image_size=size, split_fractions=(1.0, 0.0, 0.0), progress=False)
        results = {p: [] for p in presets}
        for r in range(rounds):
            for preset in presets[r % len(presets) :] + presets[: r % len(presets)]:
                cmd = [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--augment-worker",
                    out,
                    preset,
                    "--epochs",
                    str(epochs),
                    "--batch-size",
                    str(batch_size),
                ]
                line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
                m = json.loads(line)
                results[preset].append(m)
                _emit(
                    f"augment_{size}",
                    machine_info,
                    preset=preset,
                    round=r,
                    images=m["images"],
                    epochs=epochs,
                    batch_size=batch_size,
                    channels=3,
                    seconds=round(m["seconds"], 2),
                    images_per_s=round(m["images"] / m["seconds"], 1),
                    images_per_cpu_s=round(m["images"] / m["cpu_seconds"], 1),
                    load_average=round(os.getloadavg()[0], 1),
                )
        medians = {
            p: (
                float(np.median([m["images"] / m["seconds"] for m in ms])),
                float(np.median([m["images"] / m["cpu_seconds"] for m in ms])),
            )
            for p, ms in results.items()
        }
        base = medians.get("none")
        _emit(
            f"augment_{size}_summary",
            machine_info,
            rounds=rounds,
            presets={
                p: {
                    "images_per_s": round(v[0], 1),
                    "images_per_cpu_s": round(v[1], 1),
                    **(
                        {"ratio_to_none": round(v[0] / base[0], 2), "cpu_ratio_to_none": round(v[1] / base[1], 2)}
                        if base
                        else {}
                    ),
                }
                for p, v in medians.items()
            },
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "ptx_keras_bench_pipeline"))
    p.add_argument("--pipeline-n", type=int, default=512)
    p.add_argument("--prepare-n", type=int, default=100)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--skip", nargs="*", default=(), choices=("encoding", "prepare", "pipeline"))
    p.add_argument("--augment", nargs="*", default=(), help="augmentation presets to time, e.g. none flip standard")
    p.add_argument("--augment-sizes", nargs="+", type=int, default=(128, 256))
    p.add_argument("--augment-n", type=int, default=256, help="phantoms per size for the augmentation timing")
    p.add_argument("--rounds", type=int, default=3, help="rounds of alternating processes per preset")
    p.add_argument("--augment-worker", nargs=2, metavar=("PREPARED", "PRESET"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.augment_worker:
        _augment_worker(*args.augment_worker, args.epochs, args.batch_size)
        return 0
    os.makedirs(args.workdir, exist_ok=True)
    import tensorflow as tf

    machine_info = machine(numpy=np.__version__, tensorflow=tf.__version__)
    if "encoding" not in args.skip:
        _encoding(machine_info)
    if "prepare" not in args.skip:
        _prepare_1024(args.workdir, args.prepare_n, machine_info)
    if "pipeline" not in args.skip:
        _pipeline_256(args.workdir, args.pipeline_n, args.epochs, args.batch_size, machine_info)
    if args.augment:
        _augment(
            args.workdir,
            args.augment_n,
            args.augment_sizes,
            list(args.augment),
            args.rounds,
            args.epochs,
            args.batch_size,
            machine_info,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
