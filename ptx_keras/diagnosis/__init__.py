"""The paper's diagnosis rule (predicted mask -> pneumothorax yes/no), its scores, ROC, calibration and threshold
search.

One module per concern, every name importable from `ptx_keras.diagnosis`:

* `rule`: `Thresholds` (the rule's numbers: the one definition that configuration, evaluation and every export
  read), `diagnose`, `Diagnosis`, `gate_labels`, `ptx_probabilities`;
* `scores`: `diagnosis_scores` (paper Table 3), `roc_curve`, `roc_auc`;
* `reliability`: `calibration` (reliability diagram, expected calibration error, Brier score);
* `search`: `search_thresholds` (the grid search on the validation split) and the per-image counts it runs on.
"""

from ptx_keras.diagnosis.reliability import CALIBRATION_BINS, calibration
from ptx_keras.diagnosis.rule import (
    AUX_THRESHOLD,
    FORMS,
    GATES,
    Diagnosis,
    Thresholds,
    diagnose,
    gate_labels,
    ptx_probabilities,
)
from ptx_keras.diagnosis.scores import DIAGNOSIS_SCORES, diagnosis_scores, roc_auc, roc_curve
from ptx_keras.diagnosis.search import (
    AUX_QUANTILES,
    OBJECTIVES,
    SEARCH_AUX_THRESHOLDS,
    ThresholdSearch,
    areas_at_thresholds,
    aux_threshold_candidates,
    check_search_options,
    dice_counts_at_thresholds,
    search_thresholds,
)

__all__ = [
    "AUX_QUANTILES",
    "AUX_THRESHOLD",
    "CALIBRATION_BINS",
    "DIAGNOSIS_SCORES",
    "Diagnosis",
    "FORMS",
    "GATES",
    "OBJECTIVES",
    "SEARCH_AUX_THRESHOLDS",
    "ThresholdSearch",
    "Thresholds",
    "areas_at_thresholds",
    "aux_threshold_candidates",
    "check_search_options",
    "calibration",
    "diagnose",
    "diagnosis_scores",
    "dice_counts_at_thresholds",
    "gate_labels",
    "ptx_probabilities",
    "roc_auc",
    "roc_curve",
    "search_thresholds",
]
