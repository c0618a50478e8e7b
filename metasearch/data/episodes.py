"""The N-way K-shot Q-query episode sampler on `tf.data`.

Episode `i` of a stream is a pure function of `(seed, stream, i)` through
stateless random ops, so episodes are identical across runs, processes,
parallel map calls and resumed searches. Validation and test streams use
fixed seeds so every trial is scored on the very same episodes.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from metasearch.api import ClassSet, Episode
from metasearch.data.pipeline import EpisodeImages

# Stream ids keep the random streams of different uses apart.
TRAIN_STREAM = 1
VAL_STREAM = 2
TEST_STREAM = 3
# Augmentation draws from stream + this offset, apart from episode sampling.
AUGMENT_STREAM_OFFSET = 500


def episode_key(seed, stream, index) -> tf.Tensor:
    """The stateless random key of episode `index` of a stream."""
    return tf.stack([tf.cast(seed, tf.int64) * 1000 + stream, tf.cast(index, tf.int64)])


def sample_episode(
    images: EpisodeImages,
    index: tf.Tensor,
    n_way: int,
    k_shot: int,
    n_query: int,
    seed: int,
    stream: int,
) -> Episode:
    """Builds episode `index`: N classes, then K + Q distinct images of each.

    Classes may hold different numbers of images (each has at least K + Q):
    draws past a class's count sort last, so with equal counts this is the
    plain per-class shuffle.
    """
    counts = tf.constant(images.counts, tf.int64)
    offsets = tf.constant(images.offsets, tf.int64)
    num_classes = tf.shape(counts)[0]
    key = episode_key(seed, stream, index)
    class_key, instance_key = tf.unstack(tf.random.experimental.stateless_split(key, num=2), axis=0)
    classes = tf.argsort(tf.random.stateless_uniform([num_classes], class_key))[:n_way]
    draws = tf.random.stateless_uniform([n_way, images.max_count], instance_key)
    beyond = (
        tf.range(images.max_count, dtype=tf.int64)[None, :] >= tf.gather(counts, classes)[:, None]
    )
    draws = tf.where(beyond, 2.0, draws)
    instances = tf.argsort(draws, axis=1)[:, : k_shot + n_query]
    flat = tf.gather(offsets, classes)[:, None] + tf.cast(instances, tf.int64)
    picked = images.images(flat)
    shape = tf.shape(picked)[2:]
    support = tf.reshape(picked[:, :k_shot], tf.concat([[n_way * k_shot], shape], 0))
    query = tf.reshape(picked[:, k_shot:], tf.concat([[n_way * n_query], shape], 0))
    labels = tf.range(n_way, dtype=tf.int32)
    return Episode(
        support_images=support,
        support_labels=tf.repeat(labels, k_shot),
        query_images=query,
        query_labels=tf.repeat(labels, n_query),
    )


AUGMENTATIONS = ("none", "affine")


def random_affine(images: tf.Tensor, key: tf.Tensor, strength: float = 1.0) -> tf.Tensor:
    """Redraws each image `[n, h, w, c]` with a small random affine map (a "shaky hand").

    Rotation up to about 15 degrees, scale 0.85-1.15, shear and a shift of up
    to 10% of the size; pixels from outside repeat the border (background).
    Deterministic given `key`.
    """
    n = tf.shape(images)[0]
    height = tf.cast(tf.shape(images)[1], tf.float32)
    width = tf.cast(tf.shape(images)[2], tf.float32)
    u = tf.random.stateless_uniform([n, 6], key, -1.0, 1.0) * strength
    angle = u[:, 0] * 0.26
    scale_x = 1.0 + 0.15 * u[:, 1]
    scale_y = 1.0 + 0.15 * u[:, 2]
    shear = 0.15 * u[:, 3]
    shift_x = 0.1 * width * u[:, 4]
    shift_y = 0.1 * height * u[:, 5]
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel (x, y) samples input pixel M (x - c) + c + shift.
    m00, m01 = cos * scale_x, -sin * scale_x + shear
    m10, m11 = sin * scale_y, cos * scale_y
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    a2 = cx - m00 * cx - m01 * cy + shift_x
    b2 = cy - m10 * cx - m11 * cy + shift_y
    zeros = tf.zeros_like(angle)
    transforms = tf.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )


def episode_dataset(
    images: EpisodeImages | ClassSet,
    n_way: int,
    k_shot: int,
    n_query: int,
    seed: int,
    stream: int,
    count: int | None = None,
    start: int = 0,
    augment: str = "none",
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of `Episode`s: `count` of them, or endless if None.

    `images` is a class set's `EpisodeImages` (a `ClassSet` of generated
    arrays is wrapped as one). `augment="affine"` redraws every image with
    `random_affine` (for meta-training; evaluation streams are never augmented).
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    if isinstance(images, ClassSet):
        if images.images is None:
            raise ValueError("episode_dataset: a ClassSet of files needs EpisodeImages")
        size, channels = images.images[0].shape[1], images.images[0].shape[3]
        images = EpisodeImages(images, size, channels, k_shot + n_query, cache_bytes=0)

    def make(index):
        episode = sample_episode(images, index, n_way, k_shot, n_query, seed, stream)
        if augment == "affine":
            key = episode_key(seed, stream + AUGMENT_STREAM_OFFSET, index)
            support_key, query_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
            episode = episode._replace(
                support_images=random_affine(episode.support_images, support_key),
                query_images=random_affine(episode.query_images, query_key),
            )
        return episode

    return indexed_stream(make, count, start)


def indexed_stream(make, count: int | None = None, start: int = 0) -> tf.data.Dataset:
    """`make(index)` for indices `start, start + 1, ...`: `count` of them, or endless if None.

    Mapped in parallel but deterministically and prefetched; every episode
    stream (class-based or generated, e.g. `sinusoid`) is built this way.
    """
    stop = start + count if count is not None else np.iinfo(np.int64).max
    indices = tf.data.Dataset.range(start, stop)
    return indices.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(
        tf.data.AUTOTUNE
    )


def mean_and_ci95(values) -> tuple[float, float]:
    """Mean and half-width of the normal 95% confidence interval."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1:
        return float(values[0]), 0.0
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(values.size))
