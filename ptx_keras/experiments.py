"""Experiment grids: train and evaluate several runs, then write the paper's Tables 2-5 and Figs. 5-6.

`python -m ptx_keras.experiments run FILE` (or `ptx-experiments run FILE`) is what this module does. An
experiment file lists runs as overrides of one base configuration:

```yaml
name: table2_3                         # optional; default: the file name without .yaml
description: Table 2 / Table 3 ...     # optional
base: ../ms_scse_fc_densenet103.yaml   # run configuration every run starts from (relative to this file)
reference: ms_scse_fc_densenet103      # the run the t-tests compare against (the paper's model)
common:                                # optional: overrides applied to every run
  train.epochs: 200
figure_runs: [unet, ms_scse_fc_densenet103]   # optional: runs drawn in Figs. 5-6 (default: all)
runs:
  - name: unet                         # run directory name
    label: U-Net                       # optional: name shown in the tables (default: name)
    reference: unet                    # optional: this run's own reference (itself: a reference row)
    set: {model.name: unet}            # optional: overrides of this run
```

Overrides are dotted keys with `--set` semantics: `model.options.growth_rate: 4` sets one option, while a
nested mapping is flattened to its leaves (`train: {epochs: 2}` is `train.epochs: 2`) except under `options`,
whose mapping replaces the options as a whole. They apply in the order base file, `common`, the run's `set`,
the command line's `--set`, then `--data` / `--output-dir` and the run name.

Runs go to `OUTPUT_DIR/<run name>/` (the usual run directory, data prepared once in `OUTPUT_DIR/data_cache`).
A run is finished when it has `eval/test/per_image.csv`; finished runs are skipped, an interrupted run resumes
through training's `BackupAndRestore`, so the same command resumes a grid. A run directory trained with
another configuration is refused rather than mixed. A run that fails is reported and the others go on.

`OUTPUT_DIR/tables/` receives, in Markdown, CSV and LaTeX:

* `segmentation.*` (Tables 2, 4, 5): mean (std) per test image of MPA, PA1, DSC, DSC1 and HD (pixels), the
  trainable parameters and GMACs per image at the input size; `*` marks p < 0.05 in Student's t-test for two
  independent samples against the run's reference (the paper's test), `†` the paired Wilcoxon signed-rank test;
* `diagnosis.*` (Table 3): accuracy, sensitivity, specificity, PPV, NPV and F1 in percent;
* `fig6_dsc_histogram.png` (the number of test images per DSC interval, one bar per run, Fig. 6) and
  `fig5_cases.png` (a small, a moderate and a large pneumothorax and a negative image, each run's predicted
  contour against the truth, Fig. 5).
"""

import dataclasses
import difflib
import json
import math
import os
import sys
import traceback

import numpy as np
import pandas as pd

from ptx_keras import constants as C
from ptx_keras.errors import ConfigError, PtxError

EXPERIMENT_KEYS = ("name", "description", "base", "reference", "common", "figure_runs", "runs")
RUN_KEYS = ("name", "label", "reference", "set")
REQUIRED_KEYS = ("base", "reference", "runs")
RESERVED_RUN_NAMES = ("tables", "data_cache")
# Keys the runner sets itself for every run.
RUNNER_KEYS = ("name", "output_dir")
TABLE_METRICS = ("mpa", "pa1", "dsc", "dsc1", "hd")
METRIC_TITLES = {"mpa": "MPA", "pa1": "PA1", "dsc": "DSC", "dsc1": "DSC1", "hd": "HD (px)"}
DIAGNOSIS_KEYS = C.DIAGNOSIS_KEYS
DIAGNOSIS_TITLES = {
    "accuracy": "Accuracy (%)",
    "sensitivity": "Sensitivity (%)",
    "specificity": "Specificity (%)",
    "ppv": "PPV (%)",
    "npv": "NPV (%)",
    "f1": "F1-score (%)",
}
EVAL_SPLIT = "test"
PER_IMAGE_FILENAME = "per_image.csv"
TABLES_DIRNAME = "tables"
T_MARK = "*"
WILCOXON_MARK = "†"
CASE_QUANTILES = (("small", 0.15), ("moderate", 0.5), ("large", 0.85))
DEFAULT_OUTPUT_ROOT = "runs"


@dataclasses.dataclass
class RunSpec:
    """One run of an experiment: its directory name, display label, overrides and reference run."""

    name: str
    label: str
    overrides: dict
    reference: str


@dataclasses.dataclass
class Experiment:
    """A validated experiment file (see the module docstring)."""

    name: str
    path: str
    base: str
    reference: str
    runs: list
    common: dict = dataclasses.field(default_factory=dict)
    figure_runs: list = dataclasses.field(default_factory=list)
    description: str = ""

    def run(self, name):
        return next(r for r in self.runs if r.name == name)


@dataclasses.dataclass
class PlannedRun:
    """A run resolved to its full configuration, with its state in the output directory."""

    spec: RunSpec
    config: object  # ptx_keras.config.Config
    status: str  # "finished", "partial" (a run directory exists) or "new"

    @property
    def run_dir(self):
        return self.config.run_dir


# --------------------------------------------------------------------------------------------------------------
# The experiment file
# --------------------------------------------------------------------------------------------------------------
def _unknown_key(where, key, valid):
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}.{hint} Valid keys: {', '.join(valid)}")


def flatten_overrides(mapping, where, prefix=""):
    """Flattens a mapping of overrides to `{dotted key: value}` (mappings under `options` stay whole).

    Args:
        mapping: e.g. `{"train": {"epochs": 2}, "model.options": {"growth_rate": 4}}`.
        where: Text naming the mapping in error messages (file and key).
        prefix: Dotted prefix of the keys (used by the recursion).

    Returns:
        dict such as `{"train.epochs": 2, "model.options": {"growth_rate": 4}}`.

    Raises:
        ConfigError: if `mapping` is not a mapping, a key is not a non-empty string, or a key is one the runner
            sets itself (`name`, `output_dir`).
    """
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be a mapping of dotted keys to values. Received: {mapping!r}")
    out = {}
    for key, value in mapping.items():
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"{where}: keys must be dotted names such as train.epochs. Received: {key!r}")
        full = prefix + key
        if full in RUNNER_KEYS:
            raise ConfigError(
                f"{where}: {full!r} is set by the experiment runner (run name / --output-dir); remove it"
            )
        if isinstance(value, dict) and value and full.split(".")[-1] != "options":
            out.update(flatten_overrides(value, where, full + "."))
        else:
            out[full] = value
    return out


def _run_spec(entry, index, where, default_reference):
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: runs[{index}] must be a mapping with a name. Received: {entry!r}")
    for key in entry:
        if key not in RUN_KEYS:
            raise _unknown_key(f"{where}: runs[{index}]", key, RUN_KEYS)
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: runs[{index}] needs a name (its run directory). Received: name={name!r}")
    if os.sep in name or (os.altsep and os.altsep in name) or name in (".", "..") or name in RESERVED_RUN_NAMES:
        raise ConfigError(
            f"{where}: runs[{index}].name must be a plain directory name other than "
            f"{', '.join(RESERVED_RUN_NAMES)}. Received: {name!r}"
        )
    label = entry.get("label", name)
    if not isinstance(label, str) or not label:
        raise ConfigError(f"{where}: runs[{index}].label must be a non-empty string. Received: {label!r}")
    reference = entry.get("reference", default_reference)
    overrides = flatten_overrides(entry.get("set"), f"{where}: runs[{index}] ({name}).set")
    return RunSpec(name=name, label=label, overrides=overrides, reference=reference)


def load_experiment(path):
    """Reads and validates an experiment file.

    Args:
        path: The experiment YAML (schema in the module docstring).

    Returns:
        An `Experiment` with `base` as an absolute path.

    Raises:
        ConfigError: naming the file and the key, for a missing file, invalid YAML, an unknown key (with the
            nearest valid one), a missing required key, no runs, duplicate run names, or a reference that is
            not among the runs.
    """
    from ptx_keras.config import load_yaml_mapping

    data = load_yaml_mapping(path)
    for key in data:
        if key not in EXPERIMENT_KEYS:
            raise _unknown_key(path, key, EXPERIMENT_KEYS)
    for key in REQUIRED_KEYS:
        if key not in data or data[key] is None:
            raise ConfigError(f"{path}: missing required key {key!r} (required: {', '.join(REQUIRED_KEYS)})")
    base = data["base"]
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base must be the path of a run configuration. Received: {base!r}")
    base = base if os.path.isabs(base) else os.path.join(os.path.dirname(os.path.abspath(path)), base)
    if not os.path.isfile(base):
        raise ConfigError(f"{path}: base configuration not found: {base}")
    runs = data["runs"]
    if not isinstance(runs, list) or not runs:
        raise ConfigError(f"{path}: runs must be a non-empty list of runs. Received: {runs!r}")
    reference = data["reference"]
    specs = [_run_spec(entry, i, path, reference) for i, entry in enumerate(runs)]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{path}: duplicate run name(s) {duplicates}; every run needs its own name")
    for spec in specs:
        if spec.reference not in names:
            owner = "reference" if spec.reference == reference else f"runs ({spec.name}).reference"
            close = difflib.get_close_matches(str(spec.reference), names, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{path}: {owner} {spec.reference!r} is not among the runs.{hint} Runs: {', '.join(names)}"
            )
    figure_runs = data.get("figure_runs") or list(names)
    if not isinstance(figure_runs, list) or any(n not in names for n in figure_runs):
        bad = [n for n in figure_runs if n not in names] if isinstance(figure_runs, list) else figure_runs
        raise ConfigError(f"{path}: figure_runs must list run names. Not runs: {bad!r}; runs: {', '.join(names)}")
    name = data.get("name") or os.path.splitext(os.path.basename(path))[0]
    if not isinstance(name, str) or os.sep in name:
        raise ConfigError(f"{path}: name must be a plain name. Received: {name!r}")
    description = data.get("description") or ""
    return Experiment(
        name=name,
        path=os.path.abspath(path),
        base=base,
        reference=reference,
        runs=specs,
        common=flatten_overrides(data.get("common"), f"{path}: common"),
        figure_runs=list(figure_runs),
        description=str(description).strip(),
    )


# --------------------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------------------
def _as_set_strings(overrides):
    # JSON is valid YAML, so `load_config` parses these values back exactly (strings, numbers, null, lists).
    return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]


def _extra(output_dir, data, name=None):
    extra = {"output_dir": output_dir}
    if data:
        extra["data"] = {"path": data}
    if name:
        extra["name"] = name
    return extra


def resolve_run_config(experiment, spec, output_dir, data=None, overrides=()):
    """The full configuration of one run: base, `common`, the run's `set`, `overrides`, then the runner's keys.

    Raises:
        ConfigError: naming the experiment file and the run, for an unknown key or a bad value.
    """
    from ptx_keras.config import load_config

    sets = _as_set_strings(experiment.common) + _as_set_strings(spec.overrides) + list(overrides)
    try:
        return load_config(experiment.base, sets, extra=_extra(output_dir, data, spec.name))
    except ConfigError as e:
        raise ConfigError(f"{experiment.path}: run {spec.name!r}: {e}") from None


def _comparable(cfg):
    from ptx_keras.config import config_to_dict

    tree = config_to_dict(cfg)
    tree["data"].pop("prepared_dir", None)  # filled in by training
    return tree


def config_differences(a, b):
    """Dotted keys whose values differ between two configurations, as `{key: (value_in_a, value_in_b)}`."""
    from ptx_keras.config import flatten_tree

    fa, fb = flatten_tree(_comparable(a)), flatten_tree(_comparable(b))
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


def run_status(run_dir):
    """`"finished"` (test evaluation written), `"partial"` (a run directory with config.yaml) or `"new"`."""
    from ptx_keras.config import CONFIG_FILENAME

    if os.path.isfile(os.path.join(run_dir, "eval", EVAL_SPLIT, PER_IMAGE_FILENAME)):
        return "finished"
    if os.path.isfile(os.path.join(run_dir, CONFIG_FILENAME)):
        return "partial"
    return "new"


def default_output_dir(experiment):
    """`runs/<experiment name>`."""
    return os.path.join(DEFAULT_OUTPUT_ROOT, experiment.name)


def plan_runs(experiment, output_dir=None, data=None, overrides=()):
    """Resolves every run's configuration and finds its state in `output_dir`.

    Args:
        experiment: An `Experiment` (see `load_experiment`).
        output_dir: Parent of the run directories (default: `runs/<experiment name>`).
        data: Optional data path for every run (`--data`): raw source or prepared directory.
        overrides: `key=value` strings applied to every run after the experiment's own overrides.

    Returns:
        list of `PlannedRun`, in the file's order.

    Raises:
        ConfigError: for an invalid run configuration, or a run directory that was trained with another
            configuration (the message lists the differing keys).
    """
    from ptx_keras.config import load_run_config

    output_dir = output_dir or default_output_dir(experiment)
    planned = []
    for spec in experiment.runs:
        cfg = resolve_run_config(experiment, spec, output_dir, data, overrides)
        status = run_status(cfg.run_dir)
        if status != "new":
            diff = config_differences(load_run_config(cfg.run_dir), cfg)
            if diff:
                shown = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in list(diff.items())[:6])
                raise ConfigError(
                    f"Run {spec.name!r} in {cfg.run_dir} was trained with another configuration ({shown}). "
                    "Remove that run directory or use another --output-dir."
                )
        planned.append(PlannedRun(spec=spec, config=cfg, status=status))
    return planned


def describe_plan(experiment, planned, output_dir, data=None, overrides=()):
    """Text listing the runs, their state, and the keys each changes from the base configuration + `common`."""
    from ptx_keras.config import load_config

    sets = _as_set_strings(experiment.common) + list(overrides)
    base = load_config(experiment.base, sets, extra=_extra(output_dir, data))
    lines = [
        f"Experiment {experiment.name} ({experiment.path})",
        f"  base: {experiment.base}",
        f"  output: {os.path.abspath(output_dir)}  (tables in {os.path.join(output_dir, TABLES_DIRNAME)})",
        f"  reference: {experiment.reference}",
    ]
    if experiment.common:
        lines.append("  common: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in experiment.common.items()))
    lines.append(f"  {len(planned)} runs:")
    for p in planned:
        diff = config_differences(base, p.config)
        diff.pop("name", None)
        keys = ", ".join(f"{k}={json.dumps(new)}" for k, (_, new) in diff.items()) or "(the base configuration)"
        ref = "" if p.spec.reference == experiment.reference else f" [reference: {p.spec.reference}]"
        lines.append(f"  - {p.spec.name} ({p.spec.label}) [{p.status}]{ref}: {keys}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------------
def _train_and_evaluate(cfg, verbose, progress):
    from ptx_keras.evaluation import evaluate_run
    from ptx_keras.training import train

    train(cfg, verbose=verbose)
    if run_status(cfg.run_dir) != "finished":  # training's own evaluation is off, or used another split
        evaluate_run(cfg.run_dir, split=EVAL_SPLIT, progress=progress)


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
        dict with `experiment`, `output_dir`, `plan` (the text), `runs` (list of `PlannedRun`), `trained` and
        `skipped` (run names), and unless `dry_run`, `tables` (paths from `write_tables`).

    Raises:
        ConfigError: for an invalid experiment or run configuration.
        PtxError: when runs failed (after the tables of the finished runs are written); each failed run's
            traceback is in `RUN_DIR/error.txt`.
    """
    experiment = load_experiment(path)
    output_dir = output_dir or default_output_dir(experiment)
    planned = plan_runs(experiment, output_dir, data, overrides)
    plan_text = describe_plan(experiment, planned, output_dir, data, overrides)
    print(plan_text, flush=True)
    result = {"experiment": experiment, "output_dir": output_dir, "plan": plan_text, "runs": planned,
              "trained": [], "skipped": [], "failed": []}
    if dry_run:
        return result
    for i, p in enumerate(planned, start=1):
        if p.status == "finished":
            print(f"[{i}/{len(planned)}] {p.spec.name}: finished, skipped", flush=True)
            result["skipped"].append(p.spec.name)
            continue
        word = "resuming" if p.status == "partial" else "training"
        print(f"[{i}/{len(planned)}] {p.spec.name}: {word} in {p.run_dir}", flush=True)
        try:
            _train_and_evaluate(p.config, verbose, progress)
        except Exception as e:  # noqa: BLE001 - one failed run (bad option, out of memory) must not stop the grid
            os.makedirs(p.run_dir, exist_ok=True)
            with open(os.path.join(p.run_dir, "error.txt"), "w") as f:
                f.write(traceback.format_exc())
            print(f"[{i}/{len(planned)}] {p.spec.name}: FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            result["failed"].append(p.spec.name)
            continue
        p.status = run_status(p.run_dir)
        result["trained"].append(p.spec.name)
    finished = [p for p in planned if p.status == "finished"]
    if finished:
        result["tables"] = write_tables(experiment, planned, os.path.join(output_dir, TABLES_DIRNAME),
                                        progress=progress)
        print(f"Tables and figures: {os.path.join(output_dir, TABLES_DIRNAME)}", flush=True)
    if result["failed"]:
        raise PtxError(
            f"{len(result['failed'])} of {len(planned)} runs failed: {', '.join(result['failed'])} (tracebacks in "
            "RUN_DIR/error.txt); run the same command again to retry them"
        )
    return result


# --------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------
def _read_scores(run_dir):
    return pd.read_csv(os.path.join(run_dir, "eval", EVAL_SPLIT, PER_IMAGE_FILENAME), dtype={"sample_id": str})


def _complexity(run_dir, cfg):
    from ptx_keras.loading import load_model
    from ptx_keras.models.summary import count_macs, count_parameters

    model = load_model(os.path.join(run_dir, "best.keras"))
    size = cfg.data.image_size
    trainable, _ = count_parameters(model)
    macs = count_macs(model, (size, size, int(model.input_shape[-1])))
    return model, {"trainable_params": trainable, "gmacs": macs / 1e9}


def segmentation_rows(experiment, scores, complexity):
    """One row per finished run: mean/std/tests of each metric against the run's reference, and the model size.

    Args:
        experiment: The `Experiment`.
        scores: `{run name: per-image DataFrame}` of the finished runs.
        complexity: `{run name: {"trainable_params", "gmacs"}}`.

    Returns:
        pandas.DataFrame with `run`, `label`, `reference`, `n_images`, `n_positive`, `trainable_params`,
        `gmacs` and, per metric m, `m_mean`, `m_std`, `m_n_missing`, `m_t_pvalue`, `m_t_significant`,
        `m_wilcoxon_pvalue`, `m_wilcoxon_significant` (tests NaN / False for a reference row or when the
        reference has not finished).
    """
    from ptx_keras.metrics import compare_runs

    rows = []
    for spec in experiment.runs:
        if spec.name not in scores:
            continue
        df = scores[spec.name]
        ref = spec.reference
        pair = {spec.name: df}
        if ref != spec.name and ref in scores:
            pair = {ref: scores[ref], spec.name: df}
        table = compare_runs(pair, reference=next(iter(pair)), metrics=TABLE_METRICS)
        table = table[table["run"] == spec.name].set_index("metric")
        row = {
            "run": spec.name,
            "label": spec.label,
            "reference": ref,
            "n_images": int(len(df)),
            "n_positive": int((df["label"] == 1).sum()),
            **complexity.get(spec.name, {"trainable_params": None, "gmacs": None}),
        }
        for m in TABLE_METRICS:
            r = table.loc[m]
            row.update({
                f"{m}_mean": r["mean"],
                f"{m}_std": r["std"],
                f"{m}_n_missing": int(r["n_missing"]),
                f"{m}_t_pvalue": r["t_pvalue"],
                f"{m}_t_significant": bool(r["t_significant"]),
                f"{m}_wilcoxon_pvalue": r["wilcoxon_pvalue"],
                f"{m}_wilcoxon_significant": bool(r["wilcoxon_significant"]),
            })
        rows.append(row)
    return pd.DataFrame(rows)


def diagnosis_rows(experiment, scores):
    """One row per finished run: the diagnosis scores of Table 3 (fractions) and the confusion counts."""
    from ptx_keras.diagnosis import diagnosis_scores

    rows = []
    for spec in experiment.runs:
        if spec.name not in scores:
            continue
        df = scores[spec.name]
        dx = diagnosis_scores(df["label"].to_numpy(), df["diagnosis"].to_numpy())
        rows.append({"run": spec.name, "label": spec.label, **{k: dx[k] for k in DIAGNOSIS_KEYS},
                     **{k: dx[k] for k in ("tp", "fp", "tn", "fn", "n")}})
    return pd.DataFrame(rows)


def _mean_std(mean, std, digits):
    from ptx_keras.metrics import format_mean_std

    return format_mean_std(float(mean), float(std), digits)


def _marks(row, metric, latex=False):
    t = row[f"{metric}_t_significant"]
    w = row[f"{metric}_wilcoxon_significant"]
    if latex:
        marks = ("*" if t else "") + (r"\dagger" if w else "")
        return f"$^{{{marks}}}$" if marks else ""
    return (T_MARK if t else "") + (WILCOXON_MARK if w else "")


def _count(v):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{int(v):,}"


def _gmacs(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.2f}" if v >= 1 else f"{v:.3g}"  # three significant digits for the tiny phantom-scale models


def segmentation_display(seg, digits=2, latex=False):
    """The Table 2 layout: one row per run, cells "mean (std)" with the significance marks."""
    several = seg["reference"].nunique() > 1
    out = []
    for _, row in seg.iterrows():
        cells = {"Method": row["label"] + (" (reference)" if row["reference"] == row["run"] else "")}
        if several:
            cells["Compared with"] = row["reference"]
        for m in TABLE_METRICS:
            cells[METRIC_TITLES[m]] = _mean_std(row[f"{m}_mean"], row[f"{m}_std"], digits) + _marks(row, m, latex)
        cells["Parameters"] = _count(row["trainable_params"])
        cells["GMACs"] = _gmacs(row["gmacs"])
        out.append(cells)
    return pd.DataFrame(out)


def diagnosis_display(dx):
    """The Table 3 layout: percentages with two decimals."""
    out = []
    for _, row in dx.iterrows():
        cells = {"Model": row["label"]}
        for k in DIAGNOSIS_KEYS:
            v = row[k]
            cells[DIAGNOSIS_TITLES[k]] = "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.2f}"
        out.append(cells)
    return pd.DataFrame(out)


def markdown_table(df):
    """A DataFrame as a GitHub Markdown table (no index)."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def latex_escape(text):
    """Escapes LaTeX special characters in plain text."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex_table(df, caption, raw_columns=()):
    """A DataFrame as a LaTeX `tabular` inside a `table` float (no packages needed).

    Args:
        df: The display table.
        caption: Table caption (plain text, escaped).
        raw_columns: Columns whose cells are already LaTeX (e.g. with `$^{*}$` marks); the others are escaped.
    """
    spec = "l" * min(len(df.columns), 2 if "Compared with" in df.columns else 1)
    spec += "r" * (len(df.columns) - len(spec))
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\hline",
        " & ".join(latex_escape(c) for c in df.columns) + r" \\",
        r"\hline",
    ]
    for row in df.itertuples(index=False):
        cells = [str(v) if col in raw_columns else latex_escape(v) for col, v in zip(df.columns, row)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _legend(experiment, seg):
    refs = sorted(set(seg["reference"]))
    ref_labels = ", ".join(experiment.run(r).label for r in refs)
    return (
        f"Mean (std) per test image ({int(seg['n_images'].iloc[0])} images, {int(seg['n_positive'].iloc[0])} with "
        f"pneumothorax); HD in pixels over the images where both contours exist. {T_MARK} marks a significant "
        f"difference from the reference ({ref_labels}) in Student's t-test for two independent samples "
        f"(p < {C.SIGNIFICANCE_LEVEL}, the paper's test); {WILCOXON_MARK} in the paired Wilcoxon signed-rank test "
        f"(p < {C.SIGNIFICANCE_LEVEL}) on the same images. Parameters: trainable; GMACs: multiply-accumulates per "
        "image at the input size."
    )


def _missing_note(seg):
    notes = [f"{r['label']}: {int(r['hd_n_missing'])}" for _, r in seg.iterrows() if r["hd_n_missing"]]
    return "Images with undefined HD (an empty predicted or true mask), left out of HD: " + ", ".join(notes) + "." \
        if notes else ""


def _write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def write_tables(experiment, planned, out_dir, digits=2, progress=True):
    """Writes the segmentation and diagnosis tables (Markdown, CSV, LaTeX) and Figs. 5-6 of the finished runs.

    Args:
        experiment: The `Experiment`.
        planned: Its `PlannedRun`s (`plan_runs`); only finished ones are tabulated.
        out_dir: Output folder (created).
        digits: Decimal places of the mean (std) cells.
        progress: Progress bars while predicting the figure cases.

    Returns:
        dict of paths: `segmentation_md`, `segmentation_csv`, `segmentation_tex`, `diagnosis_md`,
        `diagnosis_csv`, `diagnosis_tex`, `histogram` and `cases` (the figures are absent while none of
        `figure_runs` has finished; `cases` also when the test split has no image to draw).

    Raises:
        PtxError: if no run has finished.
    """
    finished = [p for p in planned if run_status(p.run_dir) == "finished"]
    if not finished:
        raise PtxError("No run of the experiment has finished (RUN_DIR/eval/test/per_image.csv); nothing to tabulate")
    os.makedirs(out_dir, exist_ok=True)
    scores = {p.spec.name: _read_scores(p.run_dir) for p in finished}
    complexity, models = {}, {}
    figure_names = set(experiment.figure_runs)
    for p in finished:
        model, complexity[p.spec.name] = _complexity(p.run_dir, p.config)
        if p.spec.name in figure_names:
            models[p.spec.name] = model
        else:
            del model
    seg = segmentation_rows(experiment, scores, complexity)
    dx = diagnosis_rows(experiment, scores)
    paths = {}
    base = os.path.join(out_dir, "segmentation")
    seg.to_csv(base + ".csv", index=False)
    paths["segmentation_csv"] = base + ".csv"
    title = experiment.description.splitlines()[0] if experiment.description else experiment.name
    note = _missing_note(seg)
    md = [f"# {title}", "", _legend(experiment, seg), "", markdown_table(segmentation_display(seg, digits)), ""]
    if note:
        md += [note, ""]
    paths["segmentation_md"] = _write_text(base + ".md", "\n".join(md))
    latex = segmentation_display(seg, digits, latex=True)
    raw = [METRIC_TITLES[m] for m in TABLE_METRICS]
    paths["segmentation_tex"] = _write_text(
        base + ".tex", latex_table(latex, f"{title}. " + _legend(experiment, seg).replace(WILCOXON_MARK, "dagger"),
                                   raw_columns=raw)
    )
    base = os.path.join(out_dir, "diagnosis")
    dx.to_csv(base + ".csv", index=False)
    paths["diagnosis_csv"] = base + ".csv"
    shown = diagnosis_display(dx)
    rule = "Pneumothorax when the predicted mask exceeds the diagnosis area threshold (paper: 50 pixels at 256 x 256)."
    paths["diagnosis_md"] = _write_text(
        base + ".md", "\n".join([f"# {title}: diagnosis (cf. Table 3)", "", rule, "", markdown_table(shown), ""])
    )
    paths["diagnosis_tex"] = _write_text(base + ".tex", latex_table(shown, f"{title}: diagnosis. {rule}"))
    fig_runs = [p for p in finished if p.spec.name in figure_names]
    if not fig_runs:  # none of `figure_runs` has finished yet
        return paths
    paths["histogram"] = plot_dsc_histogram(
        {p.spec.label: scores[p.spec.name]["dsc"].to_numpy() for p in fig_runs},
        os.path.join(out_dir, "fig6_dsc_histogram.png"),
    )
    ref_name = experiment.reference if experiment.reference in scores else fig_runs[0].spec.name
    cases = pick_cases(scores[ref_name])
    if cases:
        paths["cases"] = plot_model_cases(fig_runs, models, scores, cases, os.path.join(out_dir, "fig5_cases.png"),
                                          progress=progress)
    models.clear()
    return paths


# --------------------------------------------------------------------------------------------------------------
# Figures 5 and 6
# --------------------------------------------------------------------------------------------------------------
def pick_cases(df):
    """Chooses the Fig. 5 cases: a small, a moderate and a large pneumothorax and a negative image.

    The positive images are ranked by true area; the cases are those at the 15th, 50th and 85th percentile of
    that ranking. The negative is the first negative image by sample id. Deterministic for a given table.

    Args:
        df: Per-image scores with `sample_id`, `label` and `true_area`.

    Returns:
        list of `(title, sample_id)`.
    """
    cases = []
    pos = df[df["label"] == 1].sort_values(["true_area", "sample_id"], kind="stable")
    chosen = set()
    for title, q in CASE_QUANTILES:
        if len(pos) == 0:
            break
        sid = pos["sample_id"].iloc[min(len(pos) - 1, int(round(q * (len(pos) - 1))))]
        if sid not in chosen:
            chosen.add(sid)
            area = int(pos.loc[pos["sample_id"] == sid, "true_area"].iloc[0])
            cases.append((f"{title} PTX ({area} px)", sid))
    neg = sorted(df.loc[df["label"] == 0, "sample_id"])
    if neg:
        cases.append(("no PTX", neg[0]))
    return cases


def _load_split_images(prepared_dir, sample_ids):
    """Images (H, W) float32 and true masks (H, W) bool of the given test samples."""
    from ptx_keras.data.pipeline import make_dataset
    from ptx_keras.targets import mask_of

    wanted = set(sample_ids)
    found = {}
    for image, y_true, ids in make_dataset(prepared_dir, EVAL_SPLIT, 16, False, channels=1, with_ids=True):
        masks = np.asarray(mask_of(y_true)) > 0.5
        for j, sid in enumerate(s.decode() for s in ids.numpy()):
            if sid in wanted:
                found[sid] = (image.numpy()[j, ..., 0], masks[j])
        if len(found) == len(wanted):
            break
    missing = wanted - set(found)
    if missing:
        raise PtxError(f"{prepared_dir}: test images {sorted(missing)} not found for the figure")
    return found


def plot_model_cases(planned, models, scores, cases, path, progress=True):
    """Fig. 5: one row per case, the truth then each run's predicted contour against the truth.

    Args:
        planned: Finished `PlannedRun`s to draw, in column order.
        models: `{run name: keras.Model}` (their `best.keras`).
        scores: `{run name: per-image DataFrame}` (DSC1 and HD of the captions).
        cases: `(title, sample_id)` pairs from `pick_cases`.
        path: Output PNG.
        progress: Show a progress bar over the runs.

    Returns:
        `path`.
    """
    from tqdm.auto import tqdm

    from ptx_keras.config import load_run_config
    from ptx_keras.evaluation import load_thresholds
    from ptx_keras.figures.evaluation import plot_cases

    ids = [sid for _, sid in cases]
    images = {}
    rows = [[] for _ in cases]
    for p in tqdm(planned, desc="figure cases", unit="run", disable=not progress):
        cfg = load_run_config(p.run_dir)
        prepared = cfg.data.prepared_dir
        if prepared not in images:
            images[prepared] = _load_split_images(prepared, ids)
        found = images[prepared]
        model = models[p.spec.name]
        batch = np.stack([found[sid][0] for sid in ids])[..., None]
        batch = np.repeat(batch, int(model.input_shape[-1]), axis=-1).astype("float32")
        prob = np.asarray(model.predict_on_batch(batch))[..., C.PTX_CLASS]
        threshold = load_thresholds(p.run_dir, cfg)["mask_threshold"]
        df = scores[p.spec.name].set_index("sample_id")
        for i, sid in enumerate(ids):
            hd = df.loc[sid, "hd"]
            caption = f"DSC1 {df.loc[sid, 'dsc1']:.2f}, HD " + ("n/a" if not np.isfinite(hd) else f"{hd:.1f}")
            rows[i].append({"image": found[sid][0], "true": found[sid][1], "pred": prob[i] > threshold,
                            "title": p.spec.label if i == 0 else "", "caption": caption})
    first = next(iter(images.values()))
    for i, (title, sid) in enumerate(cases):
        image, true = first[sid]
        rows[i].insert(0, {"image": image, "true": true, "pred": np.zeros_like(true), "title": title,
                           "caption": sid})
    return plot_cases(rows, path, title="Test cases: truth and each model's prediction (cf. Fig. 5)")


def plot_dsc_histogram(values_by_label, path, bins=10):
    """Fig. 6: the number of test images per DSC interval, one bar per run in each interval.

    Args:
        values_by_label: `{run label: per-image DSC values}` (NaN left out).
        path: Output PNG.
        bins: Number of equal intervals over [0, 1].

    Returns:
        `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.linspace(0.0, 1.0, bins + 1)
    n = max(1, len(values_by_label))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * bins + 0.3 * n), 4.0))
    for k, (label, values) in enumerate(values_by_label.items()):
        v = np.asarray(values, float)
        v = v[np.isfinite(v)]
        counts, _ = np.histogram(v, bins=edges)
        ax.bar(np.arange(bins) + (k - (n - 1) / 2) * width, counts, width=width, label=label)
    ax.set_xticks(np.arange(bins))
    ax.set_xticklabels([f"[{a:.1f}, {b:.1f}{']' if i == bins - 1 else ')'}" for i, (a, b) in
                        enumerate(zip(edges[:-1], edges[1:]))], rotation=30, fontsize=8)
    ax.set_xlabel("DSC (mean of the two classes) per test image")
    ax.set_ylabel("images")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    from ptx_keras.cli.experiments import main

    raise SystemExit(main())
