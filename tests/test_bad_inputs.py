"""Bad inputs users meet: non-finite and constant images, manifest errors under skip_bad, and messages
that must name the right file, path or option (issue 13)."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from ptx_keras.data.prepare import prepare_dataset
from ptx_keras.data.prepared import load_prepared_info
from ptx_keras.errors import DataError

SIZE = 16


def _folder(root, n=6, size=24):
    """`n` random uint8 images; the odd ones have a rectangular pneumothorax mask (the others no mask file)."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size)).astype(np.uint8)).save(
            os.path.join(root, "images", f"s{i}.png")
        )
        if i % 2:
            mask = np.zeros((size, size), np.uint8)
            mask[4:12, 6:14] = 255
            Image.fromarray(mask).save(os.path.join(root, "masks", f"s{i}.png"))
    return root


def _float_tiff(path, special, count=1):
    """A float32 TIFF (ramp in [0, 1]) with `count` pixels set to `special` (NaN, inf or -inf)."""
    image = np.linspace(0, 1, 24 * 24, dtype=np.float32).reshape(24, 24)
    image.flat[:count] = special
    Image.fromarray(image, mode="F").save(path)
    return str(path)


def _prepare(source, out, **kwargs):
    return prepare_dataset(str(source), str(out), image_size=SIZE, workers=1, progress=False, **kwargs)


# --- 1. Non-finite and constant images ----------------------------------------------------------------------


@pytest.mark.parametrize("special, fragment", [(np.nan, "2 NaN and 0 infinite"), (np.inf, "0 NaN and 2 infinite")])
def test_preparation_refuses_a_non_finite_image_and_skips_it_with_skip_bad(tmp_path, special, fragment):
    src = _folder(str(tmp_path / "src"))
    bad = _float_tiff(tmp_path / "src" / "images" / "float.tif", special, count=2)
    with pytest.raises(DataError, match=fragment) as info:
        _prepare(src, tmp_path / "out")
    assert bad in str(info.value) and "skip-bad" in str(info.value)
    summary = _prepare(src, tmp_path / "out2", skip_bad=True)
    listed = load_prepared_info(str(tmp_path / "out2"))["bad_samples"]
    assert [b["file"] for b in listed] == [bad] and fragment in listed[0]["reason"]
    assert summary["counts"]["all"]["total"] == 6


def test_preparation_warns_about_a_constant_image(tmp_path, caplog):
    src = _folder(str(tmp_path / "src"))
    blank = os.path.join(src, "images", "blank.png")
    Image.fromarray(np.full((24, 24), 7, np.uint8)).save(blank)
    with caplog.at_level(logging.WARNING):
        summary = _prepare(src, tmp_path / "out")
    assert summary["counts"]["all"]["total"] == 7  # kept: constant is legal, only suspicious
    warned = [r.getMessage() for r in caplog.records if "constant image" in r.getMessage()]
    assert len(warned) == 1 and blank in warned[0]


# --- 3. skip_bad covers what the readers find ------------------------------------------------------------------


def _siim(root, defect):
    """Six labelled 24x24 DICOMs and `train-rle.csv`, plus one defective row (`defect`)."""
    from ptx_keras.data import rle_encode, write_dicom

    rng = np.random.default_rng(1)
    rows = []
    for i in range(6):
        write_dicom(os.path.join(root, "dicom", f"im{i}.dcm"), rng.integers(0, 256, (24, 24)).astype(np.uint8))
        mask = np.zeros((24, 24), bool)
        mask[5:15, 8:16] = i % 2 == 1
        rows.append(f"im{i}, {rle_encode(mask) if i % 2 else '-1'}")
    if defect == "missing dicom":
        rows.insert(2, "ghost, -1")
        name = "ghost"
    elif defect == "malformed rle":
        write_dicom(os.path.join(root, "dicom", "odd.dcm"), np.zeros((24, 24), np.uint8) + 9)
        rows.insert(2, "odd, 1 2 3")
        name = "odd"
    else:  # an ImageId whose DICOM is cut inside its header
        path = write_dicom(os.path.join(root, "dicom", "broken.dcm"), np.zeros((24, 24), np.uint8))
        with open(path, "rb") as f:
            head = f.read(400)
        with open(path, "wb") as f:
            f.write(head)
        rows.insert(2, "broken, -1")
        name = "broken"
    with open(os.path.join(root, "train-rle.csv"), "w") as f:
        f.write("ImageId, EncodedPixels\n" + "\n".join(rows) + "\n")
    return root, name


def _csv(root, defect):
    """A CSV manifest of six PNGs (three with masks) plus one defective row (`defect`)."""
    _folder(root)
    lines = ["image,mask,label"]
    for i in range(6):
        lines.append(f"images/s{i}.png,{f'masks/s{i}.png' if i % 2 else ''},{i % 2}")
    bad = {
        "missing image": ("images/gone.png,,0", "images/gone.png", "image file not found"),
        "missing mask": ("images/s0.png,masks/nothere.png,", "images/s0.png", "mask file not found"),
        "bad label": ("images/s2.png,,maybe", "images/s2.png", "label 'maybe' is not 0 or 1"),
        "positive without mask": ("images/s4.png,,1", "images/s4.png", "label 1 (pneumothorax) but no mask"),
    }[defect]
    lines.insert(3, bad[0])
    with open(os.path.join(root, "manifest.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    # The defective row is line 4 (line 1 is the header).
    return os.path.join(root, "manifest.csv"), os.path.join(root, bad[1]), bad[2]


@pytest.mark.parametrize("defect", ["missing dicom", "malformed rle", "truncated header"])
def test_siim_reader_problems_stop_without_skip_bad_and_are_skipped_with_it(tmp_path, caplog, defect):
    from ptx_keras.errors import BadSampleError

    src, name = _siim(str(tmp_path / "siim"), defect)
    with pytest.raises(BadSampleError, match=f"'?{name}'?") as info:
        _prepare(src, tmp_path / "out")
    if defect == "truncated header":
        assert "broken.dcm: truncated or corrupt DICOM" in str(info.value)
    else:
        assert "train-rle.csv: line 4" in str(info.value)
    assert str(info.value).endswith("pass skip_bad=True (ptx-prepare --skip-bad) to skip bad samples")
    with caplog.at_level(logging.WARNING, logger="ptx_keras.data.prepare"):
        summary = _prepare(src, tmp_path / "out2", skip_bad=True)
    assert summary["counts"]["all"]["total"] == 6
    skipped = load_prepared_info(str(tmp_path / "out2"))["source"]["reader_skipped"]
    assert [entry[0] for entry in skipped] == [name] and skipped[0][1] == info.value.problem
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "skipped 1 bad sample(s) (1 while reading the source, 0 while loading)" in logged
    assert f"{name}: {info.value.problem}" in logged


@pytest.mark.parametrize("defect", ["missing image", "missing mask", "bad label", "positive without mask"])
def test_csv_manifest_problems_stop_without_skip_bad_and_are_skipped_with_it(tmp_path, defect):
    from ptx_keras.errors import BadSampleError

    manifest, image, reason = _csv(str(tmp_path / "src"), defect)
    with pytest.raises(BadSampleError, match=f"manifest.csv: line 4: {reason}".replace("(", r"\(").replace(")", r"\)")):
        _prepare(manifest, tmp_path / "out")
    summary = _prepare(manifest, tmp_path / "out2", skip_bad=True)
    skipped = load_prepared_info(str(tmp_path / "out2"))["source"]["reader_skipped"]
    assert len(skipped) == 1 and skipped[0][0] == image and reason in skipped[0][1]
    assert summary["counts"]["all"]["total"] == 6


def test_csv_duplicate_id_and_empty_image_skipped_and_named(tmp_path):
    from ptx_keras.data.readers import read_csv_manifest

    root = tmp_path / "src"
    _folder(str(root))
    (root / "m.csv").write_text("image,id\nimages/s0.png,a\nimages/s1.png,a\n,b\nimages/s2.png,c\n")
    records = read_csv_manifest(root / "m.csv", skip_bad=True)
    assert [r.sample_id for r in records] == ["a", "c"]
    assert [s[0] for s in records.skipped] == [f"{root / 'm.csv'}: line 4", str(root / "images" / "s1.png")]
    assert records.skipped[0][1].endswith("line 4: empty 'image' path")
    assert records.skipped[1][1].endswith("line 3: sample id 'a' already used on line 2")
    assert records.notes == ["2 row(s) skipped as bad"]


def test_folder_problems_skipped_and_named(tmp_path):
    from ptx_keras.data.readers import read_folder
    from ptx_keras.errors import BadSampleError

    root = tmp_path / "src"
    _folder(str(root))
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(root / "images" / "s0.tif")  # s0.png and s0.tif
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(root / "masks" / "s3_mask.png")  # s3 has two masks
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(root / "masks" / "lost.png")  # no image
    with pytest.raises(BadSampleError, match="two image files share the name 's0'"):
        read_folder(root)
    records = read_folder(root, skip_bad=True)
    assert [r.sample_id for r in records] == ["s1", "s2", "s4", "s5"]
    names = [s[0] for s in records.skipped]
    assert names == ["s0", "s3", str(root / "masks" / "lost.png")]
    assert "matches two masks" in records.skipped[1][1] and "mask without an image" in records.skipped[2][1]


def test_prepare_cli_names_the_skipped_manifest_row(tmp_path, capsys, caplog):
    from ptx_keras.cli.prepare import main

    manifest, image, reason = _csv(str(tmp_path / "src"), "missing image")
    argv = [manifest, str(tmp_path / "out"), "--size", str(SIZE), "--workers", "1", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and image in err and "--skip-bad" in err
    with caplog.at_level(logging.WARNING):
        assert main(argv + ["--skip-bad"]) == 0
    assert "1 bad samples skipped" in capsys.readouterr().out
    logged = "\n".join(r.getMessage() for r in caplog.records)  # stderr outside pytest (logging's last resort)
    assert "skipped 1 bad sample(s)" in logged and image in logged and reason in logged


# --- 4. Messages that point the right way ----------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
# A tiny quick start (as tests/test_training.py): 24 phantoms at 64 px, a small FC-DenseNet with 3 poolings.
TINY = [
    "data.phantoms.n=24",
    "data.phantoms.size=64",
    "data.image_size=64",
    "data.shard_size=8",
    "data.workers=1",
    "model.name=fc_densenet56",
    "model.options={growth_rate: 2, first_conv_filters: 8, num_pools: 3, layers_per_block: 2}",
    "train.batch_size=4",
    "train.epochs=1",
    "train.tensorboard=false",
    "train.jit_compile=off",
    "train.evaluate=false",
    "train.export=false",
]


def _train(tmp_path, *sets, data=None):
    from ptx_keras.cli.train import main

    argv = ["--config", QUICKSTART, "--output-dir", str(tmp_path / "runs"), "--name", "run", "--verbose", "0"]
    for s in TINY + [f"data.cache_dir={tmp_path / 'cache'}"] + list(sets):
        argv += ["--set", s]
    return main(argv + (["--data", str(data)] if data else []))


def _one_line(capsys):
    """The error line a CLI printed: the last line of stderr (progress bars may precede it), and the only one."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("error:"), lines
    assert not any(line.startswith(("error:", "Traceback")) for line in lines[:-1]), lines
    return lines[-1]


@pytest.mark.parametrize(
    "setting, fragments",
    [
        ("model.options.growth_rat=4", ["growth_rat", "Accepted:", "growth_rate"]),
        ("data.image_size=100", ["Input height 100 is not divisible by 8 (3 poolings)", "96 or 104"]),
    ],
)
def test_configuration_errors_come_before_any_data_work_and_leave_no_run(tmp_path, capsys, setting, fragments):
    assert _train(tmp_path, setting) == 2
    err = _one_line(capsys)
    assert all(f in err for f in fragments), err
    assert not (tmp_path / "cache").exists()  # no phantoms written, nothing prepared
    assert not (tmp_path / "runs" / "run").exists()  # in particular no runs/run/config.yaml


def test_training_bad_sample_hint_names_the_training_option_and_leaves_no_run(tmp_path, capsys):
    src = _folder(str(tmp_path / "src"), size=64)
    bad = _float_tiff(tmp_path / "src" / "images" / "float.tif", np.nan)
    assert _train(tmp_path, data=src) == 2
    err = _one_line(capsys)
    assert bad in err and "1 NaN" in err
    assert err.endswith("set data.skip_bad: true (--set data.skip_bad=true) to skip bad samples")
    assert "ptx-prepare" not in err and "skip_bad=True" not in err
    assert not (tmp_path / "runs" / "run").exists()


def test_rejected_run_keeps_an_existing_run_directory_untouched(tmp_path, capsys):
    run = tmp_path / "runs" / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("earlier: run\n")
    assert _train(tmp_path, "data.image_size=100") == 2
    capsys.readouterr()
    assert (run / "config.yaml").read_text() == "earlier: run\n"


@pytest.mark.parametrize("blocker", ["the output itself", "its parent"])
def test_unwritable_prepared_directory_is_one_line_naming_it(tmp_path, capsys, blocker):
    from ptx_keras.cli.prepare import main

    src = _folder(str(tmp_path / "src"))
    (tmp_path / "file").write_text("in the way")
    out = tmp_path / "file" if blocker == "the output itself" else tmp_path / "file" / "prepared"
    assert main([src, str(out), "--size", str(SIZE), "--workers", "1", "--no-progress"]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"error: Cannot write to the prepared data directory {out}: ")
    assert "[Errno" not in err


def test_permission_denied_is_named_with_path_and_reason(tmp_path, capsys, monkeypatch):
    # Tests run as root here, where chmod cannot make a directory unwritable: the probe write is refused instead.
    import tempfile

    from ptx_keras.cli.prepare import main

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", os.path.join(dir, ".write-test-x"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    out = tmp_path / "out"
    assert main([_folder(str(tmp_path / "src")), str(out), "--no-progress"]) == 2
    assert _one_line(capsys) == f"error: Cannot write to the prepared data directory {out}: Permission denied"
    assert not out.exists()


def test_rejected_source_leaves_no_prepared_directory(tmp_path, capsys):
    from ptx_keras.cli.prepare import main

    manifest, image, _ = _csv(str(tmp_path / "src"), "missing image")
    out = tmp_path / "new" / "prepared"
    assert main([manifest, str(out), "--no-progress"]) == 2
    assert image in _one_line(capsys)
    assert not out.exists()


def test_unwritable_run_directory_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "runs").write_text("in the way")
    assert _train(tmp_path) == 2
    err = _one_line(capsys)
    assert err == f"error: Cannot write to the output directory {tmp_path / 'runs' / 'run'}: Not a directory"


def test_other_os_errors_print_reason_and_path_not_errno(capsys):
    from ptx_keras.cli.common import run_cli

    def disk_full():
        raise OSError(28, "No space left on device", "/data/prepared/train-00000-of-00001.tfrecord")

    assert run_cli(disk_full) == 2
    assert _one_line(capsys) == "error: No space left on device: /data/prepared/train-00000-of-00001.tfrecord"

    def bug():
        raise OSError("no path: a failure of the program, not of the user's input")

    with pytest.raises(OSError, match="no path"):
        run_cli(bug)


def test_training_names_a_bad_manifest_row_and_its_own_skip_option(tmp_path, capsys):
    # prepare_dataset's skip_bad is covered above; this checks the message a training run gives for a reader
    # problem (no training happens). data.skip_bad itself reaches prepare_dataset through the run's settings.
    manifest, _, _ = _csv(str(tmp_path / "src"), "missing mask")
    assert _train(tmp_path, f"data.image_size={SIZE}", data=manifest) == 2
    err = _one_line(capsys)
    assert "manifest.csv: line 4: mask file not found" in err
    assert err.endswith("set data.skip_bad: true (--set data.skip_bad=true) to skip bad samples")
    assert not (tmp_path / "runs" / "run").exists()


# --- 7. One bad file is one error row; image size limits (issue 25) ----------------------------------------
PREDICT_SIZE = 32


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory with a 1x1-conv model (bright pixels are the predicted mask) at 32 px, 1 channel."""
    import keras

    from ptx_keras.config import load_config, save_config

    run = str(tmp_path_factory.mktemp("run"))
    cfg = load_config(extra={"model": {"name": "bright_is_ptx"}, "data": {"image_size": PREDICT_SIZE, "channels": 1}})
    save_config(cfg, os.path.join(run, "config.yaml"))
    inp = keras.Input((PREDICT_SIZE, PREDICT_SIZE, 1))
    conv = keras.layers.Conv2D(2, 1)
    model = keras.Model(inp, keras.layers.Softmax()(conv(inp)), name="bright_is_ptx")
    conv.set_weights([np.array([[[[-10.0, 10.0]]]], np.float32), np.array([5.0, -5.0], np.float32)])
    model.save(os.path.join(run, "best.keras"))
    return run


def _image(size=48):
    image = np.full((size, size), 30, np.uint8)
    image[10:30, 12:34] = 220
    return image


def _dicom(path, **kwargs):
    from ptx_keras.data.dicom import write_dicom

    return write_dicom(str(path), _image(), **kwargs)


def _png_bomb(path, width=60000, height=60000):
    """A PNG of a few dozen bytes whose header claims `width` x `height` 8-bit grayscale pixels."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _table(output):
    import pandas as pd

    return pd.read_csv(os.path.join(output, "predictions.csv")).set_index("sample_id")


def test_a_multi_valued_uid_in_one_dicom_is_its_error_row_and_the_others_are_predicted(tiny_run, tmp_path):
    import pydicom

    from ptx_keras.predict import predict_paths

    good, odd = _dicom(tmp_path / "good.dcm"), _dicom(tmp_path / "odd.dcm")
    ds = pydicom.dcmread(odd)
    ds.SOPInstanceUID = "1.2.3\\4.5.6"  # a backslash: DICOM reads a multi-valued UID
    ds.save_as(odd)
    out = tmp_path / "out"
    summary = predict_paths([odd, good], tiny_run, str(out), format="dicom", progress=False)
    table = _table(out)
    assert summary["n_files"] == 2 and sorted(table.index) == ["good", "odd"]
    assert table.loc["good", "status"] == "ok" and os.path.isfile(out / table.loc["good", "dicom_seg"])
    if table.loc["odd", "status"] == "ok":  # sanitised by the writer: then it has its outputs too
        assert os.path.isfile(out / table.loc["odd", "dicom_seg"])
    else:
        assert "odd.dcm" in table.loc["odd", "file"] and table.loc["odd", "error"]
    assert os.path.isfile(out / "summary.json")


def test_any_exception_while_reading_or_writing_one_file_is_its_error_row(tiny_run, tmp_path, monkeypatch):
    import ptx_keras.data.readers as readers
    from ptx_keras.predict import predict_paths

    for name in ("a", "b", "c"):
        Image.fromarray(_image()).save(tmp_path / f"{name}.png")
    read = readers.read_image

    def flaky(path, **kwargs):
        if path.endswith("b.png"):
            raise TypeError("unhashable type: 'MultiValue'")  # what no reader is written to raise
        return read(path, **kwargs)

    monkeypatch.setattr(readers, "read_image", flaky)
    import ptx_keras.predict as predict

    save = predict._save_png

    def failing_save(path, array):
        if os.path.basename(path) == "c.png" and "masks" in path:
            raise KeyError("disk full")
        save(path, array)

    monkeypatch.setattr(predict, "_save_png", failing_save)
    out = tmp_path / "out"
    summary = predict_paths([str(tmp_path)], tiny_run, str(out), progress=False, save_masks=True)
    table = _table(out)
    assert summary["n_ok"] == 1 and summary["n_failed"] == 2
    assert table.loc["a", "status"] == "ok"
    assert table.loc["b", "error"] == "TypeError: unhashable type: 'MultiValue'"
    assert table.loc["c", "error"] == "output failed: KeyError: 'disk full'"
    assert sorted(os.listdir(out / "masks")) == ["a.png"]
    assert sorted(os.listdir(out / "overlays")) == ["a.png"]  # c's overlay, written before its mask failed, removed


def test_a_decompression_bomb_is_an_error_row_and_the_good_image_is_predicted(tiny_run, tmp_path):
    from ptx_keras.predict import predict_paths

    bomb = _png_bomb(tmp_path / "bomb.png")
    assert os.path.getsize(bomb) < 100
    Image.fromarray(_image()).save(tmp_path / "good.png")
    out = tmp_path / "out"
    predict_paths([bomb, str(tmp_path / "good.png")], tiny_run, str(out), progress=False)
    table = _table(out)
    assert table.loc["good", "status"] == "ok"
    assert table.loc["bomb", "status"] == "error"
    assert (
        "image too large: its header claims 60000 x 60000 = 3,600,000,000 values, over the limit of "
        "100,000,000 (raise it with data.max_image_pixels / --max-image-pixels" in table.loc["bomb", "error"]
    )


@pytest.mark.parametrize("ext", ["png", "jpg", "tif"])
def test_the_size_limit_is_checked_from_the_header_before_decoding(tmp_path, monkeypatch, ext):
    from PIL import ImageFile

    from ptx_keras.data.readers import read_image

    path = str(tmp_path / f"x.{ext}")
    Image.fromarray(_image(40)).save(path)
    assert read_image(path, max_pixels=1600)[0].shape == (40, 40)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    with pytest.raises(DataError, match=r"header claims 40 x 40 = 1,600 values, over the limit of 1,599 "):
        read_image(path, max_pixels=1599)


@pytest.mark.parametrize("where", ["header", "jpeg_stream"])
def test_a_jpeg_dicom_claiming_a_huge_image_is_refused_before_decoding(tmp_path, monkeypatch, where):
    import pydicom
    from pydicom.encaps import encapsulate, generate_fragments

    from ptx_keras.data.dicom import read_dicom

    path = _dicom(tmp_path / "x.dcm", compress="jpeg")
    ds = pydicom.dcmread(path)
    if where == "header":
        ds.Rows = ds.Columns = 60000
    else:  # the JPEG stream's own start-of-frame claims 60000 x 60000; the DICOM header says 48 x 48
        jpeg = bytearray([f for f in generate_fragments(ds.PixelData) if f[:2] == b"\xff\xd8"][0])
        sof = jpeg.index(b"\xff\xc0")
        jpeg[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2
        ds.PixelData = encapsulate([bytes(jpeg)])
    ds.save_as(path)
    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(lambda self: pytest.fail("decoded")))
    with pytest.raises(DataError, match="header claims 60000 x 60000 = 3,600,000,000 values"):
        read_dicom(path)


def test_an_rle_dicom_whose_pixels_hold_a_jpeg2000_marker_is_read(tmp_path):
    """RLE data can hold any bytes: a J2K SOC+SIZ sequence in it (one 1024 px SIIM-layout phantom in 300 had
    one) once read as a 'claimed size' of 3,259,418,164 x 0 and refused the valid image."""
    import pydicom
    from pydicom.encaps import generate_fragments

    from ptx_keras.data.dicom import read_dicom, write_dicom

    image = _image()
    # Differing neighbours make the RLE encoder copy them literally: SOC (ff 4f), SIZ (ff 51), then a huge
    # Xsiz/Ysiz, as a codestream header would have them.
    image[0, :12] = [0xFF, 0x4F, 0xFF, 0x51, 0, 41, 0, 0, 0xC2, 0x47, 0x11, 0x34]
    path = write_dicom(str(tmp_path / "x.dcm"), image, compress="rle")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    assert any(b"\xff\x4f\xff\x51" in f for f in generate_fragments(ds.PixelData))
    read, info = read_dicom(path)
    assert info["transfer_syntax"] == pydicom.uid.RLELossless and read.shape == image.shape


def test_j2k_frame_size_reads_a_codestream_or_jp2_header_and_nothing_else():
    from ptx_keras.data.limits import j2k_frame_size

    # SIZ: Lsiz, Rsiz, Xsiz=640, Ysiz=480, XOsiz=YOsiz=0, tile sizes and offsets, Csiz=1
    siz = b"\x00\x29\x00\x00" + (640).to_bytes(4, "big") + (480).to_bytes(4, "big") + bytes(24) + b"\x00\x01"
    codestream = b"\xff\x4f\xff\x51" + siz + bytes(8)
    jp2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x14ftypjp2 " + bytes(8) + codestream
    assert j2k_frame_size(codestream) == (480, 640, 1)
    assert j2k_frame_size(jp2) == (480, 640, 1)
    assert j2k_frame_size(b"\x17" * 9 + codestream) is None  # a marker inside other data is not a header
    assert j2k_frame_size(codestream[:30]) is None  # too short to hold SIZ


def test_preparation_skips_an_image_over_the_size_limit(tmp_path):
    src = _folder(str(tmp_path / "src"), size=24)
    Image.fromarray(_image(40)).save(tmp_path / "src" / "images" / "big.png")
    summary = _prepare(src, tmp_path / "out", skip_bad=True, max_image_pixels=24 * 24)
    listed = load_prepared_info(str(tmp_path / "out"))["bad_samples"]
    assert [os.path.basename(b["file"]) for b in listed] == ["big.png"] and "over the limit of 576" in listed[0][
        "reason"
    ]
    assert summary["counts"]["all"]["total"] == 6


def test_a_malformed_dicom_element_is_a_data_error(tmp_path):
    import pydicom

    from ptx_keras.data.dicom import read_dicom

    path = _dicom(tmp_path / "x.dcm")
    ds = pydicom.dcmread(path)
    ds["NumberOfFrames"] = pydicom.DataElement(0x00280008, "IS", "1\\2")  # two values where one is expected
    ds.save_as(path)
    with pytest.raises(DataError, match=r"x\.dcm: malformed DICOM \(TypeError"):
        read_dicom(path)


def _one_kind_source(tmp_path, kind):
    """An image/mask folder of 10 images, all `kind` ("positive" or "negative")."""
    src = tmp_path / "src"
    os.makedirs(src / "images")
    os.makedirs(src / "masks")
    for i in range(10):
        Image.fromarray(_image(64)).save(src / "images" / f"s{i}.png")
        if kind == "positive":
            mask = np.zeros((64, 64), np.uint8)
            mask[10:30, 12:34] = 255
            Image.fromarray(mask).save(src / "masks" / f"s{i}.png")
    return src


@pytest.mark.parametrize("kind", ["negative", "positive"])
def test_training_data_of_one_kind_is_refused_before_the_first_epoch(tmp_path, capsys, monkeypatch, kind):
    import ptx_keras.training as training

    src = _one_kind_source(tmp_path, kind)
    monkeypatch.setattr(training, "make_callbacks", lambda *a: pytest.fail("training started"))
    assert _train(tmp_path, data=src) == 2
    err = _one_line(capsys)
    count = "0 positive and 6 negative" if kind == "negative" else "6 positive and 0 negative"
    assert f"The train split of {tmp_path / 'cache'}" in err and f"has {count} images: training needs both" in err
    assert ("train.allow_positive_only" in err) == (kind == "positive")  # the way out, where there is one
    assert not (tmp_path / "runs" / "run").exists()


@pytest.mark.parametrize("kind", ["negative", "positive"])
def test_allow_positive_only_trains_on_positives_alone_with_a_warning(tmp_path, capsys, caplog, monkeypatch, kind):
    """Positive images alone train the masks when the user says so (a warning names the split); negative images
    alone are still refused: there is nothing to segment."""
    import ptx_keras.training as training

    src = _one_kind_source(tmp_path, kind)

    class Started(Exception):
        pass

    def started(*args):
        raise Started

    monkeypatch.setattr(training, "make_callbacks", started)
    sets = ("train.allow_positive_only=true", "evaluation.search_thresholds=false")
    if kind == "positive":
        with caplog.at_level(logging.WARNING, logger="ptx_keras.training"), pytest.raises(Started):
            _train(tmp_path, *sets, data=src)
        assert "has 6 positive and no negative images (train.allow_positive_only)" in caplog.text
    else:
        assert _train(tmp_path, *sets, data=src) == 2
        assert "has 0 positive and 6 negative images: training needs both" in _one_line(capsys)


# --- 8. An export never replaces a model file that is not ptx_keras's (issue 25) ---------------------------
@pytest.fixture(scope="module")
def tiny_export_run(tmp_path_factory):
    from ptx_keras import build_model
    from ptx_keras.config import load_config, save_config

    run = str(tmp_path_factory.mktemp("export-run"))
    cfg = load_config(extra={"model": {"name": "fc_densenet56"}, "data": {"image_size": 32, "channels": 1}})
    save_config(cfg, os.path.join(run, "config.yaml"))
    build_model(
        "fc_densenet56", input_shape=(32, 32, 1), growth_rate=2, layers_per_block=1, num_pools=2, first_conv_filters=4
    ).save(os.path.join(run, "best.keras"))
    return run


@pytest.mark.parametrize("fmt, name", [("onnx", "model.onnx"), ("litert", "model.tflite")])
def test_export_refuses_to_replace_a_foreign_model_file(tiny_export_run, tmp_path, capsys, fmt, name):
    from ptx_keras.cli.export import main as export_main

    out = tmp_path / "deploy"
    out.mkdir()
    (out / name).write_bytes(b"someone else's model")
    assert export_main([tiny_export_run, "--format", fmt, "--output", str(out)]) == 2
    err = _one_line(capsys)
    assert f"{out / name} exists and is not a ptx_keras {fmt} export" in err and "refusing to replace it" in err
    assert (out / name).read_bytes() == b"someone else's model" and sorted(os.listdir(out)) == [name]


def test_export_replaces_its_own_artifacts_and_says_so(tiny_export_run, tmp_path, caplog):
    from ptx_keras.errors import OutputError
    from ptx_keras.export import export_model

    out = str(tmp_path / "deploy")
    first = export_model(tiny_export_run, "litert", out).path
    with caplog.at_level(logging.WARNING, logger="ptx_keras.export.replace"):
        assert export_model(tiny_export_run, "litert", out).path == first
    assert f"Replacing the earlier ptx_keras litert export {first}" in caplog.text
    with open(first, "ab") as f:  # the .tflite beside our export.json is no longer the one it describes
        f.write(b"changed")
    with pytest.raises(OutputError, match="is not a ptx_keras litert export"):
        export_model(tiny_export_run, "litert", out)
    onnx_out = str(tmp_path / "onnx")
    os.makedirs(onnx_out)
    with open(os.path.join(onnx_out, "export.json"), "w") as f:
        f.write("{}")  # not ptx_keras export metadata
    with pytest.raises(OutputError, match="export.json exists and is not ptx_keras export metadata"):
        export_model(tiny_export_run, "onnx", onnx_out)
    os.remove(os.path.join(onnx_out, "export.json"))
    path = export_model(tiny_export_run, "onnx", onnx_out).path
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ptx_keras.export.replace"):
        export_model(tiny_export_run, "onnx", onnx_out)
    assert f"Replacing the earlier ptx_keras onnx export {path}" in caplog.text
