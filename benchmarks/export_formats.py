"""Parity and speed of the deployment formats (SavedModel, ONNX, LiteRT) against Keras, for one model.

Prints one JSON line per measurement, with a machine description:

* `export`: seconds to export the model in each format (`ptx_keras.export.export_model`) and the file size;
* `parity`: each format's raw entry point (SavedModel `serve_uint8`, ONNX / LiteRT `serve_value_max`) against
  the same graph run by TensorFlow on the Keras model (`ServingGraph`), on `--images` heldout phantoms at
  `--raw-size` (uint8): the largest absolute difference of the probability maps and of `max_probability`,
  the fraction of mask pixels that differ, and the diagnoses that differ;
* `speed`: images per second of one format, measured in a fresh process (`--worker`): `model`, the model-size
  path `ptx-predict` batches (preprocessed `S x S` inputs through `Predictor.runner`, `--batch` images per
  call), and `raw`, the whole graph on a `--raw-size` uint8 image (preprocessing, network, diagnosis, outputs
  at that size), one image per call; `--repeats` timed calls after one warm-up call. The formats alternate in
  rotated order over `--rounds` rounds (what else runs on a shared machine slows them alike), then
  `speed_summary` gives the medians and their ratios to Keras.

    python benchmarks/export_formats.py [--model ms_scse_fc_densenet103] [--size 256] [--workdir DIR]
        [--images 8] [--raw-size 1024] [--batch 4] [--repeats 3] [--rounds 2]

The model has untrained (seeded) weights: parity and speed do not depend on training. The exports are cached
in `--workdir`, so a second run only measures.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# Run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._machine import machine  # noqa: E402

FORMATS = ("keras", "savedmodel", "onnx", "litert")


def _emit(name, machine_info, **values):
    print(json.dumps({"measurement": name, **values, "machine": machine_info}), flush=True)


def _versions():
    import importlib.metadata as md

    out = {}
    for name in ("tensorflow", "keras", "onnxruntime", "tf2onnx", "ai-edge-litert"):
        try:
            out[name.replace("-", "_")] = md.version(name)
        except md.PackageNotFoundError:
            out[name.replace("-", "_")] = None
    return out


def _paths(workdir):
    return {
        "keras": os.path.join(workdir, "model.keras"),
        "savedmodel": os.path.join(workdir, "savedmodel", "1"),
        "onnx": os.path.join(workdir, "onnx", "model.onnx"),
        "litert": os.path.join(workdir, "litert", "model.tflite"),
    }


def _export(args, info):
    import keras

    from ptx_keras import build_model
    from ptx_keras.export import export_model

    paths = _paths(args.dir)
    if all(os.path.exists(p) for p in paths.values()):
        return
    keras.utils.set_random_seed(0)
    model = build_model(args.model, input_shape=(args.size, args.size, 3))
    model.save(paths["keras"])
    for fmt in FORMATS[1:]:
        start = time.perf_counter()
        result = export_model(model, fmt, os.path.join(args.dir, fmt))
        size = (
            sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(result.path) for f in fs)
            if os.path.isdir(result.path)
            else os.path.getsize(result.path)
        )
        _emit(
            "export",
            info,
            model=args.model,
            size=args.size,
            format=fmt,
            seconds=round(time.perf_counter() - start, 1),
            megabytes=round(size / 1e6, 1),
        )


def _phantoms(args):
    from ptx_keras.data.phantoms import make_phantom

    images = []
    for i in range(args.images):
        image = np.asarray(make_phantom(args.raw_size, seed=100 + i, positive=i % 2 == 0, style="heldout")[0])
        images.append(np.clip(np.round(image.astype(np.float64)), 0, 255).astype(np.uint8))
    return images


def _raw_runner(fmt, path):
    """A function `uint8 (1, H, W) -> dict of NumPy outputs` through the format's raw entry point."""
    if fmt == "keras":
        from ptx_keras.export.graph import ServingGraph, resolve_deployed
        from ptx_keras.loading import load_model

        function = ServingGraph(resolve_deployed(load_model(path))[0]).portable_function()
        return lambda x: {k: v.numpy() for k, v in function(x.astype(np.float32), np.float32(255)).items()}
    if fmt == "savedmodel":
        import tensorflow as tf

        signature = tf.saved_model.load(path).signatures["serve_uint8"]
        return lambda x: {k: v.numpy() for k, v in signature(images=tf.constant(x)).items()}
    from ptx_keras.artifacts import ArtifactSession

    session = ArtifactSession(fmt, path)
    return lambda x: session(x, 255.0)


def _parity(args, info):
    paths = _paths(args.dir)
    images = _phantoms(args)
    reference = _raw_runner("keras", paths["keras"])
    refs = [reference(image[None]) for image in images]
    for fmt in FORMATS[1:]:
        run = _raw_runner(fmt, paths[fmt])
        p_diff = m_diff = 0.0
        mask_px = diagnoses = 0
        for image, ref in zip(images, refs):
            out = run(image[None])
            p_diff = max(p_diff, float(np.abs(out["probability"].astype(np.float64) - ref["probability"]).max()))
            m_diff = max(m_diff, float(np.abs(out["max_probability"] - ref["max_probability"]).max()))
            mask_px += int((out["mask"] != ref["mask"]).sum())
            diagnoses += int((out["diagnosis"] != ref["diagnosis"]).sum())
        _emit(
            "parity",
            info,
            model=args.model,
            size=args.size,
            format=fmt,
            images=len(images),
            raw_size=args.raw_size,
            max_abs_probability=p_diff,
            max_abs_max_probability=m_diff,
            mask_pixels_differing=mask_px,
            mask_pixels=int(len(images) * args.raw_size**2),
            diagnoses_differing=diagnoses,
            positives=int(sum(int(r["diagnosis"][0]) for r in refs)),
        )


def _worker(args):
    """One fresh process: one format's images/s at the model size and on raw images."""
    from ptx_keras.runtime import configure_process

    configure_process()
    path = _paths(args.dir)[args.worker]
    if args.worker == "keras":
        from ptx_keras.inference import ModelRunner
        from ptx_keras.loading import load_model

        runner = ModelRunner.from_keras(load_model(path))
    else:
        from ptx_keras.predict import load_predictor

        runner = load_predictor(os.path.dirname(path) if args.worker != "savedmodel" else path).runner
    rng = np.random.default_rng(0)
    batch = rng.random((args.batch, args.size, args.size, 3)).astype(np.float32)
    batch[..., 1:] = batch[..., :1]  # gray replicated, as preprocessing makes it
    runner(batch)
    start = time.perf_counter()
    for _ in range(args.repeats):
        runner(batch)
    model_ips = args.batch * args.repeats / (time.perf_counter() - start)
    raw = _raw_runner(args.worker, path)
    image = _phantoms(argparse.Namespace(images=1, raw_size=args.raw_size))[0][None]
    raw(image)
    start = time.perf_counter()
    for _ in range(args.repeats):
        raw(image)
    raw_ips = args.repeats / (time.perf_counter() - start)
    print(json.dumps({"model": model_ips, "raw": raw_ips}), flush=True)


def _speed(args, info):
    results = {fmt: {"model": [], "raw": []} for fmt in FORMATS}
    for r in range(args.rounds):
        order = FORMATS[r % len(FORMATS) :] + FORMATS[: r % len(FORMATS)]
        for fmt in order:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", fmt] + [
                f"--{k.replace('_', '-')}={v}"
                for k, v in vars(args).items()
                if k in ("model", "size", "workdir", "raw_size", "batch", "repeats")
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            values = json.loads(out)
            for key in ("model", "raw"):
                results[fmt][key].append(values[key])
            _emit(
                "speed",
                info,
                model=args.model,
                size=args.size,
                format=fmt,
                round=r,
                model_images_per_s=round(values["model"], 3),
                raw_images_per_s=round(values["raw"], 3),
                batch=args.batch,
                raw_size=args.raw_size,
                repeats=args.repeats,
            )
    medians = {fmt: {k: statistics.median(v) for k, v in res.items()} for fmt, res in results.items()}
    _emit(
        "speed_summary",
        info,
        model=args.model,
        size=args.size,
        rounds=args.rounds,
        median_images_per_s={f: {k: round(v, 3) for k, v in m.items()} for f, m in medians.items()},
        ratio_to_keras={f: {k: round(v / medians["keras"][k], 3) for k, v in m.items()} for f, m in medians.items()},
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ms_scse_fc_densenet103")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "ptx_export_formats"))
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--raw-size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--skip", nargs="*", default=(), choices=("export", "parity", "speed"))
    p.add_argument("--worker", choices=FORMATS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.workdir = os.path.abspath(args.workdir)
    args.dir = os.path.join(args.workdir, f"{args.model}-{args.size}")
    if args.worker:
        return _worker(args)
    os.makedirs(args.dir, exist_ok=True)
    info = machine(**_versions())
    if "export" not in args.skip:
        _export(args, info)
    if "parity" not in args.skip:
        _parity(args, info)
    if "speed" not in args.skip:
        _speed(args, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
