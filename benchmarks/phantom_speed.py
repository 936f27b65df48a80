"""How fast are the phantom styles rendered and written? One JSON line per measurement.

- `render`: images per second (wall) and CPU seconds per image of `make_phantom` in this process, per style
  and size (after one warm-up image), `--n` images each, seeds 0.. (positives and negatives alternate).
- `write` (with `--write`): images per second of `write_phantom_dataset` (PNG, `--write-n` images at
  `--write-size`) with `workers=1` and `workers=2`, each run in a fresh process, alternating twice, so that the
  ratio is measured under the same load.

Usage: `python benchmarks/phantom_speed.py [--n 20] [--sizes 128 256 1024] [--styles classic varied heldout]
[--write --write-n 48 --write-size 1024]`. Quote the figures with the machine line and say whether the
machine was shared.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ptx_keras.data.phantoms import make_phantom  # noqa: E402

from _machine import machine  # noqa: E402


def emit(name, **values):
    versions = machine(numpy=np.__version__, scipy=scipy.__version__)
    print(json.dumps({"measurement": name, **values, **versions}), flush=True)


def render(style, size, n):
    make_phantom(size, seed=10**6, style=style)  # warm-up (imports, caches)
    wall, cpu = time.perf_counter(), time.process_time()
    for seed in range(n):
        make_phantom(size, seed=seed, positive=seed % 2 == 0, style=style)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    emit("render", style=style, size=size, n=n, images_per_s=round(n / wall, 2), cpu_s_per_image=round(cpu / n, 4))


_WRITE = """
import sys, tempfile, time
from ptx_keras.data.phantoms import write_phantom_dataset
n, size, workers, style = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with tempfile.TemporaryDirectory() as out:
    start = time.perf_counter()
    write_phantom_dataset(out, n, size=size, style=style, workers=workers, progress=False)
    print(time.perf_counter() - start)
"""


def write(style, n, size, repeats=2):
    for _ in range(repeats):
        for workers in (1, 2):
            with tempfile.TemporaryDirectory():
                out = subprocess.run(
                    [sys.executable, "-c", _WRITE, str(n), str(size), str(workers), style],
                    check=True,
                    capture_output=True,
                    text=True,
                )
            seconds = float(out.stdout.strip().splitlines()[-1])
            emit(
                "write",
                style=style,
                size=size,
                n=n,
                workers=workers,
                seconds=round(seconds, 2),
                images_per_s=round(n / seconds, 2),
            )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 1024])
    p.add_argument("--styles", nargs="+", default=["classic", "varied", "heldout"])
    p.add_argument("--write", action="store_true", help="also time write_phantom_dataset with 1 and 2 workers")
    p.add_argument("--write-n", type=int, default=48)
    p.add_argument("--write-size", type=int, default=1024)
    p.add_argument("--write-style", default="varied")
    args = p.parse_args(argv)
    for size in args.sizes:
        for style in args.styles:
            render(style, size, max(4, args.n // 4) if size >= 1024 else args.n)
    if args.write:
        write(args.write_style, args.write_n, args.write_size)


if __name__ == "__main__":
    main()
