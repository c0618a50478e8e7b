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

# Stream ids keep the random streams of different uses apart.
TRAIN_STREAM = 1
VAL_STREAM = 2
TEST_STREAM = 3


def sample_episode(
    images: tf.Tensor,
    index: tf.Tensor,
    n_way: int,
    k_shot: int,
    n_query: int,
    seed: int,
    stream: int,
) -> Episode:
    """Builds episode `index` from `images [classes, per_class, h, w, c]`."""
    num_classes = tf.shape(images)[0]
    per_class = tf.shape(images)[1]
    key = tf.stack([tf.cast(seed, tf.int64) * 1000 + stream, tf.cast(index, tf.int64)])
    class_key, instance_key = tf.unstack(
        tf.random.experimental.stateless_split(key, num=2), axis=0
    )
    classes = tf.argsort(tf.random.stateless_uniform([num_classes], class_key))[:n_way]
    instances = tf.argsort(
        tf.random.stateless_uniform([n_way, per_class], instance_key), axis=1
    )[:, : k_shot + n_query]
    picked = tf.gather(tf.gather(images, classes), instances, batch_dims=1)
    shape = tf.shape(images)[2:]
    support = tf.reshape(picked[:, :k_shot], tf.concat([[n_way * k_shot], shape], 0))
    query = tf.reshape(picked[:, k_shot:], tf.concat([[n_way * n_query], shape], 0))
    labels = tf.range(n_way, dtype=tf.int32)
    return Episode(
        support_images=support,
        support_labels=tf.repeat(labels, k_shot),
        query_images=query,
        query_labels=tf.repeat(labels, n_query),
    )


def episode_dataset(
    class_set: ClassSet,
    n_way: int,
    k_shot: int,
    n_query: int,
    seed: int,
    stream: int,
    count: int | None = None,
    start: int = 0,
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of `Episode`s: `count` of them, or endless if None."""
    images = tf.constant(class_set.images, tf.float32)
    stop = start + count if count is not None else np.iinfo(np.int64).max
    indices = tf.data.Dataset.range(start, stop)

    def make(index):
        return sample_episode(images, index, n_way, k_shot, n_query, seed, stream)

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
