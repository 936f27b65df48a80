"""Workflows: the steps a command chains, so that no step imports another.

`train_evaluate_export(cfg)` is what `python train.py` runs: train (`ptx_keras.training`), then evaluate the
configured split (`ptx_keras.evaluation`, when `train.evaluate`), then export the SavedModel
(`ptx_keras.export`, when `train.export`).
"""

import dataclasses
import logging
import time
from typing import Optional

__all__ = ["WorkflowResult", "train_evaluate_export"]


logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WorkflowResult:
    """What `train_evaluate_export` did.

    Attributes:
        training: The `ptx_keras.training.TrainResult`.
        evaluation: The `ptx_keras.evaluation.EvaluationResult`, or None when `train.evaluate` is off.
        export: The `ptx_keras.export.ExportResult`, or None when `train.export` is off.
        seconds: Wall time of the whole workflow.
    """

    training: object
    evaluation: Optional[object]
    export: Optional[object]
    seconds: float


def train_evaluate_export(cfg, verbose=1, progress=True):
    """Trains `cfg`, then evaluates and exports the run as its configuration asks.

    Running the same configuration again resumes an interrupted run (see `ptx_keras.training.train`).

    Args:
        cfg: A validated `ptx_keras.config.Config`.
        verbose: Keras progress-bar verbosity (1: bar, 2: one line per epoch, 0: silent).
        progress: Progress bars of evaluation.

    Returns:
        `WorkflowResult`.

    Raises:
        PtxError: for user-caused problems (data, configuration, permissions).
    """
    from ptx_keras.training import train

    start = time.time()
    training = train(cfg, verbose=verbose)
    evaluation = export = None
    if not training.is_chief:  # a multi-worker run: the chief evaluates and exports
        return WorkflowResult(training, evaluation, export, time.time() - start)
    if cfg.train.evaluate:
        from ptx_keras.evaluation import evaluate_run

        evaluation = evaluate_run(training.run_dir, split=cfg.evaluation.split, progress=progress)
    if cfg.train.export:
        from ptx_keras.export import export_saved_model

        export = export_saved_model(training.run_dir)
    return WorkflowResult(training, evaluation, export, time.time() - start)
