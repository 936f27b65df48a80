"""Experiment grids: train and evaluate several runs, then write the paper's Tables 2-5 and Figs. 5-6.

`ptx-experiments run FILE` is what this package does. One module per job:

* `spec` - the experiment file's schema (`load_experiment`);
* `plan` - each run's configuration and state (`plan_runs`, `describe_plan`);
* `runner` - training and evaluating the unfinished runs (`run_experiment`);
* `tables` - Tables 2-5 in Markdown, CSV and LaTeX (`write_tables`);
* `figures` - Figs. 5-6.

Runs go to `OUTPUT_DIR/<run name>/` (the usual run directory, data prepared once in `OUTPUT_DIR/data_cache`);
tables to `OUTPUT_DIR/tables/`.
"""

from ptx_keras.experiments.figures import pick_cases, plot_dsc_histogram, plot_model_cases
from ptx_keras.experiments.plan import (
    PlannedRun,
    config_differences,
    default_output_dir,
    describe_plan,
    plan_runs,
    resolve_run_config,
    run_status,
)
from ptx_keras.experiments.runner import ExperimentResult, run_experiment
from ptx_keras.experiments.spec import Experiment, RunSpec, flatten_overrides, load_experiment
from ptx_keras.experiments.tables import (
    TABLE_METRICS,
    diagnosis_display,
    diagnosis_rows,
    segmentation_display,
    segmentation_rows,
    write_tables,
)

__all__ = [
    "TABLE_METRICS",
    "Experiment",
    "ExperimentResult",
    "PlannedRun",
    "RunSpec",
    "config_differences",
    "default_output_dir",
    "describe_plan",
    "diagnosis_display",
    "diagnosis_rows",
    "flatten_overrides",
    "load_experiment",
    "pick_cases",
    "plan_runs",
    "plot_dsc_histogram",
    "plot_model_cases",
    "resolve_run_config",
    "run_experiment",
    "run_status",
    "segmentation_display",
    "segmentation_rows",
    "write_tables",
]
