"""`ptx-experiments run FILE` (`python -m ptx_keras.cli.experiments`): reproduce the paper's Tables 2-5."""

import argparse

from ptx_keras.cli.common import run_cli

__all__ = ["build_parser", "main"]


def build_parser():
    p = argparse.ArgumentParser(
        prog="ptx-experiments",
        description="Train and evaluate every run of an experiment grid (configs/experiments/*.yaml), skipping "
        "finished runs, then write the paper-style tables (Markdown, CSV, LaTeX) and figures to DIR/tables/.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) an experiment grid and write its tables")
    run.add_argument("file", help="experiment YAML, e.g. configs/experiments/table2_3.yaml")
    run.add_argument("--data", help="data for every run: raw source (e.g. the SIIM-ACR folder) or prepared directory")
    run.add_argument("--output-dir", help="folder of the run directories and tables/ (default: runs/<experiment>)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a configuration value of every run, e.g. --set train.epochs=5 (repeatable)",
    )
    run.add_argument("--dry-run", action="store_true", help="list the runs and their settings; train nothing")
    run.add_argument(
        "--verbose", type=int, default=2, choices=(0, 1, 2), help="Keras training output (2: one line per epoch)"
    )
    return p


def _run(args):
    from ptx_keras.experiments import run_experiment

    result = run_experiment(
        args.file,
        output_dir=args.output_dir,
        data=args.data,
        overrides=args.overrides,
        dry_run=args.dry_run,
        verbose=args.verbose,
        progress=args.verbose > 0,
    )
    if args.dry_run:
        print(result.plan)
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(_run, args)


if __name__ == "__main__":
    raise SystemExit(main())
