"""Throughput of the DICOM inference node (`ptx-dicom-node`): instances per minute, network to network.

Writes `--images` SIIM-ACR-layout phantom DICOMs of `--raw-size` pixels (the varied style: MONOCHROME1/2, 8/12/16
bits, JPEG / RLE / deflate / uncompressed), starts `ptx-dicom-node` as a subprocess on a free port (its start-up,
TensorFlow and the model, is not timed), and a destination Storage SCP in this process (pynetdicom) that takes the
results. Then one association C-STOREs every phantom to the node; the clock runs from the first C-STORE to the
last result set (SEG + SR) received. Prints one JSON line with the machine description:

    python benchmarks/dicom_node.py [--model RUN_DIR | --arch ms_scse_fc_densenet103] [--size 256]
        [--images 16] [--raw-size 1024] [--batch-size 4] [--workdir DIR]

Without `--model` a run directory is made with the `--arch` network at `--size` and untrained (seeded) weights:
the throughput does not depend on training. The phantoms and the run are cached in `--workdir`.
"""

import argparse
import glob
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

# Run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._machine import machine

SEG_CLASS, SR_CLASS = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.33"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _run_dir(args):
    import keras

    from ptx_keras import build_model
    from ptx_keras.config import load_config, save_config

    run = os.path.join(args.workdir, f"run-{args.arch}-{args.size}")
    if not os.path.exists(os.path.join(run, "best.keras")):
        os.makedirs(run, exist_ok=True)
        cfg = load_config(extra={"model": {"name": args.arch}, "data": {"image_size": args.size}})
        save_config(cfg, os.path.join(run, "config.yaml"))
        keras.utils.set_random_seed(0)
        build_model(args.arch, input_shape=(args.size, args.size, cfg.data.channels)).save(
            os.path.join(run, "best.keras")
        )
    return run


def _destination(counts, lock, done, expected):
    """A Storage SCP that counts the SEG and SR it receives; `done` is set at the `expected`-th SR."""
    from pynetdicom import AE, evt

    def on_store(event):
        with lock:
            sop_class = str(event.request.AffectedSOPClassUID)
            counts[sop_class] = counts.get(sop_class, 0) + 1
            if counts.get(SR_CLASS, 0) >= expected:
                counts["last"] = time.perf_counter()
                done.set()
        return 0x0000

    from pynetdicom.sop_class import (
        ComprehensiveSRStorage,
        ParametricMapStorage,
        SegmentationStorage,
    )

    ae = AE(ae_title="DEST")
    for sop_class in (SegmentationStorage, ComprehensiveSRStorage, ParametricMapStorage):
        ae.add_supported_context(sop_class, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    port = _free_port()
    return ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]), port


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a run directory or an exported model (default: an untrained --arch run)")
    p.add_argument("--arch", default="ms_scse_fc_densenet103")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--raw-size", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "ptx_dicom_node_bench"))
    args = p.parse_args(argv)

    import pydicom
    from pynetdicom import AE

    from ptx_keras.data.phantoms.writing import write_phantom_dataset

    os.makedirs(args.workdir, exist_ok=True)
    model = args.model or _run_dir(args)
    phantoms = os.path.join(args.workdir, f"siim-{args.images}-{args.raw_size}")
    summary = write_phantom_dataset(
        phantoms, args.images, size=args.raw_size, format="siim", style="varied", progress=False
    )
    files = sorted(glob.glob(os.path.join(phantoms, "dicom-images-train", "*", "*", "*.dcm")))
    datasets = [pydicom.dcmread(f) for f in files]

    counts, lock, done = {}, threading.Lock(), threading.Event()
    server, dest_port = _destination(counts, lock, done, len(files))
    port = _free_port()
    spool = tempfile.mkdtemp(prefix="spool-", dir=args.workdir)
    log_path = os.path.join(spool, "node.log")
    with open(log_path, "wb") as log:
        node = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ptx_keras.cli.dicom_node",
                "--model",
                model,
                "--port",
                str(port),
                "--destination",
                f"DEST@127.0.0.1:{dest_port}",
                "--spool",
                spool,
                "--batch-size",
                str(args.batch_size),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        while b"ready on port" not in _read(log_path):
            if node.poll() is not None:
                sys.exit(_read(log_path)[-3000:].decode(errors="replace"))
            time.sleep(0.2)
        load_before = os.getloadavg()
        sender = AE(ae_title="SENDER")
        for sop_class, syntax in sorted({(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets}):
            sender.add_requested_context(sop_class, [syntax])
        started = time.perf_counter()
        assoc = sender.associate("127.0.0.1", port, ae_title="PTX")
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert status and status.Status == 0, status
        assoc.release()
        spooled = time.perf_counter() - started
        if not done.wait(3600):
            sys.exit(f"timed out; received {counts}")
        seconds = counts["last"] - started
    finally:
        node.terminate()
        node.wait(300)
        server.shutdown()
    import importlib.metadata as md

    print(
        json.dumps(
            {
                "measurement": "dicom_node",
                "model": model if args.model else f"{args.arch} (untrained) at {args.size}",
                "images": len(files),
                "raw_size": args.raw_size,
                "batch_size": args.batch_size,
                "exports": summary.get("exports"),
                "seconds": round(seconds, 2),
                "instances_per_minute": round(60 * len(files) / seconds, 1),
                "seconds_to_spool_all": round(spooled, 2),
                "received": {k: v for k, v in counts.items() if k != "last"},
                "load_average_before": [round(v, 2) for v in load_before],
                "load_average_after": [round(v, 2) for v in os.getloadavg()],
                "machine": machine(tensorflow=md.version("tensorflow"), pynetdicom=md.version("pynetdicom")),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
