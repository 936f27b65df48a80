import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ptx_keras.data.arrays import _box_fraction, resize_image, resize_mask
from ptx_keras.data.codec import decode_weight_map, encode_example
from ptx_keras.data.prepare import WORK_DIR, prepare_dataset
from ptx_keras.data.prepared import DATASET_JSON, MANIFEST_COLUMNS, MANIFEST_CSV, is_prepared_dir, load_prepared_info
from ptx_keras.data.readers import discover_source, load_sample
from ptx_keras.data.records import SampleRecord
from ptx_keras.data.weight_maps import spatial_weight_map
from ptx_keras.errors import DataError

SIZE = 32


def _write_folder(root, n=10, size=48, seed=0, dtype=np.uint8):
    """n images (random texture) and masks; odd samples have a rectangular pneumothorax."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    high = 256 if dtype == np.uint8 else 65536
    for i in range(n):
        image = rng.integers(0, high, (size, size)).astype(dtype)
        mask = np.zeros((size, size), np.uint8)
        if i % 2:
            top, left = rng.integers(2, size // 2, 2)
            mask[top : top + size // 3, left : left + size // 4] = 255
        Image.fromarray(image).save(os.path.join(root, "images", f"s{i:02d}.png"))
        Image.fromarray(mask).save(os.path.join(root, "masks", f"s{i:02d}.png"))
    return root


def _read_shards(out):
    import tensorflow as tf

    info = load_prepared_info(out)
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "mask": tf.io.FixedLenFeature([], tf.string),
        "weight": tf.io.FixedLenFeature([], tf.string),
        "sample_id": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
    }
    examples = {}
    for split, names in info["shards"].items():
        for name in names:
            for raw in tf.data.TFRecordDataset(os.path.join(out, name)):
                ex = tf.io.parse_single_example(raw, spec)
                dtype = tf.uint8 if info["bit_depth"] == 8 else tf.uint16
                h, w = int(ex["height"]), int(ex["width"])
                examples[ex["sample_id"].numpy().decode()] = {
                    "split": split,
                    "shard": name,
                    "label": int(ex["label"]),
                    "image": tf.io.decode_png(ex["image"], dtype=dtype).numpy()[..., 0],
                    "mask": tf.io.decode_png(ex["mask"]).numpy()[..., 0],
                    "weight": decode_weight_map(ex["weight"].numpy(), info["weight_dtype"], (h, w)),
                }
    return examples


def _manifest(out):
    with open(os.path.join(out, MANIFEST_CSV), newline="") as f:
        return list(csv.DictReader(f))


def _mtimes(out):
    return {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in os.listdir(out)}


@pytest.fixture
def source(tmp_path):
    return _write_folder(str(tmp_path / "src"))


def test_encode_example_matches_tf_train_example():
    import tensorflow as tf

    features = {"blob": b"\x00\xffabc", "name": "s\u00e9", "n": 300, "neg": [-1, 0, 2**40], "empty": b""}
    ours = encode_example(features)
    theirs = tf.train.Example(
        features=tf.train.Features(
            feature={
                "blob": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\x00\xffabc"])),
                "name": tf.train.Feature(bytes_list=tf.train.BytesList(value=["s\u00e9".encode()])),
                "n": tf.train.Feature(int64_list=tf.train.Int64List(value=[300])),
                "neg": tf.train.Feature(int64_list=tf.train.Int64List(value=[-1, 0, 2**40])),
                "empty": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b""])),
            }
        )
    )
    assert tf.train.Example.FromString(ours) == theirs


def test_resize_image_hand_values():
    # Same size: bit-exact, 8 and 16 bit.
    image8 = np.arange(16, dtype=np.uint8).reshape(4, 4) * 17
    np.testing.assert_array_equal(resize_image(image8, 4), image8)
    image16 = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4097
    out16 = resize_image(image16, 4, bit_depth=16)
    assert out16.dtype == np.uint16
    np.testing.assert_array_equal(out16, image16)
    # 8 -> 16 bit: x * 65535 / 255 = 257 x.
    np.testing.assert_array_equal(resize_image(image8, 4, bit_depth=16), image8.astype(np.uint16) * 257)
    # A 12-bit image (range 0..4095) to 8 bit: 4095 -> 255, 1365 -> 85, 0 -> 0.
    image12 = np.array([[0, 1365], [4095, 4095]], np.uint16)
    np.testing.assert_array_equal(resize_image(image12, 2, value_max=4095), [[0, 85], [255, 255]])
    # Constant 2x2 blocks halve to their value; the antialiasing filter keeps block averages.
    blocks = np.kron(np.array([[10, 200], [60, 120]], np.uint8), np.ones((4, 4), np.uint8))
    half = resize_image(blocks, 4)
    assert half.dtype == np.uint8 and half.shape == (4, 4)
    assert half[0, 0] == 10 and half[3, 3] == 120
    # Floats are taken as [0, 1].
    np.testing.assert_array_equal(resize_image(np.array([[0.0, 1.0]] * 2, np.float32), 2), [[0, 255]] * 2)


def test_resize_mask_area_fraction():
    mask = np.zeros((4, 4), bool)
    mask[0, 0:2] = True  # top-left 2x2 block: 2 of 4 pixels -> set (>= 0.5)
    mask[2, 2] = True  # bottom-right block: 1 of 4 -> not set
    out = resize_mask(mask, 2)
    np.testing.assert_array_equal(out, [[True, False], [False, False]])
    # Whole-block reduction (counted) agrees with the box filter's area fractions.
    random_mask = np.random.default_rng(0).random((64, 48)) < 0.5
    np.testing.assert_array_equal(resize_mask(random_mask, 16), _box_fraction(random_mask, 16) >= 0.5 - 1e-6)
    assert resize_mask(random_mask, 16).sum() > 0
    # Upsampling stays binary and keeps the area in proportion.
    up = resize_mask(np.array([[1, 0], [0, 0]], np.uint8), 4)
    assert up.dtype == bool and up.sum() == 4 and up[:2, :2].all()


def test_prepared_shards_read_back_bit_exactly(source, tmp_path):
    out = str(tmp_path / "out")
    summary = prepare_dataset(source, out, image_size=SIZE, workers=1, shard_size=3, progress=False)
    assert summary["status"] == "prepared" and summary["counts"]["all"]["total"] == 10
    examples = _read_shards(out)
    assert len(examples) == 10
    _, records = discover_source(source)
    for record in records:
        loaded = load_sample(record)
        expected_mask = resize_mask(loaded.mask, SIZE)
        got = examples[record.sample_id]
        np.testing.assert_array_equal(got["image"], resize_image(loaded.image, SIZE))
        np.testing.assert_array_equal(got["mask"], expected_mask.astype(np.uint8))
        assert got["weight"].dtype == np.float32  # the default: exact
        np.testing.assert_array_equal(got["weight"], spatial_weight_map(expected_mask))
        assert got["label"] == loaded.label == int(record.sample_id[-1]) % 2


def test_manifest_and_dataset_json(source, tmp_path):
    out = str(tmp_path / "out")
    prepare_dataset(source, out, image_size=SIZE, workers=1, shard_size=4, progress=False, split_seed=5)
    rows = _manifest(out)
    assert tuple(rows[0]) == MANIFEST_COLUMNS
    examples = _read_shards(out)
    for row in rows:
        ex = examples[row["sample_id"]]
        assert row["split"] == ex["split"] and row["shard"] == ex["shard"]
        assert int(row["label"]) == ex["label"]
        assert int(row["area_pixels"]) == int(ex["mask"].sum())
        assert (row["orig_height"], row["orig_width"]) == ("48", "48")
        assert row["source"].endswith(os.path.join("images", row["sample_id"] + ".png"))
        assert row["spacing_row_mm"] == row["spacing_col_mm"] == ""  # PNG: spacing unknown
    info = load_prepared_info(out)
    # 5 positives -> 3.2, 0.8, 1.0 -> 3, 1, 1; 5 negatives likewise.
    assert {s: info["counts"][s]["total"] for s in ("train", "val", "test")} == {"train": 6, "val": 2, "test": 2}
    assert info["counts"]["train"] == {"total": 6, "positive": 3, "negative": 3}
    assert info["shards"]["train"] == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert info["image_size"] == SIZE and info["bit_depth"] == 8 and info["weight_dtype"] == "float32"
    assert info["weight_encoding"] == "zlib" and info["format_version"] == 2 and info["weights_saturated_float16"] == []
    assert info["weight_map"] == {"boundary_width": 1, "normalize": None, "clip": None}
    assert info["source"]["format"] == "folder" and info["source"]["path"] == source
    assert info["bad_samples"] == [] and info["settings"]["split_seed"] == 5 and len(info["fingerprint"]) == 16
    assert is_prepared_dir(out) and not os.path.exists(os.path.join(out, WORK_DIR))


def test_sixteen_bit_float32_round_trip_and_dicom_spacing(tmp_path):
    from ptx_keras.data.dicom import write_dicom

    src = _write_folder(str(tmp_path / "src"), n=4, size=SIZE, dtype=np.uint16)
    image = (np.arange(64 * 48, dtype=np.uint32).reshape(64, 48) % 4096).astype(np.uint16)
    write_dicom(os.path.join(src, "images", "d0.dcm"), image, spacing=(0.5, 0.25), bits_stored=12)
    out = str(tmp_path / "out")
    prepare_dataset(
        src,
        out,
        image_size=SIZE,
        bit_depth=16,
        weight_dtype="float32",
        workers=1,
        progress=False,
        normalize="mean",
        clip=2.0,
        boundary_width=2,
    )
    examples = _read_shards(out)
    _, records = discover_source(src)
    for record in records:
        loaded = load_sample(record)
        got = examples[record.sample_id]
        assert got["image"].dtype == np.uint16 and got["weight"].dtype == np.float32
        if record.kind == "image":  # 16-bit PNG already at the prepared size: unchanged
            np.testing.assert_array_equal(got["image"], loaded.image)
        else:  # 12-bit DICOM resized and stretched to the 16-bit range
            np.testing.assert_array_equal(got["image"], resize_image(loaded.image, SIZE, 4095, bit_depth=16))
        mask = resize_mask(loaded.mask, SIZE)
        np.testing.assert_array_equal(got["weight"], spatial_weight_map(mask, 2, "mean", 2.0))
    row = next(r for r in _manifest(out) if r["sample_id"] == "d0")
    # Spacing scaled to the prepared size: 0.5 mm * 64 / 32 and 0.25 mm * 48 / 32.
    assert float(row["spacing_row_mm"]) == 1.0 and float(row["spacing_col_mm"]) == 0.375
    assert load_prepared_info(out)["weight_map"] == {"boundary_width": 2, "normalize": "mean", "clip": 2.0}


def test_second_run_does_nothing(source, tmp_path, caplog):
    out = str(tmp_path / "out")
    first = prepare_dataset(source, out, image_size=SIZE, workers=1, shard_size=4, progress=False)
    before = _mtimes(out)
    with caplog.at_level("INFO", logger="ptx_keras"):
        second = prepare_dataset(source, out, image_size=SIZE, workers=1, shard_size=4, progress=False)
    assert second["status"] == "unchanged" and second["shards_written"] == 0
    assert _mtimes(out) == before
    assert "nothing to do" in caplog.text
    assert second["counts"] == first["counts"] and second["fingerprint"] == first["fingerprint"]


def test_deleted_shard_is_rebuilt_and_stray_temp_file_removed(source, tmp_path):
    out = str(tmp_path / "out")
    prepare_dataset(source, out, image_size=SIZE, workers=1, shard_size=4, progress=False)
    victim = os.path.join(out, "train-00001-of-00002.tfrecord")
    with open(victim, "rb") as f:
        original = f.read()
    os.remove(victim)
    stray = os.path.join(out, ".train-00001-of-00002.tfrecord.partial")
    with open(stray, "wb") as f:
        f.write(b"half a shard")
    before = {k: v for k, v in _mtimes(out).items() if k.endswith(".tfrecord")}
    summary = prepare_dataset(source, out, image_size=SIZE, workers=1, shard_size=4, progress=False)
    assert summary["status"] == "repaired" and summary["shards_written"] == 1
    with open(victim, "rb") as f:
        assert f.read() == original
    assert not os.path.exists(stray) and not os.path.exists(os.path.join(out, WORK_DIR))
    after = _mtimes(out)
    assert all(after[k] == v for k, v in before.items())  # the other shards were kept


def test_interrupted_run_resumes_to_the_same_result(source, tmp_path):
    fresh = str(tmp_path / "fresh")
    prepare_dataset(source, fresh, image_size=SIZE, workers=1, shard_size=4, progress=False)
    # Interrupt a run: a truncated image makes it stop after the samples before it were processed.
    image_path = os.path.join(source, "images", "s07.png")
    with open(image_path, "rb") as f:
        good = f.read()
    with open(image_path, "wb") as f:
        f.write(good[:40])
    out = str(tmp_path / "out")
    with pytest.raises(DataError, match="s07.png"):
        prepare_dataset(source, out, image_size=SIZE, workers=1, shard_size=4, progress=False)
    cached = [n for n in os.listdir(os.path.join(out, WORK_DIR)) if n.endswith(".example")]
    assert len(cached) == 7 and not is_prepared_dir(out)
    with open(image_path, "wb") as f:
        f.write(good)
    summary = prepare_dataset(source, out, image_size=SIZE, workers=1, shard_size=4, progress=False)
    assert summary["status"] == "resumed"
    for name in os.listdir(fresh):
        if name.endswith(".tfrecord") or name == MANIFEST_CSV:
            with open(os.path.join(fresh, name), "rb") as a, open(os.path.join(out, name), "rb") as b:
                assert a.read() == b.read(), name


def test_other_settings_in_existing_dir(source, tmp_path):
    out = str(tmp_path / "out")
    prepare_dataset(source, out, image_size=SIZE, workers=1, progress=False)
    with pytest.raises(DataError, match="Choose another output directory"):
        prepare_dataset(source, out, image_size=SIZE, boundary_width=2, workers=1, progress=False)
    summary = prepare_dataset(source, out, image_size=SIZE, boundary_width=2, workers=1, progress=False, overwrite=True)
    assert summary["status"] == "prepared" and load_prepared_info(out)["weight_map"]["boundary_width"] == 2


def test_foreign_output_dir_is_refused(source, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        prepare_dataset(source, str(out), image_size=SIZE, workers=1, progress=False, overwrite=True)
    assert (out / "notes.txt").exists()


def _break_two(source):
    truncated = os.path.join(source, "images", "s02.png")
    with open(truncated, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[:30])
    wrong_shape = os.path.join(source, "masks", "s05.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(wrong_shape)
    return truncated, wrong_shape


def test_bad_samples_stop_by_default(source, tmp_path):
    truncated, _ = _break_two(source)
    with pytest.raises(DataError, match="s02") as info:
        prepare_dataset(source, str(tmp_path / "out"), image_size=SIZE, workers=1, progress=False)
    assert truncated in str(info.value) and "skip_bad" in str(info.value)


def test_skip_bad_lists_every_bad_sample(source, tmp_path):
    truncated, wrong_shape = _break_two(source)
    out = str(tmp_path / "out")
    summary = prepare_dataset(source, out, image_size=SIZE, workers=1, progress=False, skip_bad=True)
    bad = {b["sample_id"]: b for b in load_prepared_info(out)["bad_samples"]}
    assert set(bad) == {"s02", "s05"} and summary["bad_samples"] == load_prepared_info(out)["bad_samples"]
    assert bad["s02"]["file"] == truncated and bad["s05"]["mask_file"] == wrong_shape
    assert "s05.png" in bad["s05"]["reason"] and bad["s02"]["reason"]
    assert summary["counts"]["all"]["total"] == 8
    assert {r["sample_id"] for r in _manifest(out)} == {f"s{i:02d}" for i in range(10)} - {"s02", "s05"}


def test_no_usable_sample(tmp_path):
    src = _write_folder(str(tmp_path / "src"), n=2)
    for name in ("s00.png", "s01.png"):
        with open(os.path.join(src, "images", name), "wb") as f:
            f.write(b"not a png")
    with pytest.raises(DataError, match="No usable samples"):
        prepare_dataset(src, str(tmp_path / "out"), workers=1, progress=False, skip_bad=True)


def test_records_source_keeps_given_splits_and_reports_small_positives(tmp_path):
    src = _write_folder(str(tmp_path / "src"), n=6, size=64)
    dot = np.zeros((64, 64), np.uint8)
    dot[30, 30] = 255  # one pixel: gone after halving the resolution
    Image.fromarray(dot).save(os.path.join(src, "masks", "s00.png"))
    _, records = discover_source(src)
    records = [SampleRecord(**{**r.__dict__, "split": "test" if r.sample_id == "s03" else None}) for r in records]
    out = str(tmp_path / "out")
    summary = prepare_dataset(records, out, image_size=SIZE, workers=1, progress=False)
    rows = {r["sample_id"]: r for r in _manifest(out)}
    assert rows["s03"]["split"] == "test"
    assert rows["s00"]["label"] == "1" and rows["s00"]["area_pixels"] == "0"
    assert summary["positive_empty_after_resize"] == ["s00"]
    assert summary["source"]["format"] == "records" and summary["source"]["path"] is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 0}, "image_size=0"),
        ({"bit_depth": 12}, "bit_depth=12"),
        ({"weight_dtype": "float64"}, "weight_dtype='float64'"),
        ({"boundary_width": -1}, "boundary_width=-1"),
        ({"normalize": "max"}, "normalize='max'"),
        ({"clip": 0}, "clip=0"),
        ({"shard_size": 0}, "shard_size=0"),
        ({"workers": 0}, "workers=0"),
        ({"split_fractions": (0.5, 0.5, 0.5)}, "fractions="),
        ({"seed": 3}, "Unknown preparation setting 'seed'"),
        ({"imagesize": 64}, "Did you mean 'image_size'"),
    ],
)
def test_invalid_settings(source, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        prepare_dataset(source, str(tmp_path / "out"), progress=False, **kwargs)
    assert not os.path.exists(tmp_path / "out")


def test_missing_source_and_not_prepared_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        prepare_dataset(str(tmp_path / "nope"), str(tmp_path / "out"), progress=False)
    with pytest.raises(DataError, match="not a prepared data set"):
        load_prepared_info(str(tmp_path))
    assert not is_prepared_dir(str(tmp_path))
    with pytest.raises(DataError, match="SampleRecord"):
        prepare_dataset(["a.png"], str(tmp_path / "out"), progress=False)


def test_worker_pool_matches_single_process_and_workers_never_import_tensorflow(source, tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    prepare_dataset(source, one, image_size=SIZE, workers=1, shard_size=4, progress=False)
    prepare_dataset(source, two, image_size=SIZE, workers=2, shard_size=4, progress=False)
    for name in os.listdir(one):
        if name.endswith(".tfrecord") or name == MANIFEST_CSV:
            with open(os.path.join(one, name), "rb") as a, open(os.path.join(two, name), "rb") as b:
                assert a.read() == b.read(), name
    code = (
        "import sys, json\n"
        "from ptx_keras.data.prepare import _work_one\n"
        "from ptx_keras.data.readers import discover_source\n"
        f"_, records = discover_source({source!r})\n"
        "settings = dict(image_size=16, bit_depth=8, boundary_width=1, normalize=None, clip=None,"
        " weight_dtype='float16')\n"
        f"index, meta = _work_one((0, records[1], settings, {str(tmp_path / 'work')!r}))\n"
        "assert meta['label'] == 1, meta\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))))\n"
    )
    os.makedirs(tmp_path / "work")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == []


def test_cli(source, tmp_path, capsys):
    from ptx_keras.cli.prepare import main

    out = str(tmp_path / "out")
    assert main([source, out, "--size", str(SIZE), "--workers", "1", "--no-progress", "--seed", "3"]) == 0
    assert "prepared" in capsys.readouterr().out
    assert load_prepared_info(out)["settings"]["split_seed"] == 3
    assert main([source, out, "--size", "16", "--workers", "1", "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert main([str(tmp_path / "missing"), out]) == 2
    with pytest.raises(SystemExit):
        main([source, out, "--size", "0"])


@pytest.mark.slow
def test_module_entry_point_and_phantoms(tmp_path):
    from ptx_keras.data.phantoms import write_phantom_dataset

    src = str(tmp_path / "phantoms")
    write_phantom_dataset(src, 8, size=64, format="png", seed=1)
    out = str(tmp_path / "out")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ptx_keras.cli.prepare",
            src,
            out,
            "--size",
            str(SIZE),
            "--workers",
            "1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    info = load_prepared_info(out)
    assert info["counts"]["all"]["total"] == 8 and info["source"]["format"] == "folder"
    assert os.path.exists(os.path.join(out, DATASET_JSON))


def test_siim_phantoms_spacing_and_labels(tmp_path):
    from ptx_keras.data.phantoms import write_phantom_dataset

    src = str(tmp_path / "siim")
    written = write_phantom_dataset(src, 6, size=64, format="siim", seed=2, progress=False)
    out = str(tmp_path / "out")
    summary = prepare_dataset(src, out, image_size=SIZE, workers=1, progress=False)
    assert summary["source"]["format"] == "siim"
    expected_counts = {"total": 6, "positive": written["positives"], "negative": written["negatives"]}
    assert summary["counts"]["all"] == expected_counts
    empty_positives = set(summary["positive_empty_after_resize"])
    # Phantom DICOMs have PixelSpacing 0.14 mm * 1024 / 64 = 2.24 mm; at 32 px each pixel spans twice that.
    for row in _manifest(out):
        assert (row["orig_height"], row["orig_width"]) == ("64", "64")
        assert float(row["spacing_row_mm"]) == pytest.approx(4.48)
        assert float(row["spacing_col_mm"]) == pytest.approx(4.48)
        has_area = int(row["area_pixels"]) > 0
        assert has_area == (row["label"] == "1") or row["sample_id"] in empty_positives


def test_float16_weight_maps_saturate_instead_of_overflowing():
    from ptx_keras.data.arrays import prepare_arrays
    from ptx_keras.data.records import LoadedSample

    mask = np.zeros((256, 256), bool)
    mask[10, 10] = True  # |N|/|T| = 65536 > float16 max
    loaded = LoadedSample("one_pixel", np.zeros((256, 256), np.uint8), mask, 1)
    _, _, weight = prepare_arrays(loaded, 256, 8, 1, None, None, "float16")
    assert weight.dtype == np.float16 and np.all(np.isfinite(weight))
    assert weight[10, 10] == np.finfo(np.float16).max
    _, _, weight32 = prepare_arrays(loaded, 256, 8, 1, None, None, "float32")
    assert weight32[10, 10] > 65536


def test_weight_map_encoding_is_lossless_and_compact():
    from ptx_keras.data.codec import encode_weight_map

    mask = np.zeros((1024, 1024), bool)
    mask[300:303, 500:504] = True  # 12 pixels: weights above float16's range
    weight = spatial_weight_map(mask)
    data = encode_weight_map(weight)
    decoded = decode_weight_map(data, "float32", (1024, 1024))
    assert decoded.dtype == np.float32 and weight.max() > 65504
    np.testing.assert_array_equal(decoded, weight)
    assert len(data) < 64 * 1024  # a piecewise-constant map: raw float32 would be 4 MiB
    half = np.minimum(weight, 65504).astype(np.float16)
    np.testing.assert_array_equal(decode_weight_map(encode_weight_map(half), "float16", (1024, 1024)), half)
    with pytest.raises(DataError, match="not a stored weight map"):
        decode_weight_map(b"not zlib", "float32", (4, 4))
    with pytest.raises(DataError, match=r"shape \(8, 8\)"):
        decode_weight_map(encode_weight_map(weight[:4, :4]), "float32", (8, 8))
