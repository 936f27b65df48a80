"""`python evaluate.py RUN_DIR` / `ptx-evaluate`: the paper's metrics, diagnosis table and figures for a run.

    python evaluate.py RUN_DIR [--data PATH] [--split test] [--tta none|hflip]
                       [--search-thresholds [--objective f1|youden|siim_dice] [--threshold-form pair|triplet]
                                            [--gate area|aux|both]]
    python evaluate.py --compare RUN_A RUN_B ... [--names A B ...] [--split test] [--output DIR]

See docs/evaluation.md for every output.
"""

import argparse

from ptx_keras.cli.common import run_cli
from ptx_keras.constants import TTA_MODES

__all__ = ["build_parser", "main"]


def build_parser():
    from ptx_keras.diagnosis import FORMS, GATES, OBJECTIVES

    p = argparse.ArgumentParser(
        prog="ptx-evaluate",
        description="Evaluate a trained run (writes RUN_DIR/eval/<split>/; with --data OTHER, "
        "RUN_DIR/eval/external/<data>/<split>/, never over the run's own results), or compare evaluated runs.",
    )
    p.add_argument("run_dir", nargs="?", help="run directory written by train.py")
    p.add_argument("--data", help="prepared directory or raw source (default: the run's own prepared data)")
    # Checked by the evaluation itself (one-line error), not by argparse choices.
    p.add_argument("--split", default="test", help="train, val or test (default: test)")
    p.add_argument(
        "--search-thresholds",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="choose the diagnosis thresholds on the validation split of the evaluated data first (never "
        "on test); on the run's own data they are saved to RUN_DIR/eval/val/thresholds.json and "
        "used by later evaluations and the export; on other data (--data) they are saved beside "
        "that data's evaluation and used for it only (default there: the run's thresholds); "
        "--no-search-thresholds uses the saved search, else the configuration's thresholds, whatever "
        "the run's evaluation.search_thresholds says",
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        help="what the threshold search maximises: a diagnosis score, or siim_dice, the SIIM-ACR mean Dice "
        "of the final masks (default: the run's evaluation.objective)",
    )
    p.add_argument(
        "--threshold-form",
        choices=FORMS,
        help="with --search-thresholds: pair (the paper's mask threshold + minimum area) or triplet (a "
        "higher top threshold decides the diagnosis, the mask is drawn at the mask threshold) "
        "(default: the run's evaluation.threshold_form)",
    )
    p.add_argument(
        "--gate",
        choices=GATES,
        help="with --search-thresholds: what diagnoses an image, area (the mask's area), aux (the aux "
        "head's image-level probability) or both (default: the run's diagnosis.gate)",
    )
    p.add_argument(
        "--tta",
        choices=TTA_MODES,
        help="test-time augmentation: hflip averages the model on the image and its mirror (default: the "
        "run's evaluation.tta)",
    )
    p.add_argument("--batch-size", type=int, help="prediction batch size (default: the run's evaluation.batch_size)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="RUN_DIR",
        help="compare evaluated runs (the first is the reference): mean (std), Student's t-test, paired "
        "Wilcoxon test; writes CSV + Markdown + a DSC histogram",
    )
    p.add_argument("--names", nargs="+", metavar="NAME", help="with --compare: display names, one per run")
    p.add_argument("--output", help="with --compare: output folder (default: FIRST_RUN/eval/<split>/comparison)")
    return p


def _evaluate(args, parser):
    from ptx_keras import evaluation

    if args.compare:
        if args.data or args.search_thresholds or args.objective or args.threshold_form or args.tta or args.gate:
            parser.error(
                "--compare reads existing evaluations; --data, --search-thresholds, --objective, "
                "--threshold-form, --gate and --tta do not apply"
            )
        runs = ([args.run_dir] if args.run_dir else []) + args.compare
        evaluation.compare_runs(runs, split=args.split, output=args.output, names=args.names)
        return 0
    if not args.run_dir:
        parser.error("RUN_DIR is required (or --compare RUN_A RUN_B ...)")
    if args.names or args.output:
        parser.error("--names and --output only apply with --compare")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1. Received: {args.batch_size}")
    evaluation.evaluate_run(
        args.run_dir,
        data=args.data,
        split=args.split,
        search_thresholds=args.search_thresholds,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        objective=args.objective,
        tta=args.tta,
        threshold_form=args.threshold_form,
        gate=args.gate,
    )
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_cli(_evaluate, args, parser)


if __name__ == "__main__":
    raise SystemExit(main())
