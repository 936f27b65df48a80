"""Running an experiment: every unfinished run is trained and evaluated, then the tables are written.

A run is finished when it has `eval/test/per_image.csv`; finished runs are skipped, an interrupted run resumes
through training's `BackupAndRestore`, so the same command resumes a grid. A run that fails is reported (its
traceback in `RUN_DIR/error.txt`) and the others go on.
"""

import dataclasses
import logging
import os
import traceback

from ptx_keras.errors import PtxError
from ptx_keras.experiments.plan import (
    FINISHED,
    PARTIAL,
    default_output_dir,
    describe_plan,
    plan_runs,
    run_status,
)
from ptx_keras.experiments.spec import TABLES_DIRNAME, load_experiment
from ptx_keras.experiments.tables import EVAL_SPLIT, write_tables

__all__ = ["ExperimentResult", "run_experiment"]


logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ExperimentResult:
    """What `run_experiment` did.

    Attributes:
        experiment: The `Experiment`.
        output_dir: Parent of the run directories and of `tables/`.
        plan: The plan as text (runs, state, differing keys).
        runs: The `PlannedRun`s, in the file's order.
        trained, skipped, failed: Run names.
        tables: The paths `write_tables` returned, or None (dry run, or no run finished).
    """

    experiment: object
    output_dir: str
    plan: str
    runs: list
    trained: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)
    tables: dict = None


def _train_and_evaluate(cfg, verbose, progress):
    from ptx_keras.evaluation import evaluate_run
    from ptx_keras.runs import RunDir
    from ptx_keras.workflows import train_evaluate_export

    train_evaluate_export(cfg, verbose=verbose, progress=progress)
    if run_status(cfg.run_dir) != FINISHED:  # training's own evaluation is off, or used another split
        evaluate_run(RunDir(cfg.run_dir), split=EVAL_SPLIT, progress=progress)


def run_experiment(path, output_dir=None, data=None, overrides=(), dry_run=False, verbose=2, progress=True):
    """Trains and evaluates every unfinished run of an experiment file, then writes its tables and figures.

    Args:
        path: Experiment YAML (schema in the module docstring).
        output_dir: Parent of the run directories and of `tables/` (default: `runs/<experiment name>`).
        data: Data for every run (`--data`): a raw source such as the SIIM-ACR folder, or a prepared directory;
            default: each configuration's `data.path` (the phantoms when empty).
        overrides: `key=value` strings applied to every run (`--set`).
        dry_run: Only print the plan (runs, state, differing keys); nothing is trained or written.
        verbose: Keras verbosity of training (2: one line per epoch).
        progress: Progress bars in evaluation and figure prediction.

    Returns:
        `ExperimentResult`.

    Raises:
        ConfigError: for an invalid experiment or run configuration.
        PtxError: when runs failed (after the tables of the finished runs are written); each failed run's
            traceback is in `RUN_DIR/error.txt`.
    """
    experiment = load_experiment(path)
    output_dir = output_dir or default_output_dir(experiment)
    planned = plan_runs(experiment, output_dir, data, overrides)
    plan_text = describe_plan(experiment, planned, output_dir, data, overrides)
    result = ExperimentResult(experiment, output_dir, plan_text, planned)
    if dry_run:
        return result
    logger.info("%s", plan_text)
    for i, p in enumerate(planned, start=1):
        if p.status == FINISHED:
            logger.info("[%d/%d] %s: finished, skipped", i, len(planned), p.spec.name)
            result.skipped.append(p.spec.name)
            continue
        word = "resuming" if p.status == PARTIAL else "training"
        logger.info("[%d/%d] %s: %s in %s", i, len(planned), p.spec.name, word, p.run_dir)
        try:
            _train_and_evaluate(p.config, verbose, progress)
        except Exception as e:  # noqa: BLE001 - one failed run (bad option, out of memory) must not stop the grid
            from ptx_keras.runs import RunDir

            run = RunDir(p.run_dir)
            os.makedirs(run.path, exist_ok=True)
            with open(run.error_file, "w", encoding="utf-8") as f:
                f.write(traceback.format_exc())
            logger.error("[%d/%d] %s: FAILED: %s: %s", i, len(planned), p.spec.name, type(e).__name__, e)
            result.failed.append(p.spec.name)
            continue
        p.status = run_status(p.run_dir)
        result.trained.append(p.spec.name)
    finished = [p for p in planned if p.status == FINISHED]
    if finished:
        result.tables = write_tables(experiment, planned, os.path.join(output_dir, TABLES_DIRNAME), progress=progress)
        logger.info("Tables and figures: %s", os.path.join(output_dir, TABLES_DIRNAME))
    if result.failed:
        raise PtxError(
            f"{len(result.failed)} of {len(planned)} runs failed: {', '.join(result.failed)} (tracebacks in "
            f"RUN_DIR/error.txt); run the same command again to retry them"
        )
    return result
