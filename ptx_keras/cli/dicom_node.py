"""`ptx-dicom-node --model RUN --destination AE@HOST:PORT` / `python -m ptx_keras.cli.dicom_node`: a DICOM inference
node a PACS sends chest radiographs to; it stores a SEG and an SR (and a Parametric Map with --uncertainty) per
image in the destination (`ptx_keras.dicom_node`, docs/deployment.md).

Runs until SIGTERM or Ctrl-C, then finishes the batch in hand and exits 0. Exit status 2 for user errors (bad
arguments, a model that cannot be loaded, a spool folder that cannot be written, a port in use).
"""

import argparse
import signal

from ptx_keras.cli.common import run_cli
from ptx_keras.constants import UNCERTAINTY_METHODS
from ptx_keras.runtime import configure_process

__all__ = [
    "build_parser",
    "main",
]


def build_parser():
    p = argparse.ArgumentParser(
        prog="ptx-dicom-node",
        description="DICOM Storage SCP for chest radiographs (CR, DX, Secondary Capture): spools what it receives, "
        "predicts in batches and sends a DICOM Segmentation and a structured report per image to the destination. "
        "Research tool: not a certified medical device.",
    )
    _add_prediction_arguments(p.add_argument_group("prediction"))
    _add_network_arguments(p.add_argument_group("network"))
    return p


def _add_prediction_arguments(group):
    from ptx_keras.dicom_node import DEFAULT_BATCH_SIZE

    group.add_argument("--model", required=True, help="run directory or exported model (as ptx-predict --model)")
    group.add_argument(
        "--spool",
        default="ptx-node-spool",
        metavar="DIR",
        help="folder for received instances (incoming/), failures (failed/) and done markers (done/)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"instances predicted together (default {DEFAULT_BATCH_SIZE})",
    )
    group.add_argument(
        "--uncertainty",
        choices=UNCERTAINTY_METHODS,
        help="also send a DICOM Parametric Map of the per-pixel uncertainty (as ptx-predict)",
    )
    group.add_argument("--samples", type=int, metavar="N", help="samples per image for --uncertainty")


def _add_network_arguments(group):
    from ptx_keras.dicom_net import DEFAULT_TIMEOUT
    from ptx_keras.dicom_node import DEFAULT_AE_TITLE, DEFAULT_PORT, DEFAULT_RETRY_SECONDS

    group.add_argument(
        "--destination",
        required=True,
        metavar="AE@HOST:PORT|URL",
        help="where results go: a DICOM node (C-STORE) or a DICOMweb root (STOW-RS), e.g. "
        "ORTHANC@127.0.0.1:4242 or http://127.0.0.1:8042/dicom-web",
    )
    group.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"DICOM port to listen on (default {DEFAULT_PORT})"
    )
    group.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all interfaces)"
    )
    group.add_argument(
        "--ae-title",
        default=DEFAULT_AE_TITLE,
        help=f"this node's AE title, called by senders and calling the destination (default {DEFAULT_AE_TITLE})",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"network timeout in seconds (default {DEFAULT_TIMEOUT:g})",
    )
    group.add_argument(
        "--retry",
        type=float,
        default=DEFAULT_RETRY_SECONDS,
        metavar="S",
        help=f"first wait before results that could not be sent are tried again (default {DEFAULT_RETRY_SECONDS:g})",
    )


def _serve(args):
    from ptx_keras.dicom_node import DicomNode

    node = DicomNode(
        args.model,
        args.spool,
        args.destination,
        ae_title=args.ae_title,
        host=args.host,
        port=args.port,
        batch_size=args.batch_size,
        uncertainty=args.uncertainty,
        samples=args.samples,
        timeout=args.timeout,
        retry_seconds=args.retry,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: node.stop())
    pending = len(node.pending())
    node.start()
    if pending:
        print(f"{pending} spooled instance(s) from an earlier run are processed first", flush=True)
    print(f"{node.ae_title} ready on port {node.port}", flush=True)
    try:
        node.serve()
    finally:
        node.shutdown()
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    # Before TensorFlow starts. A PACS sends radiographs one by one, so most batches the node runs hold one image:
    # the batch-1 kernels (ptx_keras.runtime), whatever --batch-size allows when a study arrives at once.
    configure_process(purpose="serve", batch_size=1)
    return run_cli(_serve, args)


if __name__ == "__main__":
    raise SystemExit(main())
