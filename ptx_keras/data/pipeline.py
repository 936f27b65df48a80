"""The tf.data input pipeline: prepared TFRecord shards -> `(image, y_true)` batches.

Each batch is `image` float32 `(batch, height, width, channels)` with intensities in [0, 1] (the stored PNG
divided by 255 or 65535, as `dataset.json` says) and grayscale replicated to `channels`, and `y_true`
float32 `(batch, height, width, 2)` packed by `ptx_keras.targets.pack_targets` (mask, weight map). Training
adds a seeded shuffle and seeded augmentation (`ptx_keras.data.augment`; by default the paper's random
horizontal flip), geometric transforms applied to the image, the mask and the weight map together, can
oversample positive images (`positive_fraction`) and can train on random crops of the prepared images
(`crop_size`, a share `crop_foreground` of them centred on a pneumothorax pixel, as nnU-Net samples patches).

`make_dataset_from_source` skips preparation: it reads a raw source and computes resizing and weight maps
inside the pipeline (`tf.numpy_function`, serialised by Python's GIL). It is much slower than reading
prepared shards (see `docs/benchmarks.md`) and meant for quick looks at small data sets.
"""

import csv
import dataclasses
import numbers
import os

import numpy as np
import tensorflow as tf

from ptx_keras import constants
from ptx_keras.data.arrays import prepare_arrays
from ptx_keras.data.augment import as_augmentation, augment_batch
from ptx_keras.data.prepared import MANIFEST_CSV, load_prepared_info
from ptx_keras.data.settings import PrepareSettings
from ptx_keras.errors import DataError, require_tensorflow
from ptx_keras.runtime import dataset_options
from ptx_keras.targets import pack_targets

__all__ = ["CHANNELS", "count_examples", "make_dataset", "make_dataset_from_source"]


require_tensorflow(__name__)  # tf.data/SavedModel/graph code: a clear error on JAX or PyTorch

CHANNELS = (1, 3)

_FEATURE_SPEC = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "mask": tf.io.FixedLenFeature([], tf.string),
    "weight": tf.io.FixedLenFeature([], tf.string),
    "sample_id": tf.io.FixedLenFeature([], tf.string),
}
_LABEL_SPEC = {"label": tf.io.FixedLenFeature([], tf.int64)}


def _check_split(split):
    if split not in constants.SPLITS:
        raise DataError(f"Unknown split; expected one of {constants.SPLITS}. Received: split={split!r}")


def _check_options(batch_size, channels, shuffle_buffer):
    for name, value in (("batch_size", batch_size), ("shuffle_buffer", shuffle_buffer)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    if channels not in CHANNELS:
        raise ValueError(f"channels must be one of {CHANNELS}. Received: channels={channels!r}")


def count_examples(prepared_dir, split):
    """Number of examples of `split` in a prepared data set, from its manifest (for `steps_per_epoch`).

    Raises:
        DataError: if `split` is unknown or `prepared_dir` is not a prepared data set.
    """
    _check_split(split)
    load_prepared_info(prepared_dir)
    with open(os.path.join(os.fspath(prepared_dir), MANIFEST_CSV), newline="", encoding="utf-8") as f:
        return sum(1 for row in csv.DictReader(f) if row["split"] == split)


def _batch(ds, batch_size, training, augmentation, seed, channels, with_ids, drop_remainder, decode, full_scale):
    """Decodes examples in parallel, batches them, then augments, scales and packs whole batches.

    `decode` maps one element to `(image (H, W, 1) as stored, mask (H, W) uint8, weight (H, W), sample_id)`.
    The per-example work is only decoding; everything else runs vectorised on the batch, which is several
    times faster than small per-example ops. When training with augmentation, each example carries its own
    random integer from a seeded stream (its flip coin and, for the first of a batch, the seed of the batch's
    other parameters: `ptx_keras.data.augment`), so image, mask and weight map are transformed together.
    """
    augmenting = bool(training and augmentation.enabled)
    if augmenting:
        coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, coins)).map(
            lambda item, r: (*decode(item), r), num_parallel_calls=tf.data.AUTOTUNE
        )
    else:
        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def finalize(image, mask, weight, sample_id, coins=None):
        if coins is not None:
            image, mask, weight = augment_batch(augmentation, coins, image, mask, weight, full_scale)
        else:
            image = tf.cast(image, tf.float32) / full_scale
        if channels != 1:
            image = tf.tile(image, [1, 1, 1, channels])
        y_true = pack_targets(mask, weight)
        return (image, y_true, sample_id) if with_ids else (image, y_true)

    ds = ds.map(finalize, num_parallel_calls=tf.data.AUTOTUNE)
    # Without tf.data's autotuning thread: its lost wake-up stalls the end of every epoch (`ptx_keras.runtime`).
    return ds.prefetch(tf.data.AUTOTUNE).with_options(dataset_options())


def _augmentation(augment, flip):
    """The `Augmentation` of `augment` (see `as_augmentation`), with the older `flip` switch applied."""
    try:
        augmentation = as_augmentation(augment)
        if flip is not None:
            augmentation = dataclasses.replace(augmentation, flip=bool(flip))
    except ValueError as e:
        raise ValueError(f"augment: {e}") from None
    return augmentation


def _check_crop(crop_size, crop_foreground, training, size):
    if crop_size is None:
        return
    if not isinstance(crop_size, numbers.Integral) or isinstance(crop_size, bool) or not 0 < crop_size < size:
        raise ValueError(
            f"crop_size must be null or an int in (0, {size}) (the prepared images' side). "
            f"Received: crop_size={crop_size!r}"
        )
    ok = isinstance(crop_foreground, numbers.Real) and not isinstance(crop_foreground, bool)
    if not ok or not 0.0 <= crop_foreground <= 1.0:
        raise ValueError(f"crop_foreground must be a number in [0, 1]. Received: crop_foreground={crop_foreground!r}")
    if not training:
        raise ValueError("crop_size applies to training streams only (evaluation sees whole images)")


def random_crop(image, mask, weight, seed, crop_size, crop_foreground):
    """One `crop_size` square of an example, the same window for the image, the mask and the weight map.

    With probability `crop_foreground`, and when the mask has pneumothorax pixels, the window is centred on one of
    them drawn uniformly (moved inside the image where the centre is closer than `crop_size / 2` to a border);
    otherwise its corner is drawn uniformly. The weight map is the full image's (its class term counts the whole
    image's pixels), cropped like the mask.

    Args:
        image: `(S, S, 1)` image as stored.
        mask: `(S, S)` mask.
        weight: `(S, S)` weight map.
        seed: int64 scalar tensor, this example's draw from a seeded stream.
        crop_size: Side of the crop, < S.
        crop_foreground: Probability in [0, 1] of a window centred on a pneumothorax pixel.

    Returns:
        `(image, mask, weight)` cropped to `(crop_size, crop_size[, 1])`.
    """
    size = mask.shape[0]
    limit = size - crop_size  # the largest corner offset
    u = tf.random.stateless_uniform([4], seed=tf.stack([seed, tf.constant(7, tf.int64)]), dtype=tf.float32)
    corner = tf.minimum(tf.cast(u[2:] * float(limit + 1), tf.int32), limit)
    foreground = tf.cast(tf.where(mask > 0), tf.int32)  # (k, 2) row, column
    k = tf.shape(foreground)[0]

    def centred():
        pick = foreground[tf.minimum(tf.cast(u[1] * tf.cast(k, tf.float32), tf.int32), k - 1)]
        return tf.clip_by_value(pick - crop_size // 2, 0, limit)

    use = tf.logical_and(u[0] < crop_foreground, k > 0)
    corner = tf.cond(use, centred, lambda: corner)
    r, c = corner[0], corner[1]
    # Slicing at tensor offsets loses the static shape, which the batched augmentation needs.
    return (
        tf.ensure_shape(image[r : r + crop_size, c : c + crop_size], (crop_size, crop_size, image.shape[-1])),
        tf.ensure_shape(mask[r : r + crop_size, c : c + crop_size], (crop_size, crop_size)),
        tf.ensure_shape(weight[r : r + crop_size, c : c + crop_size], (crop_size, crop_size)),
    )


def _label(serialized):
    return tf.io.parse_single_example(serialized, _LABEL_SPEC)["label"]


def _oversample(ds, counts, positive_fraction, seed, shuffle_buffer, cache, repeat):
    """Draws positive examples with probability `positive_fraction` (the rest negative), seeded.

    The serialized stream is split by the stored label into a positive and a negative stream, each
    shuffled and repeated, and `tf.data.Dataset.sample_from_datasets` picks from them. An epoch is as many
    examples as the split has (`counts["total"]`), so epochs stay comparable with natural sampling: the
    positives are then seen `positive_fraction * total / positive` times per epoch on average.
    """
    for key in ("positive", "negative"):
        if not counts[key]:
            raise DataError(
                f"positive_fraction={positive_fraction} needs positive and negative examples; the split has "
                f"{counts['positive']} positive and {counts['negative']} negative"
            )
    streams = []
    for offset, (label, n) in enumerate(((1, counts["positive"]), (0, counts["negative"]))):
        stream = ds.filter(lambda s, label=label: tf.equal(_label(s), label))
        if cache:  # per stream: two iterators filling one cache would conflict
            stream = stream.cache()
        stream = stream.shuffle(min(shuffle_buffer, n), seed=seed + 1 + offset, reshuffle_each_iteration=True)
        streams.append(stream.repeat())
    ds = tf.data.Dataset.sample_from_datasets(
        streams,
        weights=[positive_fraction, 1.0 - positive_fraction],
        seed=seed + 3,
        rerandomize_each_iteration=True,
    )
    return ds if repeat else ds.take(int(counts["total"]))


def _check_positive_fraction(positive_fraction, training):
    if positive_fraction is None:
        return
    ok = isinstance(positive_fraction, numbers.Real) and not isinstance(positive_fraction, bool)
    if not ok or not 0.0 < positive_fraction < 1.0:
        raise ValueError(
            f"positive_fraction must be null or a number in (0, 1). Received: positive_fraction={positive_fraction!r}"
        )
    if not training:
        raise ValueError("positive_fraction applies to training streams only (evaluation sees the natural mix)")


def make_dataset(
    prepared_dir,
    split,
    batch_size,
    training,
    *,
    channels=3,
    seed=constants.SPLIT_SEED,
    shuffle_buffer=constants.SHUFFLE_BUFFER,
    repeat=False,
    drop_remainder=False,
    with_ids=False,
    cache=False,
    flip=None,
    augment=None,
    positive_fraction=None,
    crop_size=None,
    crop_foreground=constants.CROP_FOREGROUND,
):
    """Reads one split of a prepared data set as batches for training or evaluation.

    Args:
        prepared_dir: Output directory of `prepare_dataset`.
        split: `"train"`, `"val"` or `"test"`.
        batch_size: Examples per batch.
        training: Shuffle (files and examples, seeded) and augment (`augment`); False reads every example once,
            in the stored order, unchanged.
        channels: 1, or 3 to replicate grayscale (the paper preset's input).
        seed: Seed of the shuffles, the augmentation and the oversampling; each epoch draws a new order and new
            augmentation parameters from it.
        shuffle_buffer: Examples in the shuffle buffer (serialized examples, ~0.1-0.3 MB each at 256x256).
        repeat: Repeat forever (then pass `steps_per_epoch`, see `count_examples`).
        drop_remainder: Drop the last, smaller batch.
        with_ids: Yield `(image, y_true, sample_id)` for evaluation and prediction loops. Do not pass such a
            data set to `Model.fit`, which would take the ids for sample weights.
        cache: Keep the serialized examples in memory after the first epoch.
        flip: None keeps `augment`'s flip; True or False overrides it (the switch of earlier versions).
        augment: Training-time augmentation: an `ptx_keras.data.augment.Augmentation`, a preset name
            (`none`, `flip`, `standard`, `strong`), a mapping `{preset: ..., <parameter>: ...}`, or None for
            the paper's setting (random horizontal flips).
        positive_fraction: None keeps the natural order; a number in (0, 1) draws positive examples (stored
            label 1) with that probability, seeded, and makes an epoch as many examples as the split has
            (training only).
        crop_size: None for whole images; an int below the prepared side: each training example becomes a
            random `crop_size` square (`random_crop`, seeded, before augmentation; training only).
        crop_foreground: With `crop_size`, the probability in [0, 1] that a crop is centred on a pneumothorax
            pixel of a positive image.

    Returns:
        `tf.data.Dataset` of `(image, y_true)`: float32 `(batch, H, W, channels)` in [0, 1] and float32
        `(batch, H, W, 2)` (mask, weight map), H = W = `crop_size` when cropping; or `(image, y_true,
        sample_id)` with `with_ids`.

    Raises:
        DataError: if the split is unknown or empty, the directory is not a prepared data set, or a shard is
            missing.
        ValueError: if `batch_size`, `channels`, `shuffle_buffer`, `augment`, `positive_fraction`, `crop_size` or
            `crop_foreground` is invalid.
    """
    _check_split(split)
    _check_options(batch_size, channels, shuffle_buffer)
    augmentation = _augmentation(augment, flip)
    _check_positive_fraction(positive_fraction, training)
    info = load_prepared_info(prepared_dir)
    names = info["shards"][split]
    if not names or info["counts"][split]["total"] == 0:
        raise DataError(f"Split {split!r} of {prepared_dir} is empty (counts: {info['counts'][split]})")
    paths = [os.path.join(os.fspath(prepared_dir), name) for name in names]
    for path in paths:
        if not os.path.isfile(path):
            raise DataError(f"Shard {path} is missing; run ptx-prepare again on the same source to rebuild it")

    size = info["image_size"]
    _check_crop(crop_size, crop_foreground, training, size)
    image_dtype = tf.uint8 if info["bit_depth"] == 8 else tf.uint16
    full_scale = float(2 ** info["bit_depth"] - 1)
    weight_dtype = tf.as_dtype(info["weight_dtype"])
    # Format 2 stores every weight map zlib-compressed (codec.encode_weight_map); load_prepared_info refuses
    # other formats, so there is one decoding.

    def decode(serialized):
        features = tf.io.parse_single_example(serialized, _FEATURE_SPEC)
        image = tf.ensure_shape(tf.io.decode_png(features["image"], channels=1, dtype=image_dtype), (size, size, 1))
        mask = tf.ensure_shape(tf.io.decode_png(features["mask"], channels=1)[..., 0], (size, size))
        raw = tf.io.decode_compressed(features["weight"], compression_type="ZLIB")
        weight = tf.reshape(tf.io.decode_raw(raw, weight_dtype, little_endian=True), (size, size))
        return image, mask, weight, features["sample_id"]

    files = tf.data.Dataset.list_files(paths, shuffle=training, seed=seed)
    ds = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(paths), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    counts = info["counts"][split]
    if positive_fraction is not None:
        ds = _oversample(ds, counts, positive_fraction, seed, shuffle_buffer, cache, repeat)
    else:
        if cache:
            ds = ds.cache()
        if training:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        else:
            # The manifest knows the count: Keras then shows a progress bar with a total from the first epoch.
            ds = ds.apply(tf.data.experimental.assert_cardinality(int(counts["total"])))
    if crop_size is not None:
        # Each example carries its own draw from a seeded stream (a new one each epoch), as augmentation does.
        draws = tf.data.Dataset.random(seed=seed + 5, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, draws)).map(lambda s, r: {"serialized": s, "crop": r})
        whole = decode

        def decode(item):
            image, mask, weight, sample_id = whole(item["serialized"])
            return (*random_crop(image, mask, weight, item["crop"], crop_size, crop_foreground), sample_id)

    return _batch(ds, batch_size, training, augmentation, seed, channels, with_ids, drop_remainder, decode, full_scale)


def make_dataset_from_source(
    source,
    batch_size,
    training,
    settings=None,
    channels=3,
    *,
    seed=constants.SPLIT_SEED,
    shuffle_buffer=constants.SHUFFLE_BUFFER,
    repeat=False,
    drop_remainder=False,
    with_ids=False,
    flip=None,
    augment=None,
    **setting_overrides,
):
    """On-the-fly pipeline: reads a raw source and computes weight maps while iterating (clearly slower).

    Every sample of the source is used (no split); resizing and the weight map are exactly those of
    `prepare_dataset` with the same settings (weights kept in float32). A bad sample stops the iteration
    with its error.

    Args:
        source: A source path (auto-detected) or a list of `SampleRecord`.
        batch_size: As in `make_dataset`.
        training: As in `make_dataset`.
        channels: As in `make_dataset`.
        seed: As in `make_dataset`.
        shuffle_buffer: As in `make_dataset`.
        repeat: As in `make_dataset`.
        drop_remainder: As in `make_dataset`.
        with_ids: As in `make_dataset`.
        flip: As in `make_dataset`.
        augment: As in `make_dataset`.
        settings: A `PrepareSettings` (its image size, bit depth and weight-map settings are used; the weights
            stay float32); default: the package's defaults.
        **setting_overrides: Settings changed by keyword (`image_size=128`, ...), as `prepare_dataset` takes.

    Returns:
        `tf.data.Dataset` with the same elements as `make_dataset`.

    Raises:
        DataError: if the source holds no samples.
        ValueError: if an option is invalid.
    """
    from ptx_keras.data.prepare import resolve_source
    from ptx_keras.data.readers import load_sample

    _check_options(batch_size, channels, shuffle_buffer)
    augmentation = _augmentation(augment, flip)
    settings = PrepareSettings.from_kwargs(
        PrepareSettings.of(settings) if settings is not None else None, **setting_overrides
    )
    source_path, _, records, _ = resolve_source(source)
    if not records:
        raise DataError(f"No samples found in {source_path or 'the given records'}")
    work_settings = {**settings.array_settings(), "weight_dtype": "float32"}
    image_size, bit_depth = settings.image_size, settings.bit_depth
    image_dtype = tf.uint8 if bit_depth == 8 else tf.uint16

    def load(index):
        record = records[int(index)]
        image, mask, weight = prepare_arrays(load_sample(record), **work_settings)
        return image[..., None], mask, weight, record.sample_id.encode("utf-8")

    def decode(index):
        image, mask, weight, sample_id = tf.numpy_function(
            load, [index], [image_dtype, tf.uint8, tf.float32, tf.string], stateful=False
        )
        return (
            tf.ensure_shape(image, (image_size, image_size, 1)),
            tf.ensure_shape(mask, (image_size, image_size)),
            tf.ensure_shape(weight, (image_size, image_size)),
            tf.ensure_shape(sample_id, ()),
        )

    ds = tf.data.Dataset.range(len(records))
    if training:
        ds = ds.shuffle(min(shuffle_buffer, len(records)), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    full_scale = float(2**bit_depth - 1)
    return _batch(ds, batch_size, training, augmentation, seed, channels, with_ids, drop_remainder, decode, full_scale)
