import csv
import os

import numpy as np
import pytest
from PIL import Image

from ptx_keras.data.pipeline import count_examples, make_dataset, make_dataset_from_source
from ptx_keras.data.prepare import prepare_dataset
from ptx_keras.data.prepared import MANIFEST_CSV, load_prepared_info
from ptx_keras.data.weight_maps import spatial_weight_map
from ptx_keras.errors import DataError
from ptx_keras.targets import MASK_CHANNEL, WEIGHT_CHANNEL

SIZE = 32


def _asymmetric(i):
    """A left-right asymmetric image and mask at the prepared size (so preparation does not resample)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    image = ((cols * 7 + rows * 3 + i * 11) % 256).astype(np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    if i % 2:
        mask[4 + i % 5 : 20, 2 : 9 + i % 4] = 1  # on the left side only
    return image, mask


def _write_source(root, n, dtype=np.uint8):
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "masks"))
    expected = {}
    for i in range(n):
        image, mask = _asymmetric(i)
        if dtype == np.uint16:
            image = image.astype(np.uint16) * 251 + i
        Image.fromarray(image).save(os.path.join(root, "images", f"a{i:02d}.png"))
        Image.fromarray(mask * 255).save(os.path.join(root, "masks", f"a{i:02d}.png"))
        full = 255.0 if dtype == np.uint8 else 65535.0
        expected[f"a{i:02d}"] = (image.astype(np.float32) / np.float32(full), mask.astype(np.float32))
    return expected


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    expected = _write_source(str(root / "src"), 20)
    out = str(root / "out")
    prepare_dataset(str(root / "src"), out, image_size=SIZE, workers=1, shard_size=4, progress=False)
    for key, (image, mask) in expected.items():
        weight = spatial_weight_map(mask)  # stored exactly (float32, the default)
        expected[key] = (image, mask, weight)
    return out, expected, str(root / "src")


def _by_id(ds):
    out = {}
    for images, y_true, ids in ds:
        for image, y, sample_id in zip(images.numpy(), y_true.numpy(), ids.numpy()):
            out.setdefault(sample_id.decode(), []).append((image, y))
    return out


def test_batches_shapes_dtypes_and_values(prepared):
    out, expected, _ = prepared
    ds = make_dataset(out, "train", 5, training=False, with_ids=True)
    assert ds.element_spec[0].shape.as_list() == [None, SIZE, SIZE, 3]
    assert ds.element_spec[1].shape.as_list() == [None, SIZE, SIZE, 2]
    shapes = []
    for images, y_true, _ in ds:
        assert images.dtype == "float32" and y_true.dtype == "float32"
        shapes.append(images.shape[0])
    # 10 samples per label -> 6.4, 1.6, 2.0 -> 6 / 2 / 2 per label, so 12 in train.
    assert count_examples(out, "train") == 12 == sum(shapes) and shapes == [5, 5, 2]
    seen = _by_id(ds)
    assert len(seen) == 12
    for sample_id, [(image, y)] in seen.items():
        exp_image, exp_mask, exp_weight = expected[sample_id]
        for c in range(3):
            np.testing.assert_array_equal(image[..., c], exp_image)
        np.testing.assert_array_equal(y[..., MASK_CHANNEL], exp_mask)
        np.testing.assert_array_equal(y[..., WEIGHT_CHANNEL], exp_weight)


def test_one_channel_and_sixteen_bit(tmp_path):
    expected = _write_source(str(tmp_path / "src"), 6, dtype=np.uint16)
    out = str(tmp_path / "out")
    prepare_dataset(str(tmp_path / "src"), out, image_size=SIZE, bit_depth=16, workers=1, progress=False)
    ds = make_dataset(out, "train", 8, training=False, channels=1, with_ids=True)
    seen = _by_id(ds)
    assert seen
    for sample_id, [(image, _)] in seen.items():
        assert image.shape == (SIZE, SIZE, 1)
        np.testing.assert_array_equal(image[..., 0], expected[sample_id][0])  # value / 65535, exactly
        assert image.max() > 0.9  # the full 16-bit range, not 8 bits scaled down


def test_flip_keeps_image_mask_and_weight_aligned(prepared):
    out, expected, _ = prepared
    ds = make_dataset(out, "train", 4, training=True, with_ids=True, seed=1)
    flipped = kept = 0
    for _ in range(3):  # epochs
        for sample_id, items in _by_id(ds).items():
            exp_image, exp_mask, exp_weight = expected[sample_id]
            for image, y in items:
                is_flipped = not np.array_equal(image[..., 0], exp_image)
                expect = (exp_image, exp_mask, exp_weight)
                if is_flipped:
                    expect = tuple(np.fliplr(e) for e in expect)
                np.testing.assert_array_equal(image[..., 0], expect[0])
                np.testing.assert_array_equal(y[..., MASK_CHANNEL], expect[1])
                np.testing.assert_array_equal(y[..., WEIGHT_CHANNEL], expect[2])
                flipped += is_flipped
                kept += not is_flipped
    assert flipped > 0 and kept > 0


def test_training_shuffles_with_seed_and_evaluation_does_not(prepared):
    out, _, _ = prepared

    def order(ds):
        return [i.decode() for _, _, ids in ds for i in ids.numpy()]

    train = make_dataset(out, "train", 4, training=True, with_ids=True, seed=2)
    first, second = order(train), order(train)
    assert sorted(first) == sorted(second) and first != second  # a new order every epoch
    assert order(make_dataset(out, "train", 4, training=True, with_ids=True, seed=2)) == first
    evaluation = make_dataset(out, "train", 4, training=False, with_ids=True, cache=True)
    assert order(evaluation) == order(evaluation)


def test_no_flip_when_disabled(prepared):
    out, expected, _ = prepared
    ds = make_dataset(out, "train", 6, training=True, with_ids=True, flip=False)
    for sample_id, [(image, _)] in _by_id(ds).items():
        np.testing.assert_array_equal(image[..., 0], expected[sample_id][0])


def test_repeat_and_drop_remainder(prepared):
    out, _, _ = prepared
    ds = make_dataset(out, "val", 3, training=True, repeat=True, drop_remainder=True)
    assert ds.element_spec[0].shape.as_list() == [3, SIZE, SIZE, 3]
    batches = list(ds.take(5))  # 4 val examples, repeated
    assert len(batches) == 5 and all(b[0].shape[0] == 3 for b in batches)


def test_count_examples_matches_manifest(prepared):
    out, _, _ = prepared
    with open(os.path.join(out, MANIFEST_CSV), newline="") as f:
        rows = list(csv.DictReader(f))
    info = load_prepared_info(out)
    for split in ("train", "val", "test"):
        assert count_examples(out, split) == sum(r["split"] == split for r in rows) == info["counts"][split]["total"]


def test_bad_arguments(prepared, tmp_path):
    out, _, _ = prepared
    with pytest.raises(DataError, match="split='validation'"):
        make_dataset(out, "validation", 4, training=False)
    with pytest.raises(DataError, match="split='dev'"):
        count_examples(out, "dev")
    with pytest.raises(ValueError, match="batch_size=0"):
        make_dataset(out, "train", 0, training=False)
    with pytest.raises(ValueError, match="channels=2"):
        make_dataset(out, "train", 4, training=False, channels=2)
    with pytest.raises(DataError, match="not a prepared data set"):
        make_dataset(str(tmp_path), "train", 4, training=False)


def test_empty_split_and_missing_shard(tmp_path):
    _write_source(str(tmp_path / "src"), 4)
    out = str(tmp_path / "out")
    prepare_dataset(
        str(tmp_path / "src"), out, image_size=SIZE, workers=1, progress=False, split_fractions=(0.5, 0.5, 0.0)
    )
    with pytest.raises(DataError, match="'test'.*empty"):
        make_dataset(out, "test", 2, training=False)
    os.remove(os.path.join(out, load_prepared_info(out)["shards"]["val"][0]))
    with pytest.raises(DataError, match="missing"):
        make_dataset(out, "val", 2, training=False)


def test_on_the_fly_matches_prepared(tmp_path, prepared):
    _, _, src = prepared
    out = str(tmp_path / "out32")
    prepare_dataset(src, out, image_size=16, weight_dtype="float32", workers=1, progress=False)
    prepared_items = _by_id(make_dataset(out, "train", 8, training=False, with_ids=True, channels=1))
    live = make_dataset_from_source(src, 8, training=True, image_size=16, channels=1, with_ids=True, flip=False)
    live_items = _by_id(live)
    assert len(live_items) == 20
    for sample_id, [(image, y)] in prepared_items.items():
        [(live_image, live_y)] = live_items[sample_id]
        np.testing.assert_array_equal(live_image, image)
        np.testing.assert_array_equal(live_y, y)
    with pytest.raises(ValueError, match="channels=4"):
        make_dataset_from_source(src, 8, training=False, channels=4)


def test_pipelines_run_without_the_tf_data_autotuning_thread(tmp_path, prepared):
    """Its lost wake-up stalls the end of each epoch (ptx_keras.runtime); both pipelines turn it off."""
    out, _, src = prepared
    for training in (True, False):
        assert make_dataset(out, "train", 4, training=training).options().autotune.enabled is False
    live = make_dataset_from_source(src, 8, training=True, image_size=16, channels=1)
    assert live.options().autotune.enabled is False


# ---------------------------------------------------------------------------------------------------------
# Augmentation and oversampling (ptx_keras.data.augment)
# ---------------------------------------------------------------------------------------------------------
def _stream(ds, epochs=1):
    return [
        (images.numpy(), y.numpy(), [i.decode() for i in ids.numpy()]) for _ in range(epochs) for images, y, ids in ds
    ]


def test_evaluation_is_never_augmented(prepared):
    out, expected, _ = prepared
    ds = make_dataset(out, "train", 5, training=False, with_ids=True, augment="strong")
    seen = _by_id(ds)
    assert len(seen) == 12
    for sample_id, [(image, y)] in seen.items():
        np.testing.assert_array_equal(image[..., 0], expected[sample_id][0])
        np.testing.assert_array_equal(y[..., MASK_CHANNEL], expected[sample_id][1])
        np.testing.assert_array_equal(y[..., WEIGHT_CHANNEL], expected[sample_id][2])


def test_augmented_training_keeps_targets_consistent_and_changes_images(prepared):
    out, expected, _ = prepared
    ds = make_dataset(out, "train", 4, training=True, with_ids=True, augment="strong", seed=3)
    changed = 0
    for images, y, ids in _stream(ds):
        for image, target, sample_id in zip(images, y, ids):
            exp_image, exp_mask, exp_weight = expected[sample_id]
            mask, weight = target[..., MASK_CHANNEL], target[..., WEIGHT_CHANNEL]
            assert set(np.unique(mask)) <= {0.0, 1.0} and 0.0 <= image.min() and image.max() <= 1.0
            # Nearest-neighbour resampling: only stored weights, or the background weight brought in.
            background = exp_weight[exp_mask == 0].min()
            assert set(np.unique(weight)) <= set(np.unique(exp_weight)) | {background}
            changed += not np.array_equal(image[..., 0], exp_image)
    assert changed == 12


def test_augmentation_stream_is_seeded(prepared):
    out, _, _ = prepared

    def run(seed):
        return _stream(
            make_dataset(out, "train", 4, training=True, with_ids=True, augment="standard", seed=seed), epochs=2
        )

    first, again, other = run(5), run(5), run(6)
    for (a_img, a_y, a_ids), (b_img, b_y, b_ids) in zip(first, again):
        np.testing.assert_array_equal(a_img, b_img)
        np.testing.assert_array_equal(a_y, b_y)
        assert a_ids == b_ids
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    assert not np.array_equal(first[0][0], first[3][0])  # epoch 2 draws new parameters


def test_flip_switch_overrides_the_preset_and_bad_augment_is_refused(prepared):
    out, expected, _ = prepared
    ds = make_dataset(out, "train", 6, training=True, with_ids=True, augment="flip", flip=False)
    for sample_id, [(image, _)] in _by_id(ds).items():
        np.testing.assert_array_equal(image[..., 0], expected[sample_id][0])
    with pytest.raises(ValueError, match="augment: preset must be one of"):
        make_dataset(out, "train", 4, training=True, augment="heavy")
    with pytest.raises(ValueError, match=r"augment: rotation must be a number in \[0, 45\]"):
        make_dataset(out, "train", 4, training=True, augment={"preset": "standard", "rotation": 60})


def _positive_ids(expected):
    return {k for k, (_, mask, _) in expected.items() if mask.any()}


def test_positive_fraction_is_reached_within_binomial_tolerance(prepared):
    out, expected, _ = prepared
    positives = _positive_ids(expected)
    info = load_prepared_info(out)
    assert info["counts"]["train"]["positive"] == 6 == info["counts"]["train"]["negative"]  # natural mix 0.5
    for fraction in (0.8, 0.25):
        ds = make_dataset(
            out, "train", 8, training=True, with_ids=True, positive_fraction=fraction, repeat=True, seed=7
        )
        ids = [i for _, _, batch in _stream(ds.take(50)) for i in batch]  # 400 draws
        realised = np.mean([i in positives for i in ids])
        # Draws are independent Bernoulli(fraction): standard error sqrt(f (1 - f) / n) <= 0.025 at n = 400.
        # Four standard errors: a correct sampler fails with probability < 1e-4 for any seed.
        tolerance = 4 * np.sqrt(fraction * (1 - fraction) / len(ids))
        assert abs(realised - fraction) < tolerance, (fraction, realised)
        assert set(ids) == set(_by_id(make_dataset(out, "train", 12, training=False, with_ids=True)))


def test_positive_fraction_epoch_is_the_split_size_and_seeded(prepared):
    out, expected, _ = prepared

    def epochs(seed):
        ds = make_dataset(out, "train", 5, training=True, with_ids=True, positive_fraction=0.5, seed=seed)
        return [[i for _, _, batch in _stream(ds) for i in batch] for _ in range(3)]

    first = epochs(1)
    assert all(len(epoch) == 12 for epoch in first)  # an epoch is as many images as the split has
    assert first == epochs(1) and first != epochs(2)
    assert first[0] != first[1]  # each epoch draws anew
    ds = make_dataset(out, "train", 5, training=True, positive_fraction=0.5, cache=True)
    assert sum(int(b[0].shape[0]) for b in ds) == 12 == sum(int(b[0].shape[0]) for b in ds)


def test_positive_fraction_bad_values(prepared, tmp_path):
    out, _, _ = prepared
    for bad in (0, 1.0, 1.5, True, "half"):
        with pytest.raises(ValueError, match="positive_fraction must be null or a number in"):
            make_dataset(out, "train", 4, training=True, positive_fraction=bad)
    with pytest.raises(ValueError, match="training streams only"):
        make_dataset(out, "val", 4, training=False, positive_fraction=0.5)
    _write_source(str(tmp_path / "src"), 4)
    for name in os.listdir(tmp_path / "src" / "masks"):  # all negative
        Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(str(tmp_path / "src" / "masks" / name))
    neg = str(tmp_path / "neg")
    prepare_dataset(
        str(tmp_path / "src"), neg, image_size=SIZE, workers=1, progress=False, split_fractions=(1.0, 0.0, 0.0)
    )
    with pytest.raises(DataError, match="needs positive and negative examples; the split has 0 positive"):
        make_dataset(neg, "train", 2, training=True, positive_fraction=0.5)


# --- Exact weight maps at every size (eq. 6 above float16's 65,504) ------------------------------------------


def _small_pneumothorax_source(root, sizes_and_areas):
    """PNG pairs `s<size>_<area>`: a smooth image and an `area`-pixel pneumothorax (a thin irregular blob)."""
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "masks"))
    masks = {}
    for size, area in sizes_and_areas:
        rows, cols = np.mgrid[0:size, 0:size]
        image = ((rows + cols) // 8 % 256).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        top, left = size // 5, size // 3
        flat = [(top + k // 4, left + k % 4 + (k // 4) % 2) for k in range(area)]  # 4 wide, ragged
        for r, c in flat:
            mask[r, c] = 1
        assert mask.sum() == area
        name = f"s{size}_{area:02d}"
        Image.fromarray(image).save(os.path.join(root, "images", name + ".png"))
        Image.fromarray(mask * 255).save(os.path.join(root, "masks", name + ".png"))
        masks[name] = mask
    return masks


def _weights_by_id(out):
    ds = make_dataset(out, "train", 2, training=False, with_ids=True, channels=1)
    return {k: v[0][1][..., WEIGHT_CHANNEL] for k, v in _by_id(ds).items()}


@pytest.mark.parametrize("size, areas", [(512, (5, 9, 15)), (1024, (5, 13))])
def test_weight_maps_are_exact_at_512_and_1024(tmp_path, size, areas):
    """make_dataset yields spatial_weight_map of the resized mask bit for bit, also far above 65,504."""
    from ptx_keras.data.arrays import resize_mask

    sources = [(size, a) for a in areas] + ([(1024, 15)] if size == 512 else [])  # one resized 1024 -> 512
    masks = _small_pneumothorax_source(str(tmp_path / "src"), sources)
    out = str(tmp_path / "out")
    prepare_dataset(str(tmp_path / "src"), out, image_size=size, split_fractions=(1, 0, 0), workers=1, progress=False)
    got = _weights_by_id(out)
    assert set(got) == set(masks)
    largest = 0.0
    for name, mask in masks.items():
        expected = spatial_weight_map(resize_mask(mask, size))
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name], expected)
        largest = max(largest, float(expected.max()))
    assert largest > (2 if size == 1024 else 1.3) * 65504  # what float16 clamped (at 1024 px by over half)


def test_float16_is_an_opt_in_that_warns_and_lists_the_clamped_samples(tmp_path, caplog):
    masks = _small_pneumothorax_source(str(tmp_path / "src"), [(512, 5), (512, 400)])
    out = str(tmp_path / "out")
    with caplog.at_level("WARNING", logger="ptx_keras.data.prepare"):
        prepare_dataset(
            str(tmp_path / "src"),
            out,
            image_size=512,
            split_fractions=(1, 0, 0),
            workers=1,
            progress=False,
            weight_dtype="float16",
        )
    info = load_prepared_info(out)
    assert info["weight_dtype"] == "float16" and info["weights_saturated_float16"] == ["s512_05"]
    warning = [r.getMessage() for r in caplog.records if "65,504" in r.getMessage()]
    assert len(warning) == 1 and warning[0].startswith("1 of 2 samples") and "float32" in warning[0]
    got = _weights_by_id(out)
    for name, mask in masks.items():
        expected = np.minimum(spatial_weight_map(mask), 65504).astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(got[name], expected)
    assert got["s512_05"].max() == 65504 < spatial_weight_map(masks["s512_05"]).max()


def test_older_prepared_data_is_refused_with_a_clear_error(tmp_path):
    import json

    from ptx_keras.data.prepared import DATASET_JSON, is_prepared_dir

    src = str(tmp_path / "src")
    _write_source(src, 4)
    out = str(tmp_path / "out")
    prepare_dataset(src, out, image_size=SIZE, split_fractions=(1, 0, 0), workers=1, progress=False)
    path = os.path.join(out, DATASET_JSON)
    with open(path) as f:
        info = json.load(f)
    info["format_version"] = 1  # what ptx_keras wrote before weight maps were compressed and exact
    with open(path, "w") as f:
        json.dump(info, f)
    assert is_prepared_dir(out)  # still recognised as prepared data, not taken for a raw source
    for call in (
        lambda: make_dataset(out, "train", 2, training=False),
        lambda: count_examples(out, "train"),
        lambda: prepare_dataset(src, out, image_size=SIZE, split_fractions=(1, 0, 0), workers=1, progress=False),
    ):
        with pytest.raises(DataError, match=r"format version 1 .*float16.*Prepare the data again.*--overwrite"):
            call()
    summary = prepare_dataset(
        src, out, image_size=SIZE, split_fractions=(1, 0, 0), workers=1, progress=False, overwrite=True
    )
    assert summary["status"] == "prepared" and load_prepared_info(out)["format_version"] == 2
    assert len(_weights_by_id(out)) == 4


# --- Training crops (crop_size, crop_foreground) ----------------------------------------------------------------
def _coordinates(size):
    """An image whose pixel (r, c) holds r * size + c: a crop says where it was taken."""
    return np.arange(size * size, dtype=np.float32).reshape(size, size)


def test_random_crop_centres_on_the_only_pneumothorax_pixel_and_keeps_the_three_aligned():
    import tensorflow as tf

    from ptx_keras.data.pipeline import random_crop

    size, crop = 16, 6
    image = tf.constant(_coordinates(size)[..., None])
    weight = tf.constant(_coordinates(size) + 0.5)
    for (r, c), corner in (((8, 9), (5, 6)), ((1, 14), (0, 10)), ((15, 0), (10, 0))):  # clipped at the borders
        mask = np.zeros((size, size), np.uint8)
        mask[r, c] = 1
        mask = tf.constant(mask)
        for seed in range(5):
            i, m, w = (t.numpy() for t in random_crop(image, mask, weight, tf.constant(seed, tf.int64), crop, 1.0))
            assert i.shape == (crop, crop, 1) and m.shape == (crop, crop) and w.shape == (crop, crop)
            assert i[0, 0, 0] == corner[0] * size + corner[1]  # centre = pixel - crop // 2, inside the image
            np.testing.assert_array_equal(w, i[..., 0] + 0.5)
            assert m.sum() == 1 and m[r - corner[0], c - corner[1]] == 1


def test_random_crop_without_foreground_is_uniform_and_seeded():
    import tensorflow as tf

    from ptx_keras.data.pipeline import random_crop

    size, crop = 10, 4
    image = tf.constant(_coordinates(size)[..., None])
    mask = np.zeros((size, size), np.uint8)
    mask[5, 5] = 1
    mask = tf.constant(mask)
    corners = []
    for seed in range(300):
        i, _, _ = random_crop(image, mask, image[..., 0], tf.constant(seed, tf.int64), crop, 0.0)
        corners.append(divmod(int(i.numpy()[0, 0, 0]), size))
    rows, cols = zip(*corners)
    assert set(rows) == set(range(size - crop + 1)) and set(cols) == set(range(size - crop + 1))  # all 7 offsets
    again, _, _ = random_crop(image, mask, image[..., 0], tf.constant(3, tf.int64), crop, 0.0)
    assert divmod(int(again.numpy()[0, 0, 0]), size) == corners[3]
    # A healthy image has no pixel to centre on: its crop is placed uniformly even with crop_foreground 1.
    i, m, _ = random_crop(image, tf.zeros_like(mask), image[..., 0], tf.constant(0, tf.int64), crop, 1.0)
    assert i.shape == (crop, crop, 1) and m.numpy().sum() == 0


def test_training_crops_shapes_foreground_share_and_whole_validation(prepared):
    out, expected, _ = prepared
    crop = 16
    ds = make_dataset(out, "train", 4, True, with_ids=True, crop_size=crop, crop_foreground=1.0, seed=3, augment="none")
    n = 0
    for images, y_true, ids in ds:
        assert images.shape[1:] == (crop, crop, 3) and y_true.shape[1:] == (crop, crop, 2)
        for image, y, sample_id in zip(images.numpy(), y_true.numpy(), ids.numpy()):
            full_image, full_mask, full_weight = expected[sample_id.decode()]
            if full_mask.any():  # centred on a pneumothorax pixel: the crop holds some
                assert y[..., MASK_CHANNEL].any()
            # The crop is a window of the whole image, at the same place in the image and the weight map.
            matches = [
                (r, c)
                for r in range(SIZE - crop + 1)
                for c in range(SIZE - crop + 1)
                if np.allclose(full_image[r : r + crop, c : c + crop], image[..., 0])
                and np.allclose(full_weight[r : r + crop, c : c + crop], y[..., WEIGHT_CHANNEL])
                and np.array_equal(full_mask[r : r + crop, c : c + crop], y[..., MASK_CHANNEL])
            ]
            assert matches, sample_id
            n += 1
    assert n == count_examples(out, "train")
    images, _ = next(iter(make_dataset(out, "val", 4, False)))
    assert images.shape[1:3] == (SIZE, SIZE)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(crop_size=32), r"crop_size must be null or an int in \(0, 32\)"),
        (dict(crop_size=0), r"crop_size must be null or an int in \(0, 32\)"),
        (dict(crop_size=16.0), r"Received: crop_size=16.0"),
        (dict(crop_size=16, crop_foreground=1.5), r"crop_foreground must be a number in \[0, 1\]"),
        (dict(crop_size=16, crop_foreground=True), r"Received: crop_foreground=True"),
    ],
)
def test_training_crops_bad_values(prepared, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_dataset(prepared[0], "train", 4, True, **kwargs)


def test_training_crops_take_every_augmentation(prepared):
    """The geometric augmentations need the crop's static size (a crop at tensor offsets has none by itself)."""
    out = prepared[0]
    ds = make_dataset(out, "train", 4, True, crop_size=16, augment="strong", seed=1)
    images, y_true = next(iter(ds))
    assert images.shape[1:3] == (16, 16) and y_true.shape[1:3] == (16, 16)
    assert np.isfinite(y_true.numpy()).all()


def test_training_crops_are_refused_for_evaluation_streams(prepared):
    with pytest.raises(ValueError, match="crop_size applies to training streams only"):
        make_dataset(prepared[0], "val", 4, False, crop_size=16)
