"""Fuzzed DICOM never stops a run (issue 25): the SIIM-layout phantoms of every transfer syntax the package writes
(Explicit VR Little Endian, JPEG Baseline, RLE Lossless, Deflated; 8/12/16 bits; MONOCHROME1/2), mutated at
random with a fixed seed, go through `ptx-predict --format dicom` (the library function on all of them, the CLI on a
subset) and `ptx-prepare --skip-bad`.

Mutations: truncation, bytes flipped in the header or in the pixel data, a wrong VR written over a pixel-module
element, huge Rows/Columns, multi-valued UIDs, missing pixel data, header values that look like paths, and pairs of
these. Checked: no traceback and no hang (every call finishes within its timeout), every input accounted for in the
outputs (one row each in predictions.csv; a prepared sample, a listed bad sample or a listed reader skip each in
dataset.json), and no file written outside the output folders.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

SEED = 25
BASE_N = 24  # phantoms; the held-out style draws all four transfer syntaxes among them
# 312 mutated files; `fuzzed` checks that this seed's draw applies every mutation kind to every transfer syntax, alone
# and in pairs. (8 per file would be enough for that, but timed no faster: the two CLI runs' start-up dominates.)
MUTANTS_PER_FILE = 13
SIZE = 64
MODEL_SIZE = 32
TIMEOUT = 600  # seconds per CLI call: a hang fails the test
VR_CODES = (b"OB", b"UN", b"SQ", b"LO", b"UL", b"FD", b"AT", b"\x00\x00")
PIXEL_TAGS = (
    b"\x28\x00\x10\x00",
    b"\x28\x00\x11\x00",
    b"\x28\x00\x00\x01",
    b"\x28\x00\x01\x01",
    b"\x28\x00\x04\x00",
    b"\x28\x00\x02\x00",
)  # Rows, Columns, BitsAllocated, BitsStored, Photometric, Samples


def _pixel_offset(data):
    at = data.rfind(b"\xe0\x7f\x10\x00")
    return at if at > 0 else len(data) // 2


def _mutate_bytes(data, rng, kind):
    data = bytearray(data)
    if kind == "truncate":
        return bytes(data[: int(rng.integers(1, len(data)))])
    if kind in ("flip_header", "flip_pixels"):
        start, end = (132, _pixel_offset(data)) if kind == "flip_header" else (_pixel_offset(data), len(data))
        for _ in range(int(rng.integers(1, 9))):
            if end > start:
                data[int(rng.integers(start, end))] ^= int(rng.integers(1, 256))
        return bytes(data)
    if kind == "wrong_vr":
        tags = [t for t in PIXEL_TAGS if data.find(t, 132) > 0]
        if not tags:  # a deflated data set: its elements are compressed
            return _mutate_bytes(bytes(data), rng, "flip_header")
        at = data.find(tags[int(rng.integers(len(tags)))], 132)
        data[at + 4 : at + 6] = VR_CODES[int(rng.integers(len(VR_CODES)))]
        return bytes(data)
    raise ValueError(kind)


def _mutate_dataset(path, rng, kind):
    import pydicom

    ds = pydicom.dcmread(path)
    if kind == "huge_size":
        ds.Rows, ds.Columns = (int(v) for v in rng.choice([65535, 60000, 20000, 10001, 4096, 0, 1], 2))
    elif kind == "multi_uid":
        for keyword in rng.choice(["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"], 2, replace=False):
            setattr(ds, str(keyword), "1.2.3\\4.5.6")
    elif kind == "no_pixels":
        del ds.PixelData
    elif kind == "path_values":
        ds.PatientID = "../../escaped"
        ds.PatientName = "/tmp/x\\..\\y"
        ds.SeriesDescription = "..\\..\\out"
    else:
        raise ValueError(kind)
    ds.save_as(path)


BYTE_KINDS = ("truncate", "flip_header", "flip_pixels", "wrong_vr")
DATASET_KINDS = ("huge_size", "multi_uid", "no_pixels", "path_values")


def _mutant(src, dst, rng):
    """Writes a mutated copy of `src` to `dst`: one or two mutations, dataset-level ones first. Returns the kinds."""
    kinds = list(rng.choice(BYTE_KINDS + DATASET_KINDS, int(rng.integers(1, 3)), replace=False))
    kinds.sort(key=lambda k: k in BYTE_KINDS)
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data)
    for kind in kinds:
        if kind in DATASET_KINDS:
            try:
                _mutate_dataset(dst, rng, kind)
            except Exception:  # noqa: BLE001 - pydicom refuses to write some values: the file stays as it was
                pass
        else:
            with open(dst, "rb") as f:
                data = _mutate_bytes(f.read(), rng, kind)
            with open(dst, "wb") as f:
                f.write(data)
    return kinds


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """The phantoms' SIIM folder with every DICOM replaced by its mutants, and train-rle.csv rows for them."""
    import pydicom

    from ptx_keras.data.phantoms import write_phantom_dataset

    root = tmp_path_factory.mktemp("fuzz")
    base = root / "base"
    write_phantom_dataset(
        str(base), BASE_N, size=SIZE, format="siim", seed=SEED, style="heldout", progress=False, workers=1
    )
    rle = pd.read_csv(base / "train-rle.csv", dtype=str)
    sources = sorted(str(p) for p in base.rglob("*.dcm"))
    for path in sources:  # the study and series UIDs are random: fixed ones keep every byte offset reproducible
        ds = pydicom.dcmread(path)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
            setattr(ds, keyword, pydicom.uid.generate_uid(entropy_srcs=[keyword, os.path.basename(path)]))
        ds.save_as(path)
    transfers = {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in sources}
    from ptx_keras.data.dicom import (
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        JPEG_BASELINE,
        RLE_LOSSLESS,
    )

    assert transfers == {EXPLICIT_VR_LITTLE_ENDIAN, JPEG_BASELINE, RLE_LOSSLESS, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN}
    source = root / "siim"
    (source / "dicom").mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    rows, kinds, syntax_kinds = [], {}, {}
    for path in sources:
        image_id = os.path.splitext(os.path.basename(path))[0]
        syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        own = rle[rle.iloc[:, 0] == image_id].iloc[:, 1].tolist()
        for k in range(MUTANTS_PER_FILE):
            name = f"{image_id}_m{k:02d}"
            kinds[name] = _mutant(path, source / "dicom" / f"{name}.dcm", rng)
            syntax_kinds.setdefault(syntax, set()).update(kinds[name])
            rows += [(name, r) for r in own]
    # What the fixed draw covers: every kind of mutation on each transfer syntax, alone and in pairs.
    assert all(found == set(BYTE_KINDS + DATASET_KINDS) for found in syntax_kinds.values()), syntax_kinds
    assert {len(k) for k in kinds.values()} == {1, 2}
    pd.DataFrame(rows, columns=["ImageId", " EncodedPixels"]).to_csv(source / "train-rle.csv", index=False)
    return source, kinds


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import keras

    from ptx_keras.config import load_config, save_config
    from ptx_keras.runs import RunDir

    run = str(tmp_path_factory.mktemp("run"))
    cfg = load_config(extra={"model": {"name": "fuzz"}, "data": {"image_size": MODEL_SIZE, "channels": 1}})
    save_config(cfg, RunDir(run).config_file)
    inp = keras.Input((MODEL_SIZE, MODEL_SIZE, 1))
    model = keras.Model(inp, keras.layers.Softmax()(keras.layers.Conv2D(2, 1)(inp)), name="fuzz")
    model.save(RunDir(run).best_model)
    return run


def _tree(root):
    return {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files}


@pytest.mark.slow
def test_fuzzed_dicom_through_predict_and_prepare(fuzzed, tiny_run, tmp_path, monkeypatch):
    from ptx_keras.predict import predict_paths

    source, kinds = fuzzed
    files = sorted(str(p) for p in (source / "dicom").glob("*.dcm"))
    assert len(files) == len(kinds) == BASE_N * MUTANTS_PER_FILE
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = _tree(source.parent)

    # 1. The library function on every mutated file, with DICOM output.
    out = tmp_path / "predict"
    summary = predict_paths([str(source / "dicom")], tiny_run, str(out), format="dicom", progress=False)
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert sorted(table["file"]) == files and summary["n_files"] == len(files)
    assert set(table["status"]) <= {"ok", "error"} and (table["error"] != "").sum() >= summary["n_failed"]
    assert all(msg for msg in table.loc[table["status"] == "error", "error"])
    for column in ("overlay", "dicom_seg", "dicom_sr"):  # what a row names exists, inside the output folder
        for rel in table.loc[table[column] != "", column]:
            path = os.path.realpath(out / rel)
            assert path.startswith(os.path.realpath(out) + os.sep) and os.path.isfile(path), rel
    ok = (table["status"] == "ok").sum()
    print(f"\nfuzz: {len(files)} mutated DICOM files, predict: {ok} ok, {len(files) - ok} error rows")
    assert 0 < ok < len(files)  # the mutations both spare and break files: the test exercises both paths

    # 2. The CLI on a subset: no traceback, a row per file.
    subset = files[:: len(files) // 20][:20]
    cli_out = tmp_path / "predict-cli"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ptx_keras.cli.predict",
            *subset,
            "--model",
            tiny_run,
            "--output",
            str(cli_out),
            "--format",
            "dicom",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert sorted(pd.read_csv(cli_out / "predictions.csv")["file"]) == sorted(subset)

    # 3. ptx-prepare --skip-bad on the SIIM folder: every ImageId prepared or listed with its reason.
    prepared = tmp_path / "prepared"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ptx_keras.cli.prepare",
            str(source),
            str(prepared),
            "--skip-bad",
            "--workers",
            "2",
            "--size",
            str(MODEL_SIZE),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    info = json.loads((prepared / "dataset.json").read_text())
    manifest = pd.read_csv(prepared / "manifest.csv", dtype=str)
    names = set(manifest["sample_id"]) | {b["sample_id"] for b in info["bad_samples"]}
    names |= {str(s[0]) for s in info["source"].get("reader_skipped", [])}  # by ImageId
    assert names == set(kinds), sorted(set(kinds) - names)[:10]
    print(
        f"fuzz: prepare: {len(manifest)} prepared, {len(info['bad_samples'])} bad, "
        f"{len(info['source'].get('reader_skipped', []))} skipped by the reader"
    )

    # Nothing written outside the output folders: not beside the inputs, not in the working directory.
    assert _tree(source.parent) == before and os.listdir(cwd) == []
