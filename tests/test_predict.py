"""Prediction CLI and library: inputs, batching over mixed sizes, errors per file, CSV/overlays/masks/SIIM."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ptx_keras.errors import ConfigError, DataError, ModelError

import tiny

SIZE = tiny.BRIGHT_SIZE


@pytest.fixture(scope="module")
def saved_model(run_dir):
    from ptx_keras.export import export_saved_model

    return export_saved_model(run_dir)


def square_image(height, width, box=None, dtype=np.uint8):
    """Dark image with a bright rectangle `box = (top, left, bottom, right)`."""
    image = np.full((height, width), 20, np.float32)
    if box:
        top, left, bottom, right = box
        image[top:bottom, left:right] = 235
    if dtype == np.uint16:
        return (image * 257).astype(np.uint16)
    return image.astype(dtype)


@pytest.fixture
def folder(tmp_path):
    from ptx_keras.data.dicom import write_dicom

    d = tmp_path / "studies"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(square_image(200, 240, (40, 60, 140, 180))).save(d / "pos.png")  # 100 x 120 box
    Image.fromarray(square_image(96, 96)).save(d / "neg.png")
    Image.fromarray(square_image(128, 160, (0, 0, 64, 80), np.uint16)).save(d / "sub" / "deep.png")
    write_dicom(
        str(d / "study.dcm"),
        square_image(256, 256, (64, 64, 192, 192), np.uint16) >> 4,
        spacing=(0.5, 0.25),
        bits_stored=12,
    )  # 12-bit: scaled by 4095, as in preparation
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (d / "notes.txt").write_text("ignored: not an image extension")
    return d


def read_table(output):
    return pd.read_csv(os.path.join(output, "predictions.csv"), keep_default_na=False)


def test_folder_with_a_corrupt_file(run_dir, folder, tmp_path):
    from ptx_keras.predict import PredictionResult, predict_paths

    out = tmp_path / "out"
    s = predict_paths([str(folder)], run_dir, str(out), batch_size=3, save_masks=True, progress=False)
    assert (s["n_files"], s["n_ok"], s["n_failed"], s["n_positive"]) == (5, 4, 1, 3)
    table = read_table(out).set_index("sample_id")
    assert table.loc["corrupt", "status"] == "error" and "corrupt.png" in table.loc["corrupt", "error"]
    assert table.loc["corrupt", "diagnosis"] == ""
    ok = table[table.status == "ok"]
    assert sorted(ok.index) == ["deep", "neg", "pos", "study"]
    assert ok.loc[["pos", "deep", "study"], "diagnosis"].astype(int).tolist() == [1, 1, 1]
    assert int(ok.loc["neg", "diagnosis"]) == 0 and int(ok.loc["neg", "area_px"]) == 0
    # Each image keeps its own size although the batch mixed sizes; the mask is the bright box.
    for sample_id, (h, w), area in [
        ("pos", (200, 240), 100 * 120),
        ("deep", (128, 160), 64 * 80),
        ("study", (256, 256), 128 * 128),
    ]:
        assert (int(ok.loc[sample_id, "height"]), int(ok.loc[sample_id, "width"])) == (h, w)
        mask = np.asarray(Image.open(out / "masks" / f"{sample_id}.png"))
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        assert int(ok.loc[sample_id, "area_px"]) == (mask > 0).sum()
        assert abs(int(ok.loc[sample_id, "area_px"]) - area) <= 0.05 * area  # edges blur at 32 x 32
        overlay = np.asarray(Image.open(out / "overlays" / f"{sample_id}.png"))
        assert overlay.shape == (h, w, 3)
    # The DICOM's spacing gives the area in mm^2; PNGs have none.
    assert float(ok.loc["study", "area_mm2"]) == pytest.approx(int(ok.loc["study", "area_px"]) * 0.5 * 0.25)
    assert ok.loc["pos", "area_mm2"] == ""
    assert s["failed"] == [(str(folder / "corrupt.png"), table.loc["corrupt", "error"])]
    # A frozen result; the dict interface of earlier versions reads it; summary.json holds the same fields.
    assert isinstance(s, PredictionResult) and s.n_ok == s["n_ok"] == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.n_ok = 5
    with pytest.raises(KeyError):
        s["n_images"]
    with open(s.summary, encoding="utf-8") as f:
        written = json.load(f)
    assert written == json.loads(json.dumps({k: v for k, v in s.to_dict().items() if k != "summary"}))


def test_non_finite_image_is_an_error_row_and_a_constant_one_a_warning(run_dir, tmp_path, caplog):
    from ptx_keras.predict import predict_paths

    d = tmp_path / "in"
    d.mkdir()
    for name, special in (("nan", np.nan), ("inf", np.inf)):
        image = square_image(40, 40, (10, 10, 30, 30)).astype(np.float32) / 255
        image[0, :3] = special
        Image.fromarray(image, mode="F").save(d / f"{name}.tif")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(d / "blank.png")
    with caplog.at_level("WARNING"):
        s = predict_paths([str(d)], run_dir, str(tmp_path / "out"), format="siim", progress=False)
    assert (s["n_files"], s["n_ok"], s["n_failed"]) == (3, 1, 2)
    table = read_table(tmp_path / "out").set_index("sample_id")
    assert table.loc["nan", "status"] == "error" and "nan.tif: 3 NaN and 0 infinite" in table.loc["nan", "error"]
    assert table.loc["inf", "status"] == "error" and "0 NaN and 3 infinite" in table.loc["inf", "error"]
    assert table.loc["nan", "diagnosis"] == table.loc["inf", "diagnosis"] == ""  # never a diagnosis
    assert table.loc["blank", "status"] == "ok"
    assert any(str(d / "blank.png") in r.getMessage() and "constant" in r.getMessage() for r in caplog.records)
    submission = pd.read_csv(tmp_path / "out" / "submission.csv")
    assert submission.ImageId.tolist() == ["blank"]


def test_cli_exit_codes(run_dir, folder, tmp_path, capsys):
    from ptx_keras.cli.predict import main

    out = str(tmp_path / "out")
    assert main([str(folder), "--model", run_dir, "--output", out, "--no-progress"]) == 1
    assert "1 file(s) failed" in capsys.readouterr().out
    assert (
        main(
            [
                str(folder / "pos.png"),
                str(folder / "neg.png"),
                "--model",
                run_dir,
                "--output",
                out,
                "--no-overlays",
                "--no-progress",
            ]
        )
        == 0
    )
    assert len(read_table(out)) == 2
    assert "warning:" in capsys.readouterr().err  # neg.png is a constant image: named in a warning
    # User errors: one line on stderr, status 2.
    (tmp_path / "empty").mkdir()
    for argv, text in [
        ([str(tmp_path / "empty"), "--model", run_dir], "No images found"),
        ([str(tmp_path / "missing.png"), "--model", run_dir], "Input not found"),
        ([str(folder / "pos.png"), "--model", str(tmp_path / "nomodel")], "Model not found"),
        ([str(folder / "pos.png"), "--model", str(tmp_path / "empty")], "neither a run directory"),
        ([str(folder / "pos.png"), "--model", run_dir, "--batch-size", "0"], "batch_size"),
    ]:
        assert main(argv + ["--output", out]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and text in err[0]
    with pytest.raises(SystemExit) as exc:
        main([str(folder), "--format", "xml"])
    assert exc.value.code == 2


def test_unwritable_output_is_one_line_naming_it(run_dir, folder, tmp_path, capsys):
    from ptx_keras.cli.predict import main

    (tmp_path / "file").write_text("in the way")
    for out in (tmp_path / "file", tmp_path / "file" / "predictions"):
        assert main([str(folder / "pos.png"), "--model", run_dir, "--output", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: Cannot write to the prediction output directory {out}: ")
        assert "[Errno" not in err[0]


def test_invalid_arguments(run_dir, folder, tmp_path):
    from ptx_keras.predict import predict_paths

    with pytest.raises(ConfigError, match="Unknown format 'xml'"):
        predict_paths([str(folder)], run_dir, str(tmp_path), format="xml")
    with pytest.raises(ConfigError, match="batch_size"):
        predict_paths([str(folder)], run_dir, str(tmp_path), batch_size=-2)
    with pytest.raises(DataError, match="No images found"):
        predict_paths([], run_dir, str(tmp_path))
    with pytest.raises(ModelError, match="Model not found"):
        predict_paths([str(folder)], str(tmp_path / "none"), str(tmp_path))


def test_siim_submission_decodes_to_the_masks(saved_model, folder, tmp_path):
    from ptx_keras.data.rle import rle_decode
    from ptx_keras.predict import predict_paths

    out = tmp_path / "out"
    s = predict_paths([str(folder)], saved_model.base_dir, str(out), format="siim", save_masks=True, progress=False)
    assert s["model"]["kind"] == "savedmodel" and s["model"]["path"] == saved_model.path
    table = read_table(out).set_index("sample_id")
    sub = pd.read_csv(out / "submission.csv", keep_default_na=False)
    assert list(sub.columns) == ["ImageId", "EncodedPixels"]
    assert sorted(sub.ImageId) == ["deep", "neg", "pos", "study"]  # the failed file has no row
    for image_id, rle in zip(sub.ImageId, sub.EncodedPixels):
        mask = np.asarray(Image.open(out / "masks" / f"{image_id}.png")) > 0
        if int(table.loc[image_id, "diagnosis"]):
            np.testing.assert_array_equal(rle_decode(rle, *mask.shape), mask)
            assert mask.any()
        else:
            assert rle == "-1"


def test_run_dir_and_saved_model_agree(run_dir, saved_model, folder, tmp_path):
    from ptx_keras.predict import predict_paths

    # The SavedModel's version directory works as well as its base directory.
    predict_paths([str(folder)], saved_model.path, str(tmp_path / "sm"), batch_size=1, overlays=False, progress=False)
    predict_paths([str(folder)], run_dir, str(tmp_path / "run"), batch_size=8, overlays=False, progress=False)
    a, b = read_table(tmp_path / "sm"), read_table(tmp_path / "run")
    pd.testing.assert_frame_equal(
        a.drop(columns=["score", "max_probability"]), b.drop(columns=["score", "max_probability"])
    )
    ok = a.status == "ok"
    np.testing.assert_allclose(a[ok].score.astype(float), b[ok].score.astype(float), rtol=1e-5)


def test_prediction_equals_the_serving_signature(saved_model, folder):
    """predict_paths' per-image pipeline gives what a TF Serving client gets from serving_default."""
    import tensorflow as tf

    from ptx_keras.predict import load_predictor

    predictor = load_predictor(saved_model.base_dir)
    image = np.asarray(Image.open(folder / "pos.png"))
    x = predictor.pipeline.preprocess(image)
    ours = predictor.pipeline.postprocess(predictor.probabilities(x[None])[0], *image.shape)
    served = tf.saved_model.load(saved_model.path).signatures["serve_uint8"](images=tf.constant(image[None]))
    for key, value in ours.items():
        np.testing.assert_allclose(value, served[key].numpy()[0], atol=1e-5)


def test_duplicate_names_get_distinct_ids(tmp_path):
    from ptx_keras.predict import collect_inputs

    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(square_image(8, 8)).save(tmp_path / sub / "x.png")
    Image.fromarray(square_image(8, 8)).save(tmp_path / "y.PNG")
    (tmp_path / ".hidden.png").write_bytes(b"")
    found = collect_inputs([str(tmp_path), str(tmp_path / "y.PNG")])  # y listed twice: kept once
    assert [sid for _, sid in found] == ["y", "a__x", "b__x"]


@pytest.mark.parametrize("layout", ["same stem, two extensions", "same name, two folders given as files"])
def test_colliding_names_give_distinct_outputs_and_no_duplicate_rows(run_dir, tmp_path, layout):
    from ptx_keras.predict import predict_paths

    d = tmp_path / "in"
    boxes = [(4, 4, 20, 20), None]  # one positive, one negative: overwriting would show
    if layout.startswith("same stem"):
        d.mkdir()
        paths = [d / "x.png", d / "x.tif"]
        inputs, expected = [str(d)], ["x.png", "x.tif"]
    else:
        paths = [d / "a" / "y.png", d / "b" / "y.png"]
        inputs, expected = [str(p) for p in paths], ["a__y", "b__y"]
    for path, box in zip(paths, boxes):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(square_image(48, 48, box)).save(path)
    out = tmp_path / "out"
    s = predict_paths(inputs, run_dir, str(out), format="siim", save_masks=True, progress=False)
    assert s["n_ok"] == 2
    table = read_table(out)
    assert sorted(table.sample_id) == expected
    assert sorted(os.listdir(out / "overlays")) == sorted(os.listdir(out / "masks")) == [f"{i}.png" for i in expected]
    by_file = table.set_index("file")
    areas = [
        (np.asarray(Image.open(out / "masks" / f"{by_file.loc[str(p), 'sample_id']}.png")) > 0).sum() for p in paths
    ]
    assert areas[0] > 200 and areas[1] == 0  # each file's own mask, none overwritten
    submission = pd.read_csv(out / "submission.csv")
    assert sorted(submission.ImageId) == expected and not submission.ImageId.duplicated().any()


def test_sample_ids_unique_in_hard_cases():
    from ptx_keras.predict import sample_ids

    assert sample_ids(["/d/x.png", "/d/x.tif", "/d/y.png"]) == ["x.png", "x.tif", "y"]
    assert sample_ids(["/d/a/y.png", "/d/b/y.png", "/d/a/y.tif"]) == ["a__y", "b__y", "y.tif"]
    assert sample_ids(["/d/x.png", "/d/sub/x.png"]) == ["x.png", "sub__x"]
    assert sample_ids(["/d/X.png", "/d/x.png"]) == ["X.png", "x.png-2"]  # one file on case-insensitive disks
    ids = sample_ids(["/d/a__b.png", "/d/a/b.png", "/d/b.png"])  # "__" in a name: numbered, still unique
    assert len({i.casefold() for i in ids}) == 3
    assert sample_ids(["/d/b/y.png", "/d/a/y.png"]) == ["b__y", "a__y"]  # no dependence on the order


def test_overlay_marks_the_mask():
    from ptx_keras.predict import overlay_image

    image = np.zeros((20, 20), np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    rgb = overlay_image(image, mask)
    assert rgb.shape == (20, 20, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (0, 0, 0)
    assert tuple(rgb[5, 5]) == (255, 230, 0)  # contour
    assert tuple(rgb[10, 10]) == (89, 14, 14)  # fill: 0.35 * (255, 40, 40) over black


def test_module_entry_point(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    proc = subprocess.run(
        [sys.executable, "-m", "ptx_keras.cli.predict", str(tmp_path / "missing.png"), "--model", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: Input not found")
