"""The experiment's tables (paper Tables 2-5 in Markdown, CSV and LaTeX) from its finished runs.

* `segmentation.*` (Tables 2, 4, 5): mean (std) per test image of MPA, PA1, DSC, DSC1 and HD (pixels), the
  trainable parameters and GMACs per image at the input size; `*` marks p < 0.05 in Student's t-test for two
  independent samples against the run's reference (the paper's test), `†` the paired Wilcoxon signed-rank test;
* `diagnosis.*` (Table 3): accuracy, sensitivity, specificity, PPV, NPV and F1 in percent;
* the figures of `ptx_keras.experiments.figures` (Figs. 5-6).

The segmentation metrics are those of each run's `eval/test/per_image.csv`: they score the mask its evaluation
scored (the framework output by default; `masks` in its summary.json).
"""

import math
import os

import numpy as np
import pandas as pd

from ptx_keras import constants as C
from ptx_keras.errors import PtxError
from ptx_keras.experiments.figures import pick_cases, plot_dsc_histogram, plot_model_cases
from ptx_keras.experiments.plan import FINISHED, run_status
from ptx_keras.reports import latex_table, markdown_table, write_text

__all__ = [
    "DIAGNOSIS_TITLES",
    "EVAL_SPLIT",
    "METRIC_TITLES",
    "TABLE_METRICS",
    "T_MARK",
    "WILCOXON_MARK",
    "diagnosis_display",
    "diagnosis_rows",
    "segmentation_display",
    "segmentation_rows",
    "write_tables",
]


EVAL_SPLIT = "test"
TABLE_METRICS = ("mpa", "pa1", "dsc", "dsc1", "hd")
METRIC_TITLES = {"mpa": "MPA", "pa1": "PA1", "dsc": "DSC", "dsc1": "DSC1", "hd": "HD (px)"}
DIAGNOSIS_TITLES = {
    "accuracy": "Accuracy (%)",
    "sensitivity": "Sensitivity (%)",
    "specificity": "Specificity (%)",
    "ppv": "PPV (%)",
    "npv": "NPV (%)",
    "f1": "F1-score (%)",
}
T_MARK = "*"
WILCOXON_MARK = "†"


def _read_scores(run_dir):
    from ptx_keras.runs import RunDir

    return pd.read_csv(RunDir.of(run_dir).per_image_file(EVAL_SPLIT), dtype={"sample_id": str})


def _complexity(run_dir, cfg):
    from ptx_keras.models.summary import count_macs, count_parameters
    from ptx_keras.runs import RunDir

    model = RunDir.of(run_dir).load_model()
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
            row.update(
                {
                    f"{m}_mean": r["mean"],
                    f"{m}_std": r["std"],
                    f"{m}_n_missing": int(r["n_missing"]),
                    f"{m}_t_pvalue": r["t_pvalue"],
                    f"{m}_t_significant": bool(r["t_significant"]),
                    f"{m}_wilcoxon_pvalue": r["wilcoxon_pvalue"],
                    f"{m}_wilcoxon_significant": bool(r["wilcoxon_significant"]),
                }
            )
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
        rows.append(
            {
                "run": spec.name,
                "label": spec.label,
                **{k: dx[k] for k in C.DIAGNOSIS_KEYS},
                **{k: dx[k] for k in ("tp", "fp", "tn", "fn", "n")},
            }
        )
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
        for k in C.DIAGNOSIS_KEYS:
            v = row[k]
            cells[DIAGNOSIS_TITLES[k]] = "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.2f}"
        out.append(cells)
    return pd.DataFrame(out)


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
    return (
        "Images with undefined HD (an empty predicted or true mask), left out of HD: " + ", ".join(notes) + "."
        if notes
        else ""
    )


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
    finished = [p for p in planned if run_status(p.run_dir) == FINISHED]
    if not finished:
        raise PtxError("No run of the experiment has finished (RUN_DIR/eval/test/per_image.csv); nothing to tabulate")
    os.makedirs(out_dir, exist_ok=True)
    scores = {p.spec.name: _read_scores(p.run_dir) for p in finished}
    figure_names = set(experiment.figure_runs)
    models, complexity = _models_and_complexity(finished, figure_names)
    seg = segmentation_rows(experiment, scores, complexity)
    dx = diagnosis_rows(experiment, scores)
    title = experiment.description.splitlines()[0] if experiment.description else experiment.name
    paths = {
        **_write_segmentation(experiment, seg, os.path.join(out_dir, "segmentation"), title, digits),
        **_write_diagnosis(dx, os.path.join(out_dir, "diagnosis"), title),
    }
    fig_runs = [p for p in finished if p.spec.name in figure_names]
    if fig_runs:  # else none of `figure_runs` has finished yet
        paths.update(_write_figures(experiment, fig_runs, scores, models, out_dir, progress))
    models.clear()
    return paths


def _models_and_complexity(finished, figure_names):
    """`({name: model} of the figure runs, {name: complexity} of every run)`; the other models are let go at once."""
    complexity, models = {}, {}
    for p in finished:
        model, complexity[p.spec.name] = _complexity(p.run_dir, p.config)
        if p.spec.name in figure_names:
            models[p.spec.name] = model
        else:
            del model
    return models, complexity


def _write_segmentation(experiment, seg, base, title, digits):
    """`segmentation.csv`, `.md` (with the missing-HD note) and `.tex` at `base`; returns their paths."""
    paths = {}
    seg.to_csv(base + ".csv", index=False)
    paths["segmentation_csv"] = base + ".csv"
    note = _missing_note(seg)
    md = [f"# {title}", "", _legend(experiment, seg), "", markdown_table(segmentation_display(seg, digits)), ""]
    if note:
        md += [note, ""]
    paths["segmentation_md"] = write_text(base + ".md", "\n".join(md))
    latex = segmentation_display(seg, digits, latex=True)
    raw = [METRIC_TITLES[m] for m in TABLE_METRICS]
    paths["segmentation_tex"] = write_text(
        base + ".tex",
        latex_table(
            latex,
            f"{title}. " + _legend(experiment, seg).replace(WILCOXON_MARK, "dagger"),
            raw_columns=raw,
            label_columns=2 if "Compared with" in latex.columns else 1,
        ),
    )
    return paths


def _write_diagnosis(dx, base, title):
    """`diagnosis.csv`, `.md` and `.tex` at `base` (cf. Table 3); returns their paths."""
    paths = {}
    dx.to_csv(base + ".csv", index=False)
    paths["diagnosis_csv"] = base + ".csv"
    shown = diagnosis_display(dx)
    rule = "Pneumothorax when the predicted mask exceeds the diagnosis area threshold (paper: 50 pixels at 256 x 256)."
    paths["diagnosis_md"] = write_text(
        base + ".md", "\n".join([f"# {title}: diagnosis (cf. Table 3)", "", rule, "", markdown_table(shown), ""])
    )
    paths["diagnosis_tex"] = write_text(base + ".tex", latex_table(shown, f"{title}: diagnosis. {rule}"))
    return paths


def _write_figures(experiment, fig_runs, scores, models, out_dir, progress):
    """Fig. 6 (DSC histogram) of the finished figure runs and Fig. 5 (cases picked on the reference run)."""
    paths = {
        "histogram": plot_dsc_histogram(
            {p.spec.label: scores[p.spec.name]["dsc"].to_numpy() for p in fig_runs},
            os.path.join(out_dir, "fig6_dsc_histogram.png"),
        )
    }
    ref_name = experiment.reference if experiment.reference in scores else fig_runs[0].spec.name
    cases = pick_cases(scores[ref_name])
    if cases:
        paths["cases"] = plot_model_cases(
            fig_runs, models, scores, cases, os.path.join(out_dir, "fig5_cases.png"), progress=progress
        )
    return paths
