"""`ptx_keras.workflows.train_evaluate_export`: which steps run, in which order, on what (the steps themselves are
replaced by recorders; training, evaluation and export have their own test modules)."""

import types

import pytest

from ptx_keras.config import load_config
from ptx_keras.runs import RunDir
from ptx_keras.training import TrainResult
from ptx_keras.workflows import WorkflowResult, train_evaluate_export


@pytest.fixture
def steps(monkeypatch, tmp_path):
    """Replaces train, evaluate_run and export_saved_model by recorders: `calls` lists what ran, `run` is the
    run directory training returns, `chief` says whether this process is the chief (True)."""
    import ptx_keras.evaluation as evaluation
    import ptx_keras.export as export
    import ptx_keras.training as training

    calls = []
    run = RunDir(str(tmp_path / "runs" / "wf"))
    state = types.SimpleNamespace(calls=calls, run=run, chief=True)

    def train(cfg, verbose=1):
        calls.append(("train", cfg.name, verbose))
        prepared = str(tmp_path / "prepared")
        return TrainResult(run, run.best_model, run.history_file, 2, 0.0, prepared, is_chief=state.chief)

    def evaluate_run(run_dir, split, progress=True):
        calls.append(("evaluate", run_dir, split, progress))
        return "evaluation-result"

    def export_saved_model(run_dir):
        calls.append(("export", run_dir))
        return "export-result"

    monkeypatch.setattr(training, "train", train)
    monkeypatch.setattr(evaluation, "evaluate_run", evaluate_run)
    monkeypatch.setattr(export, "export_saved_model", export_saved_model)
    return state


def _cfg(evaluate, export, split="val"):
    return load_config(
        overrides=[
            "name=wf",
            f"train.evaluate={str(evaluate).lower()}",
            f"train.export={str(export).lower()}",
            f"evaluation.split={split}",
        ]
    )


def test_train_then_evaluate_the_configured_split_then_export(steps):
    result = train_evaluate_export(_cfg(True, True, split="val"), verbose=2, progress=False)
    run = steps.run
    assert steps.calls == [("train", "wf", 2), ("evaluate", run, "val", False), ("export", run)]
    assert isinstance(result, WorkflowResult) and result.training.epochs == 2
    assert (result.evaluation, result.export) == ("evaluation-result", "export-result") and result.seconds >= 0


@pytest.mark.parametrize("evaluate, export", [(False, True), (True, False), (False, False)])
def test_steps_that_are_off_do_not_run_and_give_none(steps, evaluate, export):
    result = train_evaluate_export(_cfg(evaluate, export))
    assert [c[0] for c in steps.calls] == ["train"] + ["evaluate"] * evaluate + ["export"] * export
    assert (result.evaluation is None) == (not evaluate) and (result.export is None) == (not export)


def test_only_the_chief_evaluates_and_exports(steps):
    steps.chief = False  # another worker of a multi-worker run
    result = train_evaluate_export(_cfg(True, True))
    assert [c[0] for c in steps.calls] == ["train"]
    assert result.evaluation is None and result.export is None and result.training.is_chief is False


def test_the_result_is_frozen(steps):
    result = train_evaluate_export(_cfg(False, False))
    with pytest.raises(AttributeError):
        result.export = "x"
