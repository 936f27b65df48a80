"""Evaluation metrics: NumPy per-image metrics (eqs. 7-12), their statistics, and in-graph Keras metrics.

The NumPy metrics and statistics import eagerly (no TensorFlow). The Keras metrics (`DSC1`, `MPA`,
`GlobalDSC1`) are resolved lazily on first access so that data-preparation workers stay light; code that
loads a saved model compiled with them must import `ptx_keras.metrics.keras_metrics` (or access one of the
names here) first, which registers them with Keras serialization.
"""

import importlib

from ptx_keras.metrics.segmentation import (
    DISTANCE_METRICS,
    SEGMENTATION_METRICS,
    as_binary_mask,
    batch_segmentation_scores,
    describe,
    segmentation_scores,
    summarize_scores,
    surface_distances,
)
from ptx_keras.metrics.statistics import compare_runs, comparison_table, format_mean_std

_LAZY = {
    "DSC1": "ptx_keras.metrics.keras_metrics",
    "MPA": "ptx_keras.metrics.keras_metrics",
    "GlobalDSC1": "ptx_keras.metrics.keras_metrics",
    "per_image_dsc1": "ptx_keras.metrics.keras_metrics",
    "per_image_mpa": "ptx_keras.metrics.keras_metrics",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ptx_keras.metrics' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = sorted(
    [
        "DISTANCE_METRICS",
        "SEGMENTATION_METRICS",
        "as_binary_mask",
        "batch_segmentation_scores",
        "comparison_table",
        "compare_runs",
        "describe",
        "format_mean_std",
        "segmentation_scores",
        "summarize_scores",
        "surface_distances",
        *_LAZY,
    ]
)
