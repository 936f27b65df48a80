"""The experiment file: its schema, validation and the `Experiment` it describes.

An experiment file lists runs as overrides of one base configuration:

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
whose mapping replaces the options as a whole.
"""

import dataclasses
import difflib
import os

from ptx_keras.errors import ConfigError
from ptx_keras.runs import DATA_CACHE_DIRNAME

__all__ = [
    "EXPERIMENT_KEYS",
    "REQUIRED_KEYS",
    "RESERVED_RUN_NAMES",
    "RUNNER_KEYS",
    "RUN_KEYS",
    "TABLES_DIRNAME",
    "Experiment",
    "RunSpec",
    "flatten_overrides",
    "load_experiment",
]


EXPERIMENT_KEYS = ("name", "description", "base", "reference", "common", "figure_runs", "runs")
RUN_KEYS = ("name", "label", "reference", "set")
REQUIRED_KEYS = ("base", "reference", "runs")
TABLES_DIRNAME = "tables"
RESERVED_RUN_NAMES = (TABLES_DIRNAME, DATA_CACHE_DIRNAME)
# Keys the runner sets itself for every run.
RUNNER_KEYS = ("name", "output_dir")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of an experiment: its directory name, display label, overrides and reference run."""

    name: str
    label: str
    overrides: dict
    reference: str


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A validated experiment file (see the module docstring)."""

    name: str
    path: str
    base: str
    reference: str
    runs: tuple
    common: dict = dataclasses.field(default_factory=dict)
    figure_runs: tuple = ()
    description: str = ""

    def run(self, name):
        return next(r for r in self.runs if r.name == name)


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
            raise ConfigError(f"{where}: {full!r} is set by the experiment runner (run name / --output-dir); remove it")
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
        runs=tuple(specs),
        common=flatten_overrides(data.get("common"), f"{path}: common"),
        figure_runs=tuple(figure_runs),
        description=str(description).strip(),
    )
