"""`ptx-predict INPUT...` / `python -m ptx_keras.cli.predict`: segment and diagnose new images (docs/deployment.md).

Exit status: 0 when every file was predicted, 1 when some file could not be read (listed in predictions.csv),
2 for user errors (no inputs found, missing model, bad arguments).
"""

import argparse

from ptx_keras.cli.common import run_cli
from ptx_keras.constants import MAX_IMAGE_PIXELS, TTA_MODES, UNCERTAINTY_METHODS
from ptx_keras.runtime import configure_process, serving_batch_size

__all__ = ["build_parser", "main"]


def build_parser():
    p = argparse.ArgumentParser(
        prog="ptx-predict",
        description="Predict pneumothorax masks and diagnoses for PNG/JPEG/DICOM images (files or folders, "
        "searched recursively). Writes predictions.csv, overlay PNGs and optionally masks, a SIIM-ACR "
        "submission.csv or, for DICOM inputs, a DICOM Segmentation and report each. Research tool: not a certified "
        "medical device.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    _add_model_arguments(p.add_argument_group("model and inputs"))
    _add_output_arguments(p.add_argument_group("outputs"))
    _add_uncertainty_arguments(p.add_argument_group("uncertainty"))
    _add_send_arguments(p.add_argument_group("sending the DICOM results to a PACS"))
    return p


def _add_model_arguments(group):
    group.add_argument(
        "--model",
        help="run directory or exported model: a SavedModel, an .onnx or .tflite file (or "
        "the directory ptx-export wrote it into); default: the latest run under ./runs",
    )
    group.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per model call (default 8)")
    group.add_argument(
        "--tta",
        choices=TTA_MODES,
        help="test-time augmentation: hflip averages the model on the image and its mirror (default: the "
        "run's evaluation.tta, or what the SavedModel was exported with)",
    )
    group.add_argument(
        "--max-image-pixels",
        type=int,
        default=MAX_IMAGE_PIXELS,
        metavar="N",
        help="refuse images with more pixels (rows x columns x samples x frames, read from the header "
        f"before decoding; that file gets an error row; default {MAX_IMAGE_PIXELS:,})",
    )


def _add_output_arguments(group):
    from ptx_keras.predict import FORMATS

    group.add_argument("--output", default="predictions", metavar="DIR", help="output directory (default: predictions)")
    group.add_argument(
        "--format",
        default="csv",
        choices=FORMATS,
        help="csv; siim to also write submission.csv; dicom to also write a DICOM Segmentation and a "
        "structured report per DICOM input (dicom/)",
    )
    group.add_argument("--save-masks", action="store_true", help="also write the masks as PNG (0/255)")
    group.add_argument("--no-overlays", action="store_true", help="do not write overlay PNGs")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_uncertainty_arguments(group):
    group.add_argument(
        "--uncertainty",
        choices=UNCERTAINTY_METHODS,
        help="also write per-pixel standard-deviation maps (uncertainty/<id>.png) and image-level "
        "uncertainty columns: mc_dropout (a run directory's model with dropout active) or tta "
        "(mirror and intensity views); with --format dicom also a DICOM Parametric Map per DICOM "
        "input (dicom/<id>_pm.dcm)",
    )
    group.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help="samples per image for --uncertainty (default: 10 for mc_dropout, 2 for tta)",
    )


def _add_send_arguments(group):
    group.add_argument(
        "--send",
        metavar="AE@HOST:PORT|URL",
        help="with --format dicom: store the DICOM results in a PACS, by C-STORE to AE@HOST:PORT or by "
        "STOW-RS to a DICOMweb root (http://HOST:PORT/dicom-web); the files stay in DIR/dicom",
    )
    group.add_argument(
        "--calling-ae",
        default="PTX",
        metavar="AE",
        help="this side's AE title for --send AE@HOST:PORT (default PTX; the PACS must know it)",
    )


def _predict(args):
    from ptx_keras.predict import predict_paths

    destination = None
    if args.send:
        from ptx_keras.dicom_net import check_ae_title, parse_destination
        from ptx_keras.errors import ConfigError

        if args.format != "dicom":
            raise ConfigError("--send stores the DICOM results: add --format dicom")
        destination = parse_destination(args.send)  # checked before any prediction
        check_ae_title(args.calling_ae, "--calling-ae")

    s = predict_paths(
        args.inputs,
        args.model,
        args.output,
        format=args.format,
        batch_size=args.batch_size,
        save_masks=args.save_masks,
        overlays=not args.no_overlays,
        progress=not args.no_progress,
        tta=args.tta,
        uncertainty=args.uncertainty,
        samples=args.samples,
        max_image_pixels=args.max_image_pixels,
    )
    parts = [
        f"{s['n_ok']}/{s['n_files']} images predicted, {s['n_positive']} pneumothorax",
        f"table: {s['predictions']}",
    ]
    if s["submission"]:
        parts.append(f"submission: {s['submission']}")
    if s["dicom_dir"]:
        parts.append(f"DICOM SEG/SR{'/PM' if s['uncertainty'] else ''}: {s['dicom_dir']}")
    if s["images_per_second"]:
        parts.append(f"{s['images_per_second']:.2f} images/s")
    print(" | ".join(parts))
    if s["dicom_skipped"]:
        print(
            f"DICOM output needs DICOM input: {len(s['dicom_skipped'])} non-DICOM file(s) got no SEG/SR, e.g. "
            f"{s['dicom_skipped'][0]} (their predictions are in the table)"
        )
    if destination is not None:
        _send(s, destination, args.calling_ae)
    if s["n_failed"]:
        print(
            f"{s['n_failed']} file(s) failed, e.g. {s['failed'][0][0]}: {s['failed'][0][1]} (all listed in the table)"
        )
        return 1
    return 0


def _send(summary, destination, calling_ae):
    """Stores every DICOM object of the run in `destination`; a failure raises `SendError` (exit status 2)."""
    import os

    import pandas as pd

    from ptx_keras.dicom_net import send_files

    table = pd.read_csv(summary["predictions"], keep_default_na=False)
    out = os.path.dirname(summary["predictions"])
    files = [os.path.join(out, v) for k in ("dicom_seg", "dicom_sr", "dicom_pm") for v in table[k] if v]
    sent = send_files(files, destination, calling_ae=calling_ae)
    print(f"sent {sent} DICOM object(s) to {destination}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch_size >= 1:  # else predict_paths names the bad value
        # Before TensorFlow starts: the kernels for the batches this process will run (ptx_keras.runtime).
        configure_process(purpose="serve", batch_size=serving_batch_size(args.inputs, args.batch_size))
    return run_cli(_predict, args)


if __name__ == "__main__":
    raise SystemExit(main())
