"""Planning an experiment: each run's full configuration and its state in the output directory.

Overrides apply in the order base file, `common`, the run's `set`, the command line's `--set`, then `--data` /
`--output-dir` and the run name. A run directory trained with another configuration is refused rather than
mixed.
"""

import dataclasses
import json
import os

from ptx_keras import constants as C
from ptx_keras.errors import ConfigError
from ptx_keras.experiments.spec import TABLES_DIRNAME

__all__ = [
    "DEFAULT_OUTPUT_ROOT",
    "PlannedRun",
    "config_differences",
    "default_output_dir",
    "describe_plan",
    "plan_runs",
    "resolve_run_config",
    "run_status",
]


DEFAULT_OUTPUT_ROOT = C.RUNS_DIR
# An experiment's view of a run's state (`ptx_keras.runs.RunDir.status`): finished = evaluated on test.
FINISHED, PARTIAL, NEW = "finished", "partial", "new"


@dataclasses.dataclass
class PlannedRun:
    """A run resolved to its full configuration, with its state in the output directory."""

    spec: object  # RunSpec
    config: object  # ptx_keras.config.Config
    status: str  # FINISHED, PARTIAL (a run directory with config.yaml) or NEW

    @property
    def run_dir(self):
        return self.config.run_dir


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


def config_differences(a, b):
    """Dotted keys whose values differ between two configurations, as `{key: (value_in_a, value_in_b)}`."""
    from ptx_keras.config import config_to_dict, flatten_tree

    fa, fb = flatten_tree(config_to_dict(a)), flatten_tree(config_to_dict(b))
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


def run_status(run_dir):
    """`FINISHED` (the test split is evaluated), `PARTIAL` (a run directory with config.yaml) or `NEW`."""
    from ptx_keras.runs import STATUS_EVALUATED, STATUS_NEW, RunDir

    status = RunDir.of(run_dir).status()
    return FINISHED if status == STATUS_EVALUATED else NEW if status == STATUS_NEW else PARTIAL


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
    from ptx_keras.runs import RunDir

    output_dir = output_dir or default_output_dir(experiment)
    planned = []
    for spec in experiment.runs:
        cfg = resolve_run_config(experiment, spec, output_dir, data, overrides)
        status = run_status(cfg.run_dir)
        if status != NEW:
            diff = config_differences(RunDir(cfg.run_dir).load_config(), cfg)
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
