"""`evaluate_run`: what `python evaluate.py RUN_DIR` does.

It loads `RUN_DIR/best.keras` (the architecture is never rebuilt), predicts a split with a progress bar and
writes, for the run's own data, `RUN_DIR/eval/<split>/`, and for other data (`data=...`),
`RUN_DIR/eval/external/<data>/<split>/` (`ptx_keras.runs`), never touching the run's own results:

* `per_image.csv` - one row per image (`ptx_keras.evaluation.scoring.score_predictions`);
* `summary.json`, `summary.md` - mean (std) over all images and over positives like Table 2 beside the paper's
  values, the diagnosis table like Table 3 with ROC AUC, the SIIM-ACR mean Dice (empty = 1), missing HD counts,
  which mask is scored, and the thresholds used with their source;
* `cases.png` (best / median / worst DSC1 per pneumothorax size, like Fig. 5), `dsc_histogram.png` (Fig. 6),
  `roc.png`, `reliability.png` (the image-level probability's reliability diagram; its ECE is in the summary),
  `training_curves.png` (from the run's `history.csv`).

Test-time augmentation: `evaluation.tta` (or `tta=`): `hflip` predicts with the mean of the model on the image
and its mirror (`ptx_keras.inference.ModelRunner`), in the threshold search too. The search's form
(`evaluation.threshold_form`: the paper's pair or the triplet) and gate (`diagnosis.gate`) come from the
configuration; a saved search holds the whole rule, so search again after changing them.

Thresholds: the run's (its validation search `eval/val/thresholds.json` when it has one, else its
configuration's). `search_thresholds=True` chooses them first on the validation split of the evaluated data
(`ptx_keras.evaluation.thresholds`): on the run's own data they become the run's thresholds (the export reads
them); on other data they are written beside that data's evaluations and used for it only. The test split is
never used to choose them. On other data the default is to reuse the run's thresholds, whatever the run's
`evaluation.search_thresholds` says.

Memory: scores are computed batch by batch while predicting, so evaluation holds one batch of probability maps
plus one table row per image; the few images drawn in `cases.png` are predicted again in a second pass that
runs the model only on the batches holding them.
"""

import dataclasses
import logging
import os

from ptx_keras.errors import DataError, ModelError
from ptx_keras.evaluation.predictions import (
    check_input_size,
    check_split,
    collect_cases,
    iter_predictions,
    spacing_lookup,
)
from ptx_keras.evaluation.report import format_stats, pick_cases, summary_markdown, write_figures
from ptx_keras.evaluation.scoring import score_predictions, summarize
from ptx_keras.files import write_json

__all__ = ["EvaluationResult", "evaluate_run"]


logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """What `evaluate_run` wrote and found.

    Attributes:
        summary: The contents of `summary.json` (see `ptx_keras.evaluation.scoring.summarize`).
        out_dir: The evaluation folder.
        per_image_csv, summary_json, summary_md: The files written there.
        figures: `{figure name: path}`.
        thresholds: The `ptx_keras.runs.SavedThresholds` used.
        data: None for the run's own data, else the other data's path.
    """

    summary: dict
    out_dir: str
    per_image_csv: str
    summary_json: str
    summary_md: str
    figures: dict
    thresholds: object
    data: object = None


def _resolve_data(run, cfg, data):
    """`(prepared_dir, data)`: the prepared data to evaluate, and None when it is the run's own."""
    from ptx_keras.data.prepared import is_prepared_dir
    from ptx_keras.data.resolve import resolve_data

    own = run.prepared_dir()
    if data is None:
        if not own or not os.path.isdir(own):
            raise DataError(f"The prepared data of {run.path} is not at {own!r} any more; pass --data PATH")
        return own, None
    if not os.path.exists(data):
        raise DataError(f"Data path does not exist: {data}")
    if own and os.path.abspath(data) == os.path.abspath(own):
        return own, None
    if is_prepared_dir(data):
        # Used as it is: check_input_size compares its resolution with the model's, not with the config's.
        return os.path.abspath(data), data
    cache = cfg.data.cache_dir or run.default_cache_dir
    resolved = resolve_data(data, cfg.data, cache_dir=cache, skip_bad=cfg.data.skip_bad, workers=cfg.data.workers)
    return resolved.prepared_dir, data


def evaluate_run(
    run_dir,
    data=None,
    split="test",
    search_thresholds=None,
    batch_size=None,
    progress=True,
    objective=None,
    tta=None,
    threshold_form=None,
    gate=None,
):
    """Evaluates `RUN_DIR/best.keras` on one split (see the module docstring for what is written where).

    Args:
        run_dir: A run directory written by training (`config.yaml` and `best.keras`), path or `RunDir`.
        data: Optional other data: a prepared directory (used as it is; must match the model's input size) or a
            raw source (prepared with the run's data settings); by default the run's own prepared data.
        split: The split to evaluate (`"test"` by default).
        search_thresholds: Choose the diagnosis thresholds on the validation split of the evaluated data first;
            None follows the run configuration's `evaluation.search_thresholds` for the run's own data and means
            False for other data.
        batch_size: Prediction batch size (default: the run's `evaluation.batch_size`).
        progress: Show progress bars.
        objective: Objective of the search, "f1", "youden" or "siim_dice" (default: the run's
            `evaluation.objective`).
        tta: Test-time augmentation, "none" or "hflip" (default: the run's `evaluation.tta`).
        threshold_form: What the search chooses, "pair" or "triplet" (default: the run's
            `evaluation.threshold_form`).
        gate: The gate the search chooses thresholds for, "area", "aux" or "both" (default: the run's
            `diagnosis.gate`); only with a search (a saved search holds its gate).

    Returns:
        `EvaluationResult`.

    Raises:
        ModelError: if the run directory or its `best.keras` is missing, or the model cannot be loaded.
        DataError: for an unknown split, missing data, data at another resolution than the model, or an empty
            split.
        ConfigError: if the run directory's `config.yaml` or thresholds file is invalid.
    """
    check_split(split)
    run, cfg = _load_run(run_dir)
    prepared, other = _resolve_data(run, cfg, data)
    batch_size = batch_size or cfg.evaluation.batch_size
    search_thresholds = _wants_search(cfg, search_thresholds, other, threshold_form, gate)
    model = run.load_model()
    check_input_size(model, prepared)
    model_sha = run.model_sha256()
    tta = tta or cfg.evaluation.tta
    ev = _Evaluation(
        run,
        cfg,
        split,
        prepared,
        other,
        _runner(model, tta),
        tta,
        batch_size,
        model_sha,
        bool(cfg.diagnosis.gate_masks),
    )
    if search_thresholds:
        saved = _search(ev, objective, threshold_form, gate, progress)
    else:
        saved = run.read_thresholds(cfg, model_sha256=model_sha)
    _check_thresholds(saved, run, model, tta)
    df, out_dir, per_image = _score(ev, saved, progress)
    figures = _write_figures(ev, df, saved, out_dir)
    summary = _summary(ev, df, saved, figures)
    summary_json, summary_md = _write_summary(run, split, other, summary)
    _log_result(split, summary, ev.gate_masks, out_dir)
    return EvaluationResult(summary, out_dir, per_image, summary_json, summary_md, figures, saved, other)


@dataclasses.dataclass(frozen=True)
class _Evaluation:
    """What one `evaluate_run` call evaluates, and how.

    Attributes:
        run, cfg: The `RunDir` and its `Config`.
        split: The split evaluated.
        prepared: The prepared data directory; `other`: None for the run's own data, else the data given.
        runner: The `ModelRunner` predicting (with `tta`).
        batch_size: Prediction batch size.
        model_sha: `best.keras`'s hash.
        gate_masks: Whether the framework's output (the mask emptied for a negative diagnosis) is scored.
    """

    run: object
    cfg: object
    split: str
    prepared: str
    other: object
    runner: object
    tta: str
    batch_size: int
    model_sha: str
    gate_masks: bool


def _wants_search(cfg, search_thresholds, other, threshold_form, gate):
    """Whether to search the thresholds first (None: the configuration's choice, for the run's own data only).

    Raises:
        ConfigError: for a threshold form or a gate without a search.
    """
    from ptx_keras.errors import ConfigError

    if search_thresholds is None:
        search_thresholds = bool(cfg.evaluation.search_thresholds) and other is None
    if (threshold_form or gate) and not search_thresholds:
        raise ConfigError(
            "the threshold form and the gate choose what a threshold search looks for: pass "
            "--search-thresholds with them"
        )
    return search_thresholds


def _runner(model, tta):
    """The model's `ModelRunner` with test-time augmentation `tta`; an unknown one is a ConfigError."""
    from ptx_keras.errors import ConfigError
    from ptx_keras.inference import ModelRunner

    try:
        return ModelRunner.from_keras(model, tta=tta)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _score(ev, saved, progress):
    """Predicts and scores the split batch by batch; writes `per_image.csv`.

    Returns:
        `(per-image DataFrame, evaluation folder, per_image.csv path)`.
    """
    df = score_predictions(
        iter_predictions(ev.runner, ev.prepared, ev.split, ev.batch_size, progress=progress),
        saved.thresholds,
        spacings=spacing_lookup(ev.prepared),
        gate_masks=ev.gate_masks,
    )
    out_dir = ev.run.eval_dir(ev.split, ev.other)
    os.makedirs(out_dir, exist_ok=True)
    per_image = ev.run.per_image_file(ev.split, ev.other)
    df.to_csv(per_image, index=False)
    return df, out_dir, per_image


def _write_figures(ev, df, saved, out_dir):
    """The figures; the few cases drawn are predicted again, only the batches holding them."""
    wanted = {df.iloc[i]["sample_id"] for row in pick_cases(df) for _, _, i in row}
    cases = iter_predictions(ev.runner, ev.prepared, ev.split, ev.batch_size, progress=False, only_ids=wanted)
    return write_figures(
        df, out_dir, saved.thresholds, collect_cases(cases), ev.run.history_file, ev.split, gate_masks=ev.gate_masks
    )


def _summary(ev, df, saved, figures):
    """`summary.json`'s contents: the scores (`summarize`) and what was evaluated."""
    summary = summarize(df, saved.describe(), ev.split, gate_masks=ev.gate_masks, tta=ev.tta)
    summary.update(
        run_dir=os.path.abspath(ev.run.path),
        model=os.path.abspath(ev.run.best_model),
        model_sha256=ev.model_sha,
        data=os.path.abspath(ev.prepared),
        data_name=None if ev.other is None else os.fspath(ev.other),
        figures={k: os.path.basename(v) for k, v in figures.items()},
    )
    return summary


def _load_run(run_dir):
    """`(RunDir, Config)` of a trained run; a missing model or an invalid config.yaml is a `ModelError`."""
    from ptx_keras.errors import ConfigError
    from ptx_keras.runs import RunDir

    run = RunDir.of(run_dir)
    run.require_model()
    try:
        return run, run.load_config()
    except ConfigError as e:
        raise ModelError(str(e)) from None


def _search(ev, objective, threshold_form, gate, progress):
    """Chooses the thresholds on the validation split (the options given, else the run configuration's)."""
    from ptx_keras.evaluation.thresholds import search_validation_thresholds

    cfg = ev.cfg
    return search_validation_thresholds(
        ev.runner,
        ev.prepared,
        ev.run,
        cfg.diagnosis.reference_size,
        ev.batch_size,
        objective or cfg.evaluation.objective,
        progress,
        ev.model_sha,
        data=ev.other,
        form=threshold_form or cfg.evaluation.threshold_form,
        gate=gate or cfg.diagnosis.gate,
    )


def _check_thresholds(saved, run, model, tta):
    """Refuses an aux gate on a model without the head; warns when the thresholds were searched with another TTA."""
    from ptx_keras.models.common import has_aux_output

    thresholds = saved.thresholds
    if thresholds.uses_aux and not has_aux_output(model):
        raise ModelError(
            f"{saved.file}: the diagnosis is gated by the image-level probability (gate="
            f"{thresholds.gate!r}) but {run.best_model} has no aux head"
        )
    searched_tta = saved.search.get("tta", "none") if saved.source == "validation search" else tta
    if searched_tta != tta:
        logger.warning(
            "%s was chosen with tta=%s; evaluating with tta=%s (search again to match)", saved.file, searched_tta, tta
        )


def _write_summary(run, split, other, summary):
    """Writes `summary.json` (atomically) and `summary.md`; returns their paths."""
    summary_json = run.summary_file(split, other)
    write_json(summary_json, summary)
    summary_md = run.summary_file(split, other, markdown=True)
    with open(summary_md, "w", encoding="utf-8") as f:
        f.write(summary_markdown(summary, run.name))
    return summary_json, summary_md


def _log_result(split, summary, gate_masks, out_dir):
    seg, dx = summary["segmentation"], summary["diagnosis"]
    f1 = "undefined" if dx["f1"] is None else f"{dx['f1']:.4f}"
    scored = "framework output" if gate_masks else "raw mask"
    logger.info(
        "%s: DSC1 %s (all, %s), %s (positives, %s), raw-mask DSC1 %s (positives); diagnosis accuracy %.4f, F1 %s -> %s",
        split,
        format_stats(seg["all"]["dsc1"]),
        scored,
        format_stats(seg.get("positive", {}).get("dsc1")),
        scored,
        format_stats(seg.get("positive", {}).get("dsc1_raw")),
        dx["accuracy"],
        f1,
        out_dir,
    )
