"""Data preparation, the resumable job: a source (folder, CSV, SIIM-ACR, phantoms) -> split, sharded TFRecords.

`prepare_dataset` loads every sample, makes its arrays (`ptx_keras.data.arrays`: resized image and mask, the
spatial weight map of eq. 6 from the resized mask), splits the samples (stratified 64 / 16 / 20 %,
`ptx_keras.data.split`) and writes the prepared-data format of `ptx_keras.data.prepared` (shards of examples
encoded by `ptx_keras.data.codec`, `manifest.csv`, `dataset.json`). Its settings are one
`ptx_keras.data.settings.PrepareSettings`.

Labels are the source's (a pneumothorax too small to survive the resize keeps label 1; `dataset.json` lists such
samples under `positive_empty_after_resize`).

Idempotency and resumption: the settings and the source's records are hashed into a fingerprint. Running
again with the same fingerprint does nothing; a different fingerprint in an existing output directory is a
`DataError` (or, with `overwrite=True`, the old data set is removed). While running, each processed sample
is cached under `.prepare-work/` and each shard is written to a hidden `.*.partial` file and renamed
atomically, so an interrupted run continues where it stopped and a half-written shard is never read; the
assignment of samples to shards is a deterministic function of the labels and the seed, so a shard written
by an earlier run holds exactly what the new run would write.

Worker processes (`multiprocessing`, spawn) never import TensorFlow: they encode each example themselves
(`ptx_keras.data.codec`); only the parent process imports TensorFlow, to write the TFRecord framing.
"""

import csv
import dataclasses
import glob
import hashlib
import io
import json
import logging
import math
import os
import shutil
import time
import typing
from datetime import datetime, timezone

import numpy as np

from ptx_keras import __version__, constants
from ptx_keras.data.arrays import FLOAT16_MAX, png_bytes, prepare_arrays
from ptx_keras.data.codec import FEATURES, WEIGHT_ENCODING, encode_example, encode_weight_map
from ptx_keras.data.pool import run_tasks
from ptx_keras.data.prepared import (
    DATASET_JSON,
    FORMAT_VERSION,
    MANIFEST_COLUMNS,
    MANIFEST_CSV,
    SHARD_RE,
    OldFormatError,
    load_prepared_info,
    read_manifest,
    shard_name,
)
from ptx_keras.data.records import SampleRecord
from ptx_keras.data.settings import PrepareSettings
from ptx_keras.data.split import stratified_split
from ptx_keras.errors import BadSampleError, DataError, writable_dir

__all__ = [
    "PARTIAL_SUFFIX",
    "SKIPPED_LOGGED",
    "SKIP_HINT",
    "WORK_DIR",
    "PrepareResult",
    "prepare_dataset",
    "resolve_source",
]


logger = logging.getLogger(__name__)

WORK_DIR = ".prepare-work"
PARTIAL_SUFFIX = ".partial"

# How to skip bad samples, appended to a bad-sample error by `prepare_dataset` (other entry points name their own).
SKIP_HINT = "Fix or remove it, or pass skip_bad=True (ptx-prepare --skip-bad) to skip bad samples"
# At most this many skipped samples are named in the log; dataset.json lists all.
SKIPPED_LOGGED = 10


@dataclasses.dataclass(frozen=True, eq=False)
class PrepareResult:
    """What `prepare_dataset` did.

    Attributes:
        output_dir: The prepared data directory (absolute).
        status: `"prepared"` (a new data set), `"resumed"` (an interrupted run finished), `"repaired"` (missing
            shards of a complete data set written again) or `"unchanged"` (nothing to do).
        shards_written: How many shards this call wrote.
        seconds: The call's wall time.
        info: The contents of `dataset.json` (`ptx_keras.data.prepared`: counts, shards, settings, bad samples).
    """

    output_dir: str
    status: str
    shards_written: int
    seconds: float
    info: dict

    def __getitem__(self, key):
        """`result[key]`: a field, else a key of `info`: the dict interface of earlier versions."""
        return getattr(self, key) if key in _RESULT_FIELDS else self.info[key]


_RESULT_FIELDS = ("output_dir", "status", "shards_written", "seconds")


# --- Per-sample work (runs in the workers) -------------------------------------------------------------------


def _atomic_write(path, data):
    temp = f"{path}.{os.getpid()}{PARTIAL_SUFFIX}"
    with open(temp, "wb") as f:
        f.write(data)
    os.replace(temp, path)


def _work_paths(work_dir, index):
    return os.path.join(work_dir, f"{index:07d}.example"), os.path.join(work_dir, f"{index:07d}.json")


def _work_one(task):
    """Loads, resizes and encodes one sample; writes `<index>.example` then `<index>.json` to the work dir.

    Returns `(index, meta)`; a bad sample gives `meta = {"bad": reason}` and writes nothing, so that a fixed
    file is read again on the next run.
    """
    index, record, settings, work_dir, *limit = task  # `(..., max_pixels)`; without it the default limit
    max_pixels = limit[0] if limit else None
    from ptx_keras.data.readers import load_sample

    try:
        loaded = load_sample(record, max_pixels=max_pixels)
        image, mask, weight = prepare_arrays(loaded, **settings)
        label = int(loaded.label)
        if label not in (0, 1):
            raise DataError(f"label must be 0 or 1. Received: label={loaded.label!r}")
    except Exception as e:  # noqa: BLE001 - every failure of one sample is reported with its file, not hidden
        return index, {"bad": f"{type(e).__name__}: {e}"}
    size = settings["image_size"]
    example = encode_example(
        {
            "image": png_bytes(image),
            "mask": png_bytes(mask),
            "weight": encode_weight_map(weight),
            "sample_id": record.sample_id,
            "label": label,
            "height": size,
            "width": size,
        }
    )
    orig_height, orig_width = np.asarray(loaded.image).shape
    spacing = loaded.spacing
    area = int(np.count_nonzero(mask))
    meta = {
        "sample_id": record.sample_id,
        "label": label,
        "area_pixels": area,
        "source": record.image_path,
        "orig_height": int(orig_height),
        "orig_width": int(orig_width),
        "spacing_row_mm": None if spacing is None else float(spacing[0]) * orig_height / size,
        "spacing_col_mm": None if spacing is None else float(spacing[1]) * orig_width / size,
        "weight_saturated": bool(weight.dtype == np.float16 and np.any(weight == FLOAT16_MAX)),
    }
    example_path, meta_path = _work_paths(work_dir, index)
    _atomic_write(example_path, example)
    _atomic_write(meta_path, json.dumps(meta).encode("utf-8"))
    return index, meta


# --- Output directory bookkeeping ---------------------------------------------------------------------------


def _our_entries(output_dir):
    names = []
    for name in os.listdir(output_dir):
        if name in (DATASET_JSON, MANIFEST_CSV, WORK_DIR) or SHARD_RE.match(name) or name.endswith(PARTIAL_SUFFIX):
            names.append(name)
    return names


def _clear_output(output_dir):
    for name in _our_entries(output_dir):
        path = os.path.join(output_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def _check_output(output_dir, fingerprint, overwrite):
    """Returns `"complete"`, `"resume"` or `"new"` for the output directory."""
    os.makedirs(output_dir, exist_ok=True)
    state_path = os.path.join(output_dir, WORK_DIR, "state.json")
    found = None
    if os.path.exists(os.path.join(output_dir, DATASET_JSON)):
        try:
            found, status = load_prepared_info(output_dir).get("fingerprint"), "complete"
        except OldFormatError:
            if not overwrite:
                raise
            found = status = None  # != fingerprint: the directory is cleared below
    elif os.path.exists(state_path):
        with open(state_path, encoding="utf-8") as f:
            found, status = json.load(f).get("fingerprint"), "resume"
    else:
        foreign = sorted(set(os.listdir(output_dir)) - set(_our_entries(output_dir)))
        if foreign:
            raise DataError(
                f"Output directory {output_dir} is not empty and holds no prepared data set "
                f"(found {', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                "choose an empty or new directory"
            )
        _clear_output(output_dir)
        return "new"
    if found == fingerprint:
        return status
    if not overwrite:
        raise DataError(
            f"Output directory {output_dir} holds a data set prepared from another source or with other settings "
            f"(fingerprint {found} != {fingerprint}). Choose another output directory, delete this one, "
            "or pass overwrite=True (ptx-prepare --overwrite)"
        )
    _clear_output(output_dir)
    return "new"


# --- Planning -----------------------------------------------------------------------------------------------


def _plan(records, metas, good, fractions, seed, shard_size):
    """Deterministic split and shard assignment: `{shard_name: [record indices]}` in split order."""
    splits = stratified_split(
        [metas[i]["label"] for i in good],
        groups=[records[i].group for i in good],
        fractions=fractions,
        seed=seed,
        given=[records[i].split for i in good],
    )
    plan = {}
    for k, split in enumerate(constants.SPLITS):
        members = [i for i, s in zip(good, splits) if s == split]
        # Shuffle once (seeded) so that every shard mixes labels and sources; shards are then contiguous runs.
        members = [members[j] for j in np.random.default_rng([seed, k]).permutation(len(members))]
        count = math.ceil(len(members) / shard_size)
        for j in range(count):
            plan[shard_name(split, j, count)] = members[j * shard_size : (j + 1) * shard_size]
    return plan


def _fingerprint(settings, records):
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(dataclasses.asdict(record), sort_keys=True).encode("utf-8"))
    payload = {"format_version": FORMAT_VERSION, "settings": settings, "records": digest.hexdigest()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def resolve_source(source, skip_bad=False):
    """Reads a source into records sorted by sample id.

    Args:
        source: A path (auto-detected by `discover_source`) or a list of `SampleRecord`.
        skip_bad: Let the reader leave out the samples it finds bad (missing files, malformed manifest rows);
            they are returned in `extra["reader_skipped"]`.

    Returns:
        `(path or None, format_name, records, extra)`; `extra` holds what the reader saw but did not
        return (`unlabelled`, `reader_skipped`, `notes`).

    Raises:
        FileNotFoundError: if the path does not exist.
        DataError: if the source is unreadable, an item is not a `SampleRecord` or a sample id repeats;
            `BadSampleError` for a bad sample the reader found, without `skip_bad`.
    """
    if isinstance(source, (str, os.PathLike)):
        from ptx_keras.data.readers import discover_source

        path = os.path.abspath(os.fspath(source))
        if not os.path.exists(path):
            raise FileNotFoundError(f"Data source not found: {path}")
        format_name, records = discover_source(path, skip_bad=skip_bad)
    else:
        path, format_name, records = None, "records", list(source)
        for record in records:
            if not isinstance(record, SampleRecord):
                raise DataError(f"source must be a path or a list of SampleRecord. Received an item {record!r}")
    # What a reader saw but did not return as samples (readers.SourceRecords), reported in dataset.json.
    extra = {
        "unlabelled": [str(p) for p in getattr(records, "unlabelled", [])],
        "reader_skipped": [list(map(str, s)) for s in getattr(records, "skipped", [])],
        "notes": [str(n) for n in getattr(records, "notes", [])],
    }
    records = sorted(records, key=lambda r: r.sample_id)
    for a, b in zip(records, records[1:]):
        if a.sample_id == b.sample_id:
            raise DataError(f"Duplicate sample id {a.sample_id!r} ({a.image_path} and {b.image_path})")
    return path, format_name, records, extra


# --- Running ------------------------------------------------------------------------------------------------


class _Work(typing.NamedTuple):
    """How samples are processed: the work folder (`WORK_DIR`), the array settings, the pool and the size limit."""

    dir: str
    settings: dict
    workers: int
    progress: bool
    max_pixels: object


def _process(records, indices, work, desc):
    """Runs `_work_one` over `indices` (`ptx_keras.data.pool.run_tasks`), yielding `(index, meta)` as they finish."""
    tasks = [(i, records[i], work.settings, work.dir, work.max_pixels) for i in indices]
    return run_tasks(_work_one, tasks, work.workers, progress=work.progress, desc=desc, ordered=False)


def _bad_error(record, reason):
    return BadSampleError(
        f"Bad sample {record.sample_id!r} ({record.image_path}"
        f"{'' if record.mask_path is None else ', mask ' + record.mask_path}): {reason}",
        SKIP_HINT,
    )


def _log_skipped(bad, reader_skipped, listed):
    """Names the skipped samples in the log (the first `SKIPPED_LOGGED`); `listed` is where all of them are."""
    entries = [(name, reason) for name, reason in reader_skipped] + [(b["sample_id"], b["reason"]) for b in bad]
    if not entries:
        return
    lines = [f"  {name}: {reason}" for name, reason in entries[:SKIPPED_LOGGED]]
    if len(entries) > SKIPPED_LOGGED:
        lines.append(f"  ... and {len(entries) - SKIPPED_LOGGED} more")
    logger.warning(
        "skipped %d bad sample(s) (%d while reading the source, %d while loading); all are listed in %s:\n%s",
        len(entries),
        len(reader_skipped),
        len(bad),
        listed,
        "\n".join(lines),
    )


def _warn_clamped(info, listed):
    clamped = info.get("weights_saturated_float16", [])
    if clamped:
        logger.warning(
            "%d of %d samples have weight-map values above float16's 65,504, stored clamped at it "
            "(weight_dtype=float16), so their boundary pixels weigh less than eq. 6 says; they are listed in %s "
            "(weights_saturated_float16). The default weight_dtype float32 stores them exactly.",
            len(clamped),
            info["counts"]["all"]["total"],
            listed,
        )


def _write_shard(output_dir, work_dir, name, indices):
    import tensorflow as tf

    final = os.path.join(output_dir, name)
    temp = os.path.join(output_dir, f".{name}{PARTIAL_SUFFIX}")
    with tf.io.TFRecordWriter(temp) as writer:
        for i in indices:
            with open(_work_paths(work_dir, i)[0], "rb") as f:
                writer.write(f.read())
    os.replace(temp, final)


def _describe(settings, fingerprint, source_path, format_name, records, plan, metas, bad, source_extra):
    settings = settings.to_dict()
    counts = {}
    for split in constants.SPLITS:
        members = [i for name, idx in plan.items() if name.startswith(split + "-") for i in idx]
        positives = sum(metas[i]["label"] for i in members)
        counts[split] = {"total": len(members), "positive": positives, "negative": len(members) - positives}
    counts["all"] = {key: sum(counts[s][key] for s in constants.SPLITS) for key in ("total", "positive", "negative")}
    return {
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": fingerprint,
        "settings": settings,
        "image_size": settings["image_size"],
        "bit_depth": settings["bit_depth"],
        "weight_map": {k: settings[k] for k in ("boundary_width", "normalize", "clip")},
        "weight_dtype": settings["weight_dtype"],
        "weight_encoding": WEIGHT_ENCODING,
        "source": dict(source_extra, path=source_path, format=format_name, records=len(records)),
        "counts": counts,
        "shards": {s: [n for n in plan if n.startswith(s + "-")] for s in constants.SPLITS},
        "features": list(FEATURES),
        "bad_samples": bad,
        "weights_saturated_float16": sorted(
            metas[i]["sample_id"] for idx in plan.values() for i in idx if metas[i].get("weight_saturated")
        ),
        "positive_empty_after_resize": sorted(
            metas[i]["sample_id"]
            for idx in plan.values()
            for i in idx
            if metas[i]["label"] and not metas[i]["area_pixels"]
        ),
    }


def _write_manifest(output_dir, plan, metas):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for name, indices in plan.items():
        for i in indices:
            row = dict(metas[i], split=name.split("-", 1)[0], shard=name)
            writer.writerow({k: "" if row[k] is None else row[k] for k in MANIFEST_COLUMNS})
    _atomic_write(os.path.join(output_dir, MANIFEST_CSV), buffer.getvalue().encode("utf-8"))


def _from_manifest(output_dir, records, info):
    """The per-sample metadata and the shard plan of a complete data set, from its manifest."""
    by_id = {r.sample_id: i for i, r in enumerate(records)}
    metas, plan = {}, {}
    for row in read_manifest(output_dir):
        meta = {k: row[k] for k in ("sample_id", "source")}
        for k in ("label", "area_pixels", "orig_height", "orig_width"):
            meta[k] = int(row[k])
        for k in ("spacing_row_mm", "spacing_col_mm"):
            meta[k] = float(row[k]) if row[k] else None
        metas[by_id[row["sample_id"]]] = meta
        plan.setdefault(row["shard"], []).append(by_id[row["sample_id"]])
    for entry in info.get("bad_samples", []):
        metas[by_id[entry["sample_id"]]] = {"bad": entry["reason"]}
    return metas, plan


def _metas_from_work(work_dir):
    metas = {}
    for path in glob.glob(os.path.join(work_dir, "*.json")):
        stem = os.path.basename(path)[: -len(".json")]
        if stem.isdigit() and os.path.exists(_work_paths(work_dir, int(stem))[0]):
            with open(path, encoding="utf-8") as f:
                metas[int(stem)] = json.load(f)
    return metas


def prepare_dataset(
    source,
    output_dir,
    settings=None,
    *,
    skip_bad=False,
    workers=None,
    progress=True,
    overwrite=False,
    max_image_pixels=None,
    **setting_overrides,
):
    """Prepares a source as split, sharded TFRecords with precomputed weight maps (see the module docstring).

    Args:
        source: A path (folder, CSV manifest, SIIM-ACR folder, auto-detected by `discover_source`) or a list of
            `SampleRecord`.
        output_dir: Directory to write; created if missing. It must be empty, or hold an (interrupted or
            complete) preparation of the same source with the same settings.
        settings: A `PrepareSettings` (the image size, bit depth, weight-map settings and dtype, split fractions
            and seed, shard size; a run's `DataConfig` is one); default: the package's defaults.
        skip_bad: False: stop at the first bad sample with a `BadSampleError`. True: skip bad samples and list
            them (file and reason) in `dataset.json` (`bad_samples`, and `source.reader_skipped` for those the
            reader found: missing files, malformed manifest rows) and in the logged summary.
        workers: Worker processes (default `os.cpu_count()`); 1 works in this process.
        progress: Show a progress bar.
        overwrite: Replace a data set prepared with other settings or from another source in `output_dir`.
        max_image_pixels: The image size limit (`ptx_keras.data.limits`; None: `MAX_IMAGE_PIXELS`): a larger
            image is a bad sample, refused from its header before decoding.
        **setting_overrides: Settings changed by keyword (`image_size=128`, ...), applied over `settings`.

    Returns:
        A `PrepareResult` (`result["counts"]` and the other keys of `dataset.json` still read as from the dict
        earlier versions returned).

    Raises:
        BadSampleError: on a bad sample (unless `skip_bad`): the message names its file, line or ImageId.
        DataError: on no usable sample, or an output directory that holds something else.
        OutputError: if `output_dir` cannot be written (checked before the source is read).
        FileNotFoundError: if the source path does not exist.
        ValueError: if a setting is invalid.
    """
    start = time.perf_counter()
    settings = PrepareSettings.from_kwargs(
        PrepareSettings.of(settings) if settings is not None else None, **setting_overrides
    )
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer. Received: workers={workers!r}")
    output_dir = os.path.abspath(os.fspath(output_dir))
    source_path, format_name, records, source_extra = _read_source(source, output_dir, skip_bad)
    fingerprint = _fingerprint(settings.to_dict(), records)
    status = _check_output(output_dir, fingerprint, overwrite)
    work = _Work(os.path.join(output_dir, WORK_DIR), settings.array_settings(), workers, progress, max_image_pixels)
    info, metas, old_plan = _start(output_dir, work.dir, records, status, fingerprint)
    bad = _process_samples(records, metas, work, skip_bad, complete=status == "complete")
    good = _good(records, metas, bad, source_path)
    plan = _plan(records, metas, good, settings.split_fractions, settings.split_seed, settings.shard_size)
    missing = _update_plan(output_dir, work.dir, plan, old_plan, write=status != "complete")

    if status == "complete" and not missing:
        shutil.rmtree(work.dir, ignore_errors=True)
        logger.info(
            "%s is already prepared with these settings (fingerprint %s); nothing to do", output_dir, fingerprint
        )
        return PrepareResult(output_dir, "unchanged", 0, time.perf_counter() - start, info)

    _write_missing_shards(output_dir, records, plan, missing, work)
    if status == "complete":
        result_status = "repaired"
    else:
        info = _describe(settings, fingerprint, source_path, format_name, records, plan, metas, bad, source_extra)
        _write_manifest(output_dir, plan, metas)
        _atomic_write(os.path.join(output_dir, DATASET_JSON), json.dumps(info, indent=2).encode("utf-8"))
        result_status = "prepared" if status == "new" else "resumed"
    shutil.rmtree(work.dir, ignore_errors=True)
    _log_skipped(bad, source_extra["reader_skipped"], os.path.join(output_dir, DATASET_JSON))
    _warn_clamped(info, os.path.join(output_dir, DATASET_JSON))
    return PrepareResult(output_dir, result_status, len(missing), time.perf_counter() - start, info)


def _read_source(source, output_dir, skip_bad):
    """`resolve_source` after checking that `output_dir` can be written (reading a source can take minutes); a
    rejected source leaves no folder behind that the check made."""
    created = not os.path.exists(output_dir)
    if not os.path.exists(os.path.join(output_dir, DATASET_JSON)):
        writable_dir(output_dir, "prepared data directory")
    try:
        source_path, format_name, records, source_extra = resolve_source(source, skip_bad)
    except Exception as e:
        if created and not os.listdir(output_dir):
            os.rmdir(output_dir)
        if isinstance(e, BadSampleError):
            raise e.with_hint(SKIP_HINT) from None
        raise
    if not records:
        raise DataError(f"No samples found in {source_path or 'the given records'}")
    return source_path, format_name, records, source_extra


def _start(output_dir, work_dir, records, status, fingerprint):
    """`(info, metas, old_plan)` to start from: a complete data set's `dataset.json`, metadata and shard plan
    (read back from its manifest), else no info and the plan an interrupted run left; with the samples cached
    in the work folder either way. Files a killed run was writing (`PARTIAL_SUFFIX`) are removed."""
    for name in os.listdir(output_dir):
        if name.endswith(PARTIAL_SUFFIX):
            os.remove(os.path.join(output_dir, name))  # rewritten below
    info, metas, old_plan = None, {}, {}
    if status == "complete":
        info = load_prepared_info(output_dir)
        metas, old_plan = _from_manifest(output_dir, records, info)
    else:
        os.makedirs(work_dir, exist_ok=True)
        _atomic_write(os.path.join(work_dir, "state.json"), json.dumps({"fingerprint": fingerprint}).encode("utf-8"))
        if os.path.exists(os.path.join(work_dir, "plan.json")):
            with open(os.path.join(work_dir, "plan.json"), encoding="utf-8") as f:
                old_plan = json.load(f)
    metas.update(_metas_from_work(work_dir))
    return info, metas, old_plan


def _process_samples(records, metas, work, skip_bad, complete):
    """Processes the samples without metadata yet (into `metas`); returns the bad ones as `dataset.json` lists
    them. Without `skip_bad`, the first bad sample raises `BadSampleError` (one a complete data set already
    lists stays listed)."""
    todo = [i for i in range(len(records)) if i not in metas]
    for i, meta in _process(records, todo, work, "prepare"):
        if "bad" in meta and not skip_bad:
            raise _bad_error(records[i], meta["bad"])
        metas[i] = meta
    bad_indices = sorted(i for i, m in metas.items() if "bad" in m)
    if bad_indices and not skip_bad and not complete:
        raise _bad_error(records[bad_indices[0]], metas[bad_indices[0]]["bad"])
    return [
        {
            "sample_id": records[i].sample_id,
            "file": records[i].image_path,
            "mask_file": records[i].mask_path,
            "reason": metas[i]["bad"],
        }
        for i in bad_indices
    ]


def _good(records, metas, bad, source_path):
    """The indices of the samples that are not bad; none is a `DataError`."""
    good = [i for i in range(len(records)) if "bad" not in metas.get(i, {})]
    if not good:
        raise DataError(
            f"No usable samples in {source_path or 'the given records'}: all {len(records)} are bad "
            f"(first: {bad[0]['file']}: {bad[0]['reason']})"
        )
    return good


def _update_plan(output_dir, work_dir, plan, old_plan, write):
    """Removes the shards written for another plan (e.g. a sample was fixed), records the plan in the work folder
    when `write`, and returns the names of the shards still to write."""
    for name in os.listdir(output_dir):
        if SHARD_RE.match(name) and old_plan.get(name) != plan.get(name):
            os.remove(os.path.join(output_dir, name))
    if write:
        _atomic_write(os.path.join(work_dir, "plan.json"), json.dumps(plan).encode("utf-8"))
    return [name for name in plan if not os.path.exists(os.path.join(output_dir, name))]


def _write_missing_shards(output_dir, records, plan, missing, work):
    """Writes the `missing` shards, first processing again their samples without a cached example (a complete
    data set with a deleted shard)."""
    os.makedirs(work.dir, exist_ok=True)
    redo = [i for name in missing for i in plan[name] if not os.path.exists(_work_paths(work.dir, i)[0])]
    for i, meta in _process(records, redo, work, "repair"):
        if "bad" in meta:
            raise DataError(
                f"Cannot rebuild the missing shards of {output_dir}: {_bad_error(records[i], meta['bad']).problem}. "
                "Prepare the data set again (overwrite=True)"
            )
    for name in missing:
        _write_shard(output_dir, work.dir, name, plan[name])
