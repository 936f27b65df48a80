"""Synthetic phantoms: determinism, shapes, balance, variety, hardness properties, writers, CLI, bad input."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ptx_keras.cli.phantoms import main as phantoms_main
from ptx_keras.data.phantoms import (
    _make_phantom_layers,
    generate_phantoms,
    make_phantom,
    sample_id,
    write_phantom_dataset,
)
from ptx_keras.errors import DataError


def _positives(count, size, start=0):
    return [_make_phantom_layers(size, None, positive=True, seed=start + i, bit_depth=8) for i in range(count)]


# --- make_phantom -------------------------------------------------------------------------------------
def test_same_seed_gives_identical_arrays_and_other_seeds_differ():
    a_image, a_mask, a_info = make_phantom(64, seed=3, positive=True)
    b_image, b_mask, b_info = make_phantom(64, seed=3, positive=True)
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert a_info == b_info
    c_image, c_mask, _ = make_phantom(64, seed=4, positive=True)
    assert not np.array_equal(a_image, c_image)
    assert not np.array_equal(a_mask, c_mask)


def test_generator_argument_is_deterministic_and_advanced():
    first = make_phantom(48, np.random.default_rng(7))[0]
    np.testing.assert_array_equal(first, make_phantom(48, np.random.default_rng(7))[0])
    rng = np.random.default_rng(7)
    make_phantom(48, rng)
    assert not np.array_equal(first, make_phantom(48, rng)[0])  # the generator moved on


@pytest.mark.parametrize("bit_depth, dtype", [(8, np.uint8), (16, np.uint16)])
def test_shapes_and_dtypes(bit_depth, dtype):
    image, mask, info = make_phantom(64, seed=1, positive=True, bit_depth=bit_depth)
    assert image.shape == mask.shape == (64, 64)
    assert image.dtype == dtype and mask.dtype == bool
    assert image.max() > (200 if bit_depth == 8 else 50000)  # the full range is used
    assert info["area_fraction"] == pytest.approx(mask.mean())


def test_16_bit_matches_8_bit_rendering():
    image8 = make_phantom(64, seed=2, bit_depth=8)[0].astype(np.float64) / 255
    image16 = make_phantom(64, seed=2, bit_depth=16)[0].astype(np.float64) / 65535
    assert np.abs(image8 - image16).max() <= 0.5 / 255 + 1e-6  # same picture, finer quantisation


def test_non_square_size():
    image, mask, info = make_phantom((48, 80), seed=5, positive=True)
    assert image.shape == mask.shape == (48, 80)
    assert mask.any() and info["positive"]


def test_geometry_is_resolution_independent():
    # Same seed, two sizes: the mask at 128 px, block-averaged to 64 px, matches the 64 px mask.
    small = make_phantom(64, seed=11, positive=True)[1]
    large = make_phantom(128, seed=11, positive=True)[1]
    down = large.reshape(64, 2, 64, 2).mean(axis=(1, 3)) >= 0.5
    intersection = (down & small).sum()
    assert intersection / (down | small).sum() > 0.7


def test_positive_flag_and_negatives_have_empty_masks():
    for seed in range(6):
        image, mask, info = make_phantom(64, seed=seed, positive=False)
        assert not mask.any() and info["positive"] is False
        assert info["kind"] == "none" and info["size_class"] == "none" and info["sides"] == ()
        assert info["area_fraction"] == 0.0 and info["regions"] == []
        _, mask, info = make_phantom(64, seed=seed, positive=True)
        assert mask.any() and info["positive"] is True
    drawn = {make_phantom(32, seed=seed)[2]["positive"] for seed in range(12)}
    assert drawn == {True, False}  # positive=None draws both


def test_positives_vary_in_kind_size_and_side():
    infos, masks = [], []
    for seed in range(40):
        _, mask, info = make_phantom(64, seed=seed, positive=True)
        infos.append(info)
        masks.append(mask)
    kinds = {info["kind"] for info in infos}
    assert {"apical", "lateral", "bilateral"} <= kinds
    assert {info["size_class"] for info in infos} == {"small", "moderate", "large"}
    assert {side for info in infos for side in info["sides"]} == {"right", "left"}
    by_class = {c: [i["area_fraction"] for i in infos if i["size_class"] == c] for c in ("small", "moderate", "large")}
    for fractions in by_class.values():
        assert all(0.0005 < f < 0.2 for f in fractions)
    assert np.median(by_class["small"]) < np.median(by_class["moderate"]) < np.median(by_class["large"])
    for info, mask in zip(infos, masks):
        columns = np.flatnonzero(mask.any(axis=0))
        if info["sides"] == ("right",):  # the patient's right is the image's left half
            assert columns.max() < 32
        elif info["sides"] == ("left",):
            assert columns.min() >= 32
        else:
            assert columns.min() < 32 <= columns.max()
            assert ndimage.label(mask, structure=np.ones((3, 3)))[1] == 2  # two separate regions


def test_pneumothorax_has_less_texture_than_normal_lung():
    # The band has no vessels or parenchyma: its high-pass variance is lower than the normal lung's.
    ratios = []
    for image, mask, info, lung in _positives(12, 128):
        detail = image.astype(np.float32) - ndimage.gaussian_filter(image.astype(np.float32), 1.0)
        core = ndimage.binary_erosion(mask, iterations=2)
        if core.sum() < 20:
            continue
        ratios.append(detail[core].std() / detail[ndimage.binary_erosion(lung, iterations=3)].std())
    assert len(ratios) >= 5
    assert np.median(ratios) < 0.9


def test_pneumothorax_brightness_overlaps_normal_lung_across_images():
    # Exposure varies: some images' pneumothorax is brighter than other images' normal lung, so one
    # global brightness threshold cannot separate them.
    ptx_means, lung_means = [], []
    for image, mask, info, lung in _positives(16, 64):
        ptx_means.append(image[mask].mean())
        lung_means.append(image[lung].mean())
    assert max(ptx_means) > min(lung_means)
    assert np.mean(np.array(lung_means) > np.array(ptx_means)) >= 0.5  # but it is slightly darker within an image


def test_pleural_line_is_brighter_than_the_air_band_beside_it():
    contrasts = []
    for image, mask, info, lung in _positives(12, 128):
        if info["size_class"] == "small":
            continue
        line = ndimage.binary_dilation(mask) & ~mask & lung
        band = mask & ~ndimage.binary_erosion(mask, iterations=2)
        contrasts.append(image[line].mean() - image[band].mean())
    assert len(contrasts) >= 4
    assert np.median(contrasts) > 0


# --- generate_phantoms --------------------------------------------------------------------------------
def test_generate_is_balanced_seeded_and_named():
    samples = list(generate_phantoms(10, size=32, seed=3))
    assert [s[0] for s in samples] == [f"phantom_{i:05d}" for i in range(10)]
    assert sample_id(42) == "phantom_00042"
    labels = [s[3]["positive"] for s in samples]
    assert sum(labels) == 5
    assert labels != sorted(labels, reverse=True)  # shuffled, not positives first
    for (_, image, mask, info) in samples:
        assert mask.any() == info["positive"]
    again = list(generate_phantoms(10, size=32, seed=3))
    for a, b in zip(samples, again):
        np.testing.assert_array_equal(a[1], b[1])
    other = [s[3]["positive"] for s in generate_phantoms(10, size=32, seed=4)]
    assert sum(other) == 5
    assert sum(s[3]["positive"] for s in generate_phantoms(7, size=32, seed=0)) in (3, 4)


def test_generate_passes_bit_depth():
    (_, image, _, _), = generate_phantoms(1, size=32, bit_depth=16)
    assert image.dtype == np.uint16


# --- writers ------------------------------------------------------------------------------------------
def _reference(n, size, seed):
    return {sid: (image, mask, info) for sid, image, mask, info in generate_phantoms(n, size=size, seed=seed)}


def test_write_png_layout(tmp_path):
    summary = write_phantom_dataset(tmp_path / "ds", 6, size=48, format="png", seed=1, progress=False)
    root = tmp_path / "ds"
    reference = _reference(6, 48, 1)
    assert summary["written"] is True and summary["positives"] == 3 and summary["negatives"] == 3
    assert summary["manifest"] is None and sum(summary["kinds"].values()) == 6
    assert sorted(os.listdir(root)) == ["images", "masks", "phantoms.json"]
    for sid, (image, mask, info) in reference.items():
        np.testing.assert_array_equal(np.asarray(Image.open(root / "images" / f"{sid}.png")), image)
        stored = np.asarray(Image.open(root / "masks" / f"{sid}.png"))
        assert stored.dtype == np.uint8 and set(np.unique(stored)) <= {0, 255}
        np.testing.assert_array_equal(stored == 255, mask)
    settings = json.loads((root / "phantoms.json").read_text())
    assert {k: settings[k] for k in ("n", "size", "seed", "format", "bit_depth")} == {
        "n": 6, "size": [48, 48], "seed": 1, "format": "png", "bit_depth": 8
    }
    assert "version" in settings


def test_write_png_16_bit(tmp_path):
    write_phantom_dataset(tmp_path, 2, size=40, seed=2, bit_depth=16, progress=False)
    (sid, image, _, _), _ = generate_phantoms(2, size=40, seed=2, bit_depth=16)
    stored = np.asarray(Image.open(tmp_path / "images" / f"{sid}.png"))
    np.testing.assert_array_equal(stored.astype(np.uint16), image)


def test_write_csv_layout(tmp_path):
    summary = write_phantom_dataset(tmp_path, 6, size=48, format="csv", seed=1, progress=False)
    reference = _reference(6, 48, 1)
    lines = (tmp_path / "manifest.csv").read_text().splitlines()
    assert summary["manifest"] == str(tmp_path / "manifest.csv")
    assert lines[0] == "image,mask,label"
    assert len(lines) == 7
    for line in lines[1:]:
        image_rel, mask_rel, label = line.split(",")
        sid = os.path.splitext(os.path.basename(image_rel))[0]
        assert int(label) == int(reference[sid][2]["positive"])
        assert (tmp_path / image_rel).is_file()
        if label == "1":
            np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / mask_rel)) == 255, reference[sid][1])
        else:
            assert mask_rel == "" and not (tmp_path / "masks" / f"{sid}.png").exists()


def test_write_siim_layout_round_trip(tmp_path):
    from ptx_keras.data.dicom import read_dicom
    from ptx_keras.data.rle import rle_decode

    n, size = 24, 64
    summary = write_phantom_dataset(tmp_path, n, size=size, format="siim", seed=0, progress=False)
    reference = _reference(n, size, 0)
    assert summary["kinds"].get("bilateral", 0) >= 1  # the split-row case below is exercised
    lines = (tmp_path / "train-rle.csv").read_text().splitlines()
    assert lines[0] == "ImageId, EncodedPixels"
    rows = {}
    for line in lines[1:]:
        image_id, rle = line.split(",")
        assert rle.startswith(" ")  # SIIM-ACR style
        rows.setdefault(image_id, []).append(rle.strip())
    assert len(rows) == n
    dicoms = {}
    for folder, _, files in os.walk(tmp_path / "dicom-images-train"):
        for name in files:
            dicoms[os.path.splitext(name)[0]] = os.path.join(folder, name)
            # <study-uid>/<series-uid>/<ImageId>.dcm
            assert os.path.relpath(folder, tmp_path / "dicom-images-train").count(os.sep) == 1
    assert set(dicoms) == set(rows)
    split_rows = 0
    for image_id, rles in rows.items():
        pixels, header = read_dicom(dicoms[image_id])
        image, mask, info = reference[header["patient_id"]]
        assert header["photometric"] == "MONOCHROME2"
        assert header["transfer_syntax"] == "1.2.840.10008.1.2.4.50"  # JPEG Baseline
        assert header["spacing"] == pytest.approx((0.14 * 1024 / size,) * 2)
        assert np.abs(pixels.astype(int) - image.astype(int)).mean() < 4  # lossy, but the same picture
        if rles == ["-1"]:
            assert not info["positive"]
            continue
        union = np.zeros((size, size), bool)
        for rle in rles:
            union |= rle_decode(rle, size, size)
        np.testing.assert_array_equal(union, mask)
        split_rows += len(rles) > 1
        assert len(rles) == ndimage.label(mask, structure=np.ones((3, 3)))[1]
    assert split_rows >= 1


def test_written_layouts_are_read_by_the_readers(tmp_path):
    from ptx_keras.data.readers import discover_source, load_sample

    reference = _reference(6, 48, 1)
    for format in ("png", "csv", "siim"):
        summary = write_phantom_dataset(tmp_path / format, 6, size=48, format=format, seed=1, progress=False)
        source = summary["manifest"] or summary["path"]
        _, records = discover_source(source)
        assert len(records) == 6
        labels = sorted(load_sample(r).label for r in records)
        assert labels == [0, 0, 0, 1, 1, 1]
        if format != "siim":  # siim ids are DICOM UIDs
            for record in records:
                np.testing.assert_array_equal(load_sample(record).mask, reference[record.sample_id][1])


def test_second_write_keeps_the_files(tmp_path):
    first = write_phantom_dataset(tmp_path, 4, size=40, format="csv", seed=5, progress=False)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    second = write_phantom_dataset(tmp_path, 4, size=40, format="csv", seed=5, progress=False)
    assert second["written"] is False and first["written"] is True
    assert {k: v for k, v in first.items() if k != "written"} == {k: v for k, v in second.items() if k != "written"}
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == files
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes


def test_write_refuses_a_folder_with_other_settings(tmp_path):
    write_phantom_dataset(tmp_path, 4, size=40, seed=5, progress=False)
    with pytest.raises(DataError, match="seed=5 not 6"):
        write_phantom_dataset(tmp_path, 4, size=40, seed=6, progress=False)


# --- CLI ----------------------------------------------------------------------------------------------
def test_cli_writes_and_reports(tmp_path, capsys):
    assert phantoms_main([str(tmp_path), "--n", "4", "--size", "40", "--format", "csv", "--quiet"]) == 0
    assert "4 phantoms (2 with pneumothorax)" in capsys.readouterr().out
    assert (tmp_path / "manifest.csv").is_file()
    assert phantoms_main([str(tmp_path / "b"), "--n", "2", "--size", "32", "48", "--quiet"]) == 0
    assert np.asarray(Image.open(next((tmp_path / "b" / "images").iterdir()))).shape == (32, 48)


def test_cli_bad_value_prints_one_line(tmp_path, capsys):
    assert phantoms_main([str(tmp_path), "--size", "16", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "size=16" in err and "\n" not in err


# --- invalid arguments --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 16}, "size=16"),
        ({"size": (64, 31)}, r"size=\(64, 31\)"),
        ({"size": 64.0}, "size=64.0"),
        ({"size": (64, 64, 3)}, r"size=\(64, 64, 3\)"),
        ({"bit_depth": 12}, "bit_depth=12"),
        ({"positive": 1}, "positive=1"),
        ({"seed": 1, "rng": np.random.default_rng(1)}, "either rng or seed"),
        ({"rng": 3}, "rng=3"),
    ],
)
def test_make_phantom_rejects_bad_arguments(kwargs, match):
    kwargs.setdefault("size", 64)
    with pytest.raises(ValueError, match=match):
        make_phantom(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "n=0"),
        ({"n": 2.5}, "n=2.5"),
        ({"size": 8}, "size=8"),
        ({"format": "jpeg"}, "format='jpeg'"),
        ({"bit_depth": 32}, "bit_depth=32"),
        ({"seed": -1}, "seed=-1"),
    ],
)
def test_write_rejects_bad_arguments(tmp_path, kwargs, match):
    args = dict(n=2, size=32, format="png", seed=0, bit_depth=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        write_phantom_dataset(tmp_path, args.pop("n"), progress=False, **args)
    assert not (tmp_path / "phantoms.json").exists()


@pytest.mark.parametrize(
    "kwargs, match", [({"n": 0}, "n=0"), ({"positive": True}, "positive"), ({"colour": 1}, "colour=1")]
)
def test_generate_rejects_bad_arguments(kwargs, match):
    args = dict(n=2, size=32)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        generate_phantoms(**args)


def test_conspicuity_one_is_the_default_and_two_widens_and_darkens_the_band():
    from ptx_keras.data.phantoms import make_phantom as mk

    base = mk(128, seed=7, positive=True)
    same = mk(128, seed=7, positive=True, conspicuity=1.0)
    easy = mk(128, seed=7, positive=True, conspicuity=2.0)
    np.testing.assert_array_equal(base[0], same[0])
    # Same anatomy and draws: the band is 1.75x as deep, so the mask grows; the air band is darker.
    assert easy[2]["regions"][0]["depth"] == pytest.approx(1.75 * base[2]["regions"][0]["depth"])
    assert easy[1].sum() > base[1].sum()
    both = base[1] & easy[1]
    assert easy[0][both].mean() < base[0][both].mean()


@pytest.mark.parametrize("bad", [0, -1.0, "2", True])
def test_conspicuity_must_be_positive(bad):
    from ptx_keras.data.phantoms import make_phantom as mk

    with pytest.raises(ValueError, match="conspicuity"):
        mk(64, seed=0, conspicuity=bad)


def test_conspicuity_is_recorded_and_distinguishes_sets(tmp_path):
    from ptx_keras.data.phantoms import write_phantom_dataset as write

    out = write(tmp_path / "c2", 4, size=64, conspicuity=2.0, progress=False)
    assert out["written"]
    with pytest.raises(Exception, match="conspicuity"):
        write(tmp_path / "c2", 4, size=64, conspicuity=1.0, progress=False)
