"""`python evaluate.py RUN_DIR` / `ptx-evaluate`: the paper's metrics, diagnosis table and figures for a run."""

import argparse

from ptx_keras.cli.common import run_cli


def build_parser():
    p = argparse.ArgumentParser(
        prog="ptx-evaluate",
        description="Evaluate a trained run (writes RUN_DIR/eval/<split>/), or compare evaluated runs.",
    )
    p.add_argument("run_dir", nargs="?", help="run directory written by train.py")
    p.add_argument("--data", help="prepared directory or raw source (default: the run's own prepared data)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--search-thresholds", action="store_true",
                   help="choose the diagnosis thresholds on the validation split first (never on test)")
    p.add_argument("--batch-size", type=int, help="prediction batch size")
    p.add_argument("--compare", nargs="+", metavar="RUN_DIR",
                   help="compare evaluated runs (the first is the reference): mean (std), t-test, paired Wilcoxon")
    p.add_argument("--output", help="with --compare: output folder")
    return p


def _evaluate(args, parser):
    from ptx_keras import evaluation

    if args.compare:
        runs = ([args.run_dir] if args.run_dir else []) + args.compare
        evaluation.compare_runs(runs, split=args.split, output=args.output)
        return 0
    if not args.run_dir:
        parser.error("RUN_DIR is required (or --compare RUN_A RUN_B ...)")
    evaluation.evaluate_run(args.run_dir, data=args.data, split=args.split,
                            search_thresholds=args.search_thresholds, batch_size=args.batch_size)
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_cli(_evaluate, args, parser)


if __name__ == "__main__":
    raise SystemExit(main())
