"""Synthetic phantoms: determinism, shapes, balance, variety, hardness properties, writers, CLI, bad input.

The classic style is pinned by checksums of its output; the randomised styles (`varied`, `heldout`) by their
properties: seeded, any size, masks equal to the drawn pneumothorax, mimics outside the mask, the two
styles differing in distribution, and SIIM exports that read back."""

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
    for _, image, mask, info in samples:
        assert mask.any() == info["positive"]
    again = list(generate_phantoms(10, size=32, seed=3))
    for a, b in zip(samples, again):
        np.testing.assert_array_equal(a[1], b[1])
    other = [s[3]["positive"] for s in generate_phantoms(10, size=32, seed=4)]
    assert sum(other) == 5
    assert sum(s[3]["positive"] for s in generate_phantoms(7, size=32, seed=0)) in (3, 4)


def test_generate_passes_bit_depth():
    ((_, image, _, _),) = generate_phantoms(1, size=32, bit_depth=16)
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
        "n": 6,
        "size": [48, 48],
        "seed": 1,
        "format": "png",
        "bit_depth": 8,
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
    assert "4 classic phantoms (2 with pneumothorax)" in capsys.readouterr().out
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


# --- classic: unchanged bit for bit ---------------------------------------------------------------------
# sha256 (first 16 hex digits) of image and mask bytes, captured from the generator before the randomised
# styles were added (commit 9b9e82e). Any change here is a change of the classic phantoms, which existing
# results depend on: bump PHANTOM_VERSION and say why instead of updating these.
# NumPy's AVX-512 kernels of the transcendental functions round differently from its AVX2 ones: the 16-bit
# phantom then differs by 1 of 65535 at 2 of its 3,840 pixels (checked by running it with and without
# NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL"). Where that is so, the checksum on AVX-512 machines is listed
# as well, so the test stays exact on both.
_AVX512_IMAGE_CHECKSUMS = {"48x80_16bit": "d86d0b67c501b43a"}
_CLASSIC_CHECKSUMS = {
    "64_seed3_pos": (dict(size=64, seed=3, positive=True), "c3ce0bcb6d7939f5", "74225ce9e022a575"),
    "64_seed5_neg": (dict(size=64, seed=5, positive=False), "86d43aa5a89fbb45", "ad7facb2586fc6e9"),
    "128_seed7_c2": (dict(size=128, seed=7, positive=True, conspicuity=2.0), "b0e18ee03f13db5a", "67b86807dc4c0f98"),
    "48x80_16bit": (dict(size=(48, 80), seed=11, positive=True, bit_depth=16), "be4b2d4930e4f0bc", "2e1488e68984b6ab"),
    "32_drawn": (dict(size=32, seed=0), "b998c74546310ab7", "5f70bf18a0860070"),
}
_CLASSIC_SET_CHECKSUMS = [  # generate_phantoms(4, size=40, seed=2)
    ("6628d3a7a492a899", "1d2214222b1482d0"),
    ("9e54720db143d7ed", "e61f41d57db208c5"),
    ("e11a805d577c0e3e", "3cd79e6f5e5d95ca"),
    ("5138c39225624416", "e61f41d57db208c5"),
]


def _sha(array):
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(_CLASSIC_CHECKSUMS))
def test_classic_is_unchanged_bit_for_bit(name):
    kwargs, image_sum, mask_sum = _CLASSIC_CHECKSUMS[name]
    image, mask, info = make_phantom(**kwargs)
    assert _sha(image) in {image_sum, _AVX512_IMAGE_CHECKSUMS.get(name, image_sum)}
    assert _sha(mask) == mask_sum
    assert make_phantom(**kwargs, style="classic")[2] == info and info["style"] == "classic"


def test_classic_sets_are_unchanged_bit_for_bit():
    got = [(_sha(image), _sha(mask)) for _, image, mask, _ in generate_phantoms(4, size=40, seed=2)]
    assert got == _CLASSIC_SET_CHECKSUMS


# --- randomised styles ------------------------------------------------------------------------------------
STYLED = ("varied", "heldout")


@pytest.mark.parametrize("style", STYLED)
def test_styles_are_seeded(style):
    a = make_phantom(96, seed=4, positive=True, style=style)
    b = make_phantom(96, seed=4, positive=True, style=style)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2] and a[2]["style"] == style
    c = make_phantom(96, seed=5, positive=True, style=style)
    assert not np.array_equal(a[0], c[0])
    first = [image for _, image, _, _ in generate_phantoms(3, size=48, seed=1, style=style)]
    again = [image for _, image, _, _ in generate_phantoms(3, size=48, seed=1, style=style)]
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)


def test_varied_and_heldout_of_one_seed_share_no_stream():
    varied = make_phantom(64, seed=9, positive=True, style="varied")
    heldout = make_phantom(64, seed=9, positive=True, style="heldout")
    classic = make_phantom(64, seed=9, positive=True)
    assert not np.array_equal(varied[0], heldout[0])
    assert varied[2]["regions"][0]["depth"] != heldout[2]["regions"][0]["depth"]
    assert not np.array_equal(varied[1], classic[1])


@pytest.mark.parametrize("style", ("classic",) + STYLED)
@pytest.mark.parametrize("size", [32, 128, (300, 260)])
def test_every_style_renders_at_any_size(style, size):
    hw = (size, size) if isinstance(size, int) else size
    image, mask, info = make_phantom(size, seed=2, positive=True, style=style)
    assert image.shape == mask.shape == hw and image.dtype == np.uint8 and mask.dtype == bool
    assert mask.any() and info["positive"] and 0 < info["area_fraction"] < 0.3
    assert image.std() > 10  # a picture, not a flat field
    negative, empty, info = make_phantom(size, seed=2, positive=False, style=style, bit_depth=16)
    assert negative.dtype == np.uint16 and not empty.any() and info["kind"] == "none"


@pytest.mark.parametrize("style", STYLED)
def test_styled_mask_is_exactly_the_drawn_pneumothorax(style):
    from ptx_keras.data.phantoms import render_phantom
    from ptx_keras.data.phantoms.generate import sample_stream

    for index in range(8):
        image, mask, info, layers = render_phantom(
            96, sample_stream(0, index, style), positive=True, seed=None, bits=8, style=style
        )
        assert mask.dtype == bool and mask.any()
        np.testing.assert_array_equal(mask, layers["ptx_alpha"] >= 0.5)
        # the band is part of the lung, and the lung outside it is the normal (textured) lung
        assert not (mask & layers["normal_lung"]).any()
        assert layers["ptx_alpha"][mask].min() >= 0.5 and layers["ptx_alpha"][~mask].max() < 0.5
        assert len(info["regions"]) == len(info["sides"]) >= 1


@pytest.mark.parametrize("style", STYLED)
def test_skin_folds_and_other_mimics_never_enter_the_mask(style):
    from ptx_keras.data.phantoms import render_phantom
    from ptx_keras.data.phantoms.generate import sample_stream

    folds = 0
    for index in range(40):
        positive = index % 2 == 0
        _, mask, info, layers = render_phantom(
            64, sample_stream(3, index, style), positive=positive, seed=None, bits=8, style=style
        )
        if "skin_fold" in info["mimics"]:
            folds += 1
            assert layers["fold"].max() > 0
        assert not (layers["fold"][mask] > 0).any()
        assert not layers["mimic"][mask].any()
        assert mask.any() == positive  # a fold on a negative adds nothing to its (empty) mask
    assert folds >= 8


@pytest.mark.parametrize("style", STYLED)
def test_styled_sets_are_balanced_and_varied(style):
    infos = [info for _, _, _, info in generate_phantoms(40, size=48, seed=0, style=style)]
    assert sum(info["positive"] for info in infos) == 20
    positives = [info for info in infos if info["positive"]]
    assert {"apical", "apicolateral"} <= {info["kind"] for info in positives}
    assert len({info["size_class"] for info in positives}) == 3
    assert {"skin_fold", "scapula"} <= {name for info in infos for name in info["mimics"]}
    assert len({name for info in infos for name in info["devices"]}) >= 5
    drawn = [make_phantom(32, seed=seed, style=style)[2]["positive"] for seed in range(40)]
    assert 0.3 <= np.mean(drawn) <= 0.7  # positive=None draws with probability 0.5


def test_small_pneumothoraces_reach_thin_slivers():
    slivers = []
    for seed in range(80):  # the draws do not depend on the size: look at them at 32 px
        info = make_phantom(32, seed=seed, positive=True, style="varied")[2]
        if len(info["regions"]) == 1 and info["regions"][0]["depth"] * 256 < 3.0:
            slivers.append(seed)
    assert len(slivers) >= 3
    _, mask, info = make_phantom(256, seed=slivers[0], positive=True, style="varied")
    widths = mask.sum(axis=1)[mask.any(axis=1)]
    assert mask.any() and np.median(widths) <= 6  # a sliver a few pixels wide at 256 px


def test_heldout_differs_from_varied_in_distribution():
    stats = {}
    for style in STYLED:
        samples = list(generate_phantoms(20, size=128, seed=0, style=style))
        processing = [info["processing"] for _, _, _, info in samples]
        high_pass = [np.abs(i / 255.0 - ndimage.gaussian_filter(i / 255.0, 1.0)).mean() for _, i, _, _ in samples]
        stats[style] = {
            "radius": [p["unsharp_radius"] for p in processing if p["unsharp_radius"] > 0],
            "noise": {p["noise"] for p in processing},
            "devices": {d for _, _, _, info in samples for d in info["devices"]} - {"marker", "label"},
            "high_pass": np.median(high_pass),
        }
    varied, heldout = stats["varied"], stats["heldout"]
    assert max(varied["radius"]) < min(heldout["radius"])  # large-kernel processing only in heldout
    assert not varied["noise"] & heldout["noise"]
    assert not varied["devices"] & heldout["devices"]
    assert heldout["high_pass"] > 1.2 * varied["high_pass"]  # grainier, multi-frequency processed


def test_style_table_is_in_the_docs():
    from ptx_keras.data.phantoms import style_table

    docs = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "data.md")
    with open(docs, encoding="utf-8") as f:
        assert style_table() in f.read()


# --- naming and settings ----------------------------------------------------------------------------------
def test_dataset_names_tell_settings_apart():
    from ptx_keras.data.phantoms import phantom_dataset_name

    assert phantom_dataset_name(400, 256, 0) == "phantoms-n400-256px-seed0"  # the name caches always had
    assert phantom_dataset_name(400, 256, 0, conspicuity=2.0) == "phantoms-n400-256px-seed0-c2"
    names = {
        phantom_dataset_name(400, 256, 0, style=style, conspicuity=c, format=f, bit_depth=b)
        for style in ("classic",) + STYLED
        for c in (1.0, 2.0)
        for f in ("png", "siim")
        for b in (8, 16)
    }
    assert len(names) == 24
    varied = phantom_dataset_name(10, (64, 80), 3, style="varied")
    assert varied.startswith("phantoms-varied-v1-") and varied.endswith("-n10-64x80px-seed3")
    assert phantom_dataset_name(10, None, 0, style="heldout", format="siim").endswith("-1024px-seed0-siim-mixedbits")
    with pytest.raises(ValueError, match="Did you mean 'heldout'"):
        phantom_dataset_name(10, 64, 0, style="held-out")


def test_phantoms_json_records_the_style_and_refuses_another(tmp_path):
    summary = write_phantom_dataset(tmp_path, 4, size=40, style="varied", progress=False)
    recorded = json.loads((tmp_path / "phantoms.json").read_text())
    assert recorded["style"] == summary["style"] == "varied"
    assert recorded["spec"] and recorded["version"] == 1 and recorded["conspicuity"] == 1.0
    assert "ptx_depth_small" in recorded["factors"]
    assert write_phantom_dataset(tmp_path, 4, size=40, style="varied", progress=False)["written"] is False
    with pytest.raises(DataError, match="style='varied' not 'heldout'"):
        write_phantom_dataset(tmp_path, 4, size=40, style="heldout", progress=False)


def test_a_classic_set_from_before_styles_is_still_recognised(tmp_path):
    write_phantom_dataset(tmp_path, 2, size=32, progress=False)
    recorded = json.loads((tmp_path / "phantoms.json").read_text())
    for key in ("style", "spec", "conspicuity"):  # what older phantoms.json files did not hold
        recorded.pop(key)
    (tmp_path / "phantoms.json").write_text(json.dumps(recorded))
    assert write_phantom_dataset(tmp_path, 2, size=32, progress=False)["written"] is False


def test_workers_write_the_same_set(tmp_path):
    one = write_phantom_dataset(tmp_path / "one", 4, size=48, format="csv", style="varied", workers=1, progress=False)
    two = write_phantom_dataset(tmp_path / "two", 4, size=48, format="csv", style="varied", workers=2, progress=False)
    assert {k: v for k, v in one.items() if k not in ("path", "manifest")} == {
        k: v for k, v in two.items() if k not in ("path", "manifest")
    }
    for name in sorted(os.listdir(tmp_path / "one" / "images")):
        np.testing.assert_array_equal(
            np.asarray(Image.open(tmp_path / "one" / "images" / name)),
            np.asarray(Image.open(tmp_path / "two" / "images" / name)),
        )
    assert (tmp_path / "one" / "manifest.csv").read_text() == (tmp_path / "two" / "manifest.csv").read_text()


# --- SIIM exports like a real archive --------------------------------------------------------------------
def test_heldout_siim_export_mixes_formats_and_reads_back(tmp_path):
    from ptx_keras.data.dicom import read_dicom
    from ptx_keras.data.phantoms import render_phantom
    from ptx_keras.data.phantoms.generate import balanced_labels, sample_stream
    from ptx_keras.data.readers import discover_source, load_sample

    n, size = 16, 64
    summary = write_phantom_dataset(tmp_path, n, size=size, format="siim", style="heldout", seed=1, progress=False)
    assert summary["bit_depth"] is None
    _, records = discover_source(summary["manifest"])
    assert len(records) == n
    labels = balanced_labels(n, 1)
    seen = set()
    for record in records:
        sample = load_sample(record)
        _, header = read_dicom(record.image_path)
        index = int(header["patient_id"][-5:])  # PatientID is the phantom id
        bits = header["bits_stored"]
        stream = sample_stream(1, index, "heldout")
        image, mask, info, _ = render_phantom(
            size, stream, positive=bool(labels[index]), seed=None, bits=bits, style="heldout"
        )
        seen.add((header["photometric"], bits, header["transfer_syntax"]))
        assert sample.bits_stored == bits and sample.image.dtype == (np.uint8 if bits == 8 else np.uint16)
        difference = np.abs(sample.image.astype(int) - image.astype(int))
        if header["transfer_syntax"] == "1.2.840.10008.1.2.4.50":  # JPEG Baseline: lossy, 8-bit
            assert difference.mean() < 4
        else:  # lossless: exact, MONOCHROME1 inverted back by the reader
            assert difference.max() == 0
            # and the same picture as the 16-bit rendering, within the quantisation of its bit depth
            fine = render_phantom(
                size,
                sample_stream(1, index, "heldout"),
                positive=bool(labels[index]),
                seed=None,
                bits=16,
                style="heldout",
            )[0]
            top = (1 << bits) - 1
            assert np.abs(sample.image / top - fine / 65535.0).max() <= 0.5 / top + 0.5 / 65535 + 1e-9
        np.testing.assert_array_equal(sample.mask, mask)
    assert {p for p, _, _ in seen} == {"MONOCHROME1", "MONOCHROME2"}
    assert {b for _, b, _ in seen} == {8, 12, 16}
    assert {t for _, _, t in seen} == {  # every transfer syntax the package writes
        "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.5",  # RLE Lossless
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    }
    assert sum(summary["exports"].values()) == n


def test_render_phantom_quantises_to_12_bits_and_refuses_other_depths():
    from ptx_keras.data.phantoms import render_phantom

    for style in ("classic", "varied"):
        fine = render_phantom(48, None, positive=True, seed=1, bits=16, style=style)[0]
        coarse = render_phantom(48, None, positive=True, seed=1, bits=12, style=style)[0]
        assert coarse.dtype == np.uint16 and coarse.max() <= 4095
        assert np.abs(coarse / 4095 - fine / 65535).max() <= 0.5 / 4095 + 0.5 / 65535 + 1e-9
    with pytest.raises(ValueError, match="bits=10"):
        render_phantom(48, None, positive=True, seed=1, bits=10)


# --- invalid styles ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, hint", [("varid", "Did you mean 'varied'"), ("HELDOUT", ""), (None, ""), (1, "")])
def test_unknown_style_is_refused_everywhere(tmp_path, bad, hint):
    for call in (
        lambda: make_phantom(32, seed=0, style=bad),
        lambda: generate_phantoms(2, size=32, style=bad),
        lambda: write_phantom_dataset(tmp_path, 2, size=32, style=bad, progress=False),
    ):
        with pytest.raises(ValueError, match="style must be one of") as error:
            call()
        assert hint in str(error.value)
    assert not (tmp_path / "phantoms.json").exists()


def test_config_takes_a_phantom_style(tmp_path):
    from ptx_keras.config import load_config
    from ptx_keras.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text("data: {phantoms: {style: varied}}\n")
    assert load_config(str(path)).data.phantoms.style == "varied"
    path.write_text("data: {phantoms: {style: vary}}\n")
    with pytest.raises(ConfigError, match="data.phantoms.style"):
        load_config(str(path))


def test_cli_writes_a_styled_set_and_refuses_a_bad_style(tmp_path, capsys):
    assert phantoms_main([str(tmp_path / "v"), "--n", "2", "--size", "40", "--style", "varied", "--quiet"]) == 0
    assert "2 varied phantoms" in capsys.readouterr().out
    assert phantoms_main([str(tmp_path / "x"), "--n", "2", "--style", "varid", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Did you mean 'varied'" in err and "\n" not in err
