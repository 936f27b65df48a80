"""The experiment's figures: Fig. 5 (each run's prediction on chosen test cases) and Fig. 6 (DSC histogram)."""

import os

import numpy as np

from ptx_keras.errors import PtxError

__all__ = ["CASE_QUANTILES", "EVAL_SPLIT", "pick_cases", "plot_dsc_histogram", "plot_model_cases"]


EVAL_SPLIT = "test"
CASE_QUANTILES = (("small", 0.15), ("moderate", 0.5), ("large", 0.85))


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


def plot_model_cases(planned, models, scores, cases, path, progress=True):
    """Fig. 5: one row per case, the truth then each run's predicted contour against the truth.

    Each run's model goes through the shared prediction loop (`ptx_keras.evaluation.iter_predictions`) on its own
    prepared test split, with its own thresholds; the mask drawn is the one its evaluation scored (gated unless
    the run's `diagnosis.gate_masks` is off).

    Args:
        planned: Finished `PlannedRun`s to draw, in column order.
        models: `{run name: keras.Model}` (their `best.keras`).
        scores: `{run name: per-image DataFrame}` (DSC1, HD and diagnosis of the captions and the gating).
        cases: `(title, sample_id)` pairs from `pick_cases`.
        path: Output PNG.
        progress: Show a progress bar over the runs.

    Returns:
        `path`.

    Raises:
        PtxError: if a case is missing from a run's test split.
    """
    from tqdm.auto import tqdm

    from ptx_keras.evaluation import collect_cases, iter_predictions
    from ptx_keras.figures.evaluation import plot_cases
    from ptx_keras.runs import RunDir

    ids = [sid for _, sid in cases]
    rows = [[] for _ in cases]
    first = None
    for p in tqdm(planned, desc="figure cases", unit="run", disable=not progress):
        run = RunDir(p.run_dir)
        cfg = run.load_config()
        prepared = run.prepared_dir()
        found = collect_cases(iter_predictions(models[p.spec.name], prepared, EVAL_SPLIT, progress=False, only_ids=ids))
        missing = sorted(set(ids) - set(found))
        if missing:
            raise PtxError(f"{prepared}: test images {missing} not found for the figure")
        first = first or found
        threshold = run.read_thresholds(cfg).thresholds.mask_threshold
        df = scores[p.spec.name].set_index("sample_id")
        for i, sid in enumerate(ids):
            pred = np.asarray(found[sid]["prob"], np.float32) > threshold
            if cfg.diagnosis.gate_masks and "diagnosis" in df and not df.loc[sid, "diagnosis"]:
                pred = np.zeros_like(pred)
            hd = df.loc[sid, "hd"]
            caption = f"DSC1 {df.loc[sid, 'dsc1']:.2f}, HD " + ("n/a" if not np.isfinite(hd) else f"{hd:.1f}")
            rows[i].append(
                {
                    "image": found[sid]["image"],
                    "true": found[sid]["true"],
                    "pred": pred,
                    "title": p.spec.label if i == 0 else "",
                    "caption": caption,
                }
            )
    for i, (title, sid) in enumerate(cases):
        image, true = first[sid]["image"], first[sid]["true"]
        rows[i].insert(0, {"image": image, "true": true, "pred": np.zeros_like(true), "title": title, "caption": sid})
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
    ax.set_xticklabels(
        [f"[{a:.1f}, {b:.1f}{']' if i == bins - 1 else ')'}" for i, (a, b) in enumerate(zip(edges[:-1], edges[1:]))],
        rotation=30,
        fontsize=8,
    )
    ax.set_xlabel("DSC (mean of the two classes) per test image")
    ax.set_ylabel("images")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
