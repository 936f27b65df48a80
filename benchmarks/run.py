"""Runs every speed benchmark: the package against PyTorch, the matmul reference, models, the data pipeline.

Each benchmark prints its own JSON lines (one per measurement, with the machine description); this script
runs them one after another as subprocesses (so that one's memory and threads do not disturb the next),
passes their lines through, and ends with a `run_summary` line (seconds per benchmark, exit codes, load).

    python benchmarks/run.py [--quick] [--workdir DIR]

`--quick` prints every kind of figure with fewer repeats, one side-by-side round, fewer training
configurations and a smaller data-pipeline run; it must finish in under 15 minutes on an idle 2-core machine
(timings per machine in docs/benchmarks.md).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def commands(quick, workdir):
    """`(name, argv)` of every benchmark of a full or `--quick` run."""
    python = sys.executable
    side_by_side = [python, os.path.join(HERE, "side_by_side.py")] + (["--quick"] if quick else [])
    models = [python, os.path.join(HERE, "models.py")] + (["--quick"] if quick else [])
    pipeline = [python, os.path.join(HERE, "pipeline.py"), "--workdir", workdir]
    if quick:
        pipeline += ["--pipeline-n", "64", "--prepare-n", "12", "--epochs", "1"]
    return [("side_by_side", side_by_side), ("models", models), ("pipeline", pipeline)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="every figure in under 15 minutes")
    p.add_argument(
        "--workdir",
        default=os.path.join(tempfile.gettempdir(), "ptx_keras_bench_pipeline"),
        help="cache of the pipeline benchmark's phantoms",
    )
    args = p.parse_args(argv)
    summary, start, status = {}, time.perf_counter(), 0
    for name, command in commands(args.quick, args.workdir):
        began = time.perf_counter()
        # Lines are passed on as they come: a long run shows its progress.
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
            for line in proc.stdout:
                if line.startswith("{"):
                    print(line.rstrip("\n"), flush=True)
        summary[name] = {"seconds": round(time.perf_counter() - began, 1), "exit_code": proc.returncode}
        status = status or proc.returncode
    print(
        json.dumps(
            {
                "measurement": "run_summary",
                "quick": args.quick,
                "benchmarks": summary,
                "total_seconds": round(time.perf_counter() - start, 1),
                "load_average": [round(v, 2) for v in os.getloadavg()],
            }
        ),
        flush=True,
    )
    return 1 if status else 0


if __name__ == "__main__":
    sys.exit(main())
