"""Evaluation: predict a split, score it like the paper (Tables 2-3, Figs. 5-6) and compare runs.

One module per job:

* `predictions` - a prepared split through the shared prediction loop (`ptx_keras.inference`);
* `scoring` - per-image metrics and the diagnosis, and their summary (which mask is scored: `MASKS`);
* `thresholds` - the diagnosis thresholds chosen on a validation split, stored with the run;
* `report` - `summary.md` and the figures;
* `run` - `evaluate_run`, what `python evaluate.py RUN_DIR` does (where each evaluation is written);
* `compare` - `compare_runs`, what `python evaluate.py --compare A B ...` does.

Metric definitions and the empty-mask policy are those of `ptx_keras.metrics.segmentation`; the diagnosis rule
and its scores are `ptx_keras.diagnosis`. docs/evaluation.md describes every output.
"""

from ptx_keras.evaluation.compare import COMPARED_METRICS, ComparisonResult, compare_runs, write_comparison
from ptx_keras.evaluation.predictions import (
    check_input_size,
    collect_cases,
    iter_predictions,
    predict_split,
    spacing_lookup,
)
from ptx_keras.evaluation.report import pick_cases, summary_markdown, write_figures
from ptx_keras.evaluation.run import EvaluationResult, evaluate_run
from ptx_keras.evaluation.scoring import MASKS, SIZE_CLASSES, score_predictions, size_classes, summarize
from ptx_keras.evaluation.thresholds import search_validation_thresholds

__all__ = [
    "COMPARED_METRICS",
    "MASKS",
    "SIZE_CLASSES",
    "ComparisonResult",
    "EvaluationResult",
    "check_input_size",
    "collect_cases",
    "compare_runs",
    "evaluate_run",
    "iter_predictions",
    "pick_cases",
    "predict_split",
    "score_predictions",
    "search_validation_thresholds",
    "size_classes",
    "spacing_lookup",
    "summarize",
    "summary_markdown",
    "write_comparison",
    "write_figures",
]
