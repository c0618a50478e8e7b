"""The N-way K-shot Q-query episode sampler on `tf.data`.

Episode `i` of a stream is a pure function of `(seed, stream, i)` through
stateless random ops, so episodes are identical across runs, processes,
parallel map calls and resumed searches. Validation and test streams use
fixed seeds so every trial is scored on the very same episodes.
"""

from __future__ import annotations

import math
import os

import numpy as np
import tensorflow as tf

from metasearch import graphs
from metasearch.api import ClassSet, Episode
from metasearch.config import CLASS_AUGMENTS
from metasearch.data.pipeline import EpisodeImages

# Stream ids keep the random streams of different uses apart.
TRAIN_STREAM = 1
VAL_STREAM = 2
TEST_STREAM = 3
# Augmentation draws from stream + this offset, apart from episode sampling.
AUGMENT_STREAM_OFFSET = 500
# Most parallel calls making episodes (at least 2, at most the CPUs).
PIPELINE_THREADS = 8


def episode_key(seed, stream, index) -> tf.Tensor:
    """The stateless random key of episode `index` of a stream."""
    return tf.stack([tf.cast(seed, tf.int64) * 1000 + stream, tf.cast(index, tf.int64)])


def episode_indices(
    images: EpisodeImages,
    index: tf.Tensor,
    n_way: int,
    k_shot: int,
    n_query: int,
    seed: int,
    stream: int,
) -> tf.Tensor:
    """The flat image indices `[N, K + Q]` of episode `index`: class by class, support first.

    N classes, then K + Q distinct images of each. Classes may hold
    different numbers of images (each has at least K + Q): draws past a
    class's count sort last, so with equal counts this is the plain
    per-class shuffle. Row `c` is the episode's class `c` (label `c`).
    """
    return _episode_draw(images, index, n_way, k_shot, n_query, seed, stream, copies=1)[0]


def _episode_draw(images, index, n_way, k_shot, n_query, seed, stream, copies: int):
    """`(indices [N, K + Q], copy [N])`: `episode_indices` over `copies` copies of the classes.

    Drawn class `d` of the `copies * C` is class `d mod C` in copy `d // C`;
    with one copy the draw is exactly `episode_indices`'s.
    """
    counts = tf.constant(images.counts, tf.int64)
    offsets = tf.constant(images.offsets, tf.int64)
    num_classes = tf.shape(counts)[0]
    key = episode_key(seed, stream, index)
    class_key, instance_key = tf.unstack(tf.random.experimental.stateless_split(key, num=2), axis=0)
    drawn = tf.argsort(tf.random.stateless_uniform([copies * num_classes], class_key))[:n_way]
    classes, copy = drawn % num_classes, drawn // num_classes
    draws = tf.random.stateless_uniform([n_way, images.max_count], instance_key)
    beyond = (
        tf.range(images.max_count, dtype=tf.int64)[None, :] >= tf.gather(counts, classes)[:, None]
    )
    draws = tf.where(beyond, 2.0, draws)
    instances = tf.argsort(draws, axis=1)[:, : k_shot + n_query]
    return tf.gather(offsets, classes)[:, None] + tf.cast(instances, tf.int64), copy


def episode_labels(n_way: int, shots: int) -> tf.Tensor:
    """Labels `[n_way * shots]` of class-major images: 0 x shots, 1 x shots, ..."""
    return tf.repeat(tf.range(n_way, dtype=tf.int32), shots)


def _class_copies(class_augment: str) -> int:
    """How many classes `class_augment` makes of one ("mirror": each and its mirror image)."""
    if class_augment not in CLASS_AUGMENTS:
        raise ValueError(f"class_augment must be one of {CLASS_AUGMENTS}, got {class_augment!r}")
    return 2 if class_augment == "mirror" else 1


def sample_episode(
    images: EpisodeImages,
    index: tf.Tensor,
    n_way: int,
    k_shot: int,
    n_query: int,
    seed: int,
    stream: int,
    class_augment: str = "none",
) -> Episode:
    """Builds episode `index`: the images at `episode_indices`, with their labels.

    `class_augment="mirror"` draws the N classes from twice the class set:
    each class and its left-right mirror image, a new class (task
    augmentation; a class and its mirror may meet in one episode). With
    `"none"` the episode is exactly the one `episode_indices` describes.
    """
    copies = _class_copies(class_augment)
    flat, copy = _episode_draw(images, index, n_way, k_shot, n_query, seed, stream, copies)
    picked = images.images(flat)  # one request for the whole episode: [N, K + Q, h, w, c]
    if class_augment == "mirror":
        mirrored = tf.equal(copy, 1)[:, None, None, None, None]
        picked = tf.where(mirrored, tf.reverse(picked, axis=[3]), picked)
    shape = tf.shape(picked)[2:]
    return Episode(
        support_images=tf.reshape(picked[:, :k_shot], tf.concat([[n_way * k_shot], shape], 0)),
        support_labels=episode_labels(n_way, k_shot),
        query_images=tf.reshape(picked[:, k_shot:], tf.concat([[n_way * n_query], shape], 0)),
        query_labels=episode_labels(n_way, n_query),
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
    class_augment: str = "none",
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of `Episode`s: `count` of them, or endless if None.

    `images` is a class set's `EpisodeImages` (a `ClassSet` of generated
    arrays is wrapped as one). `augment="affine"` redraws every image with
    `random_affine`, and `class_augment="mirror"` adds mirrored classes
    (`sample_episode`); both for meta-training, evaluation streams are never
    augmented.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    _class_copies(class_augment)  # an unknown one fails here, not inside the pipeline
    images = _episode_images(images, k_shot + n_query)

    def make(index):
        episode = sample_episode(images, index, n_way, k_shot, n_query, seed, stream, class_augment)
        if augment == "affine":
            key = episode_key(seed, stream + AUGMENT_STREAM_OFFSET, index)
            support_key, query_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
            episode = episode._replace(
                support_images=random_affine(episode.support_images, support_key),
                query_images=random_affine(episode.query_images, query_key),
            )
        return episode

    return indexed_stream(make, count, start)


def _episode_images(images: EpisodeImages | ClassSet, min_images: int) -> EpisodeImages:
    """`images` as `EpisodeImages` (a `ClassSet` of generated arrays is wrapped as one)."""
    if isinstance(images, EpisodeImages):
        return images
    if images.images is None:
        raise ValueError("episodes: a ClassSet of files needs EpisodeImages")
    size, channels = images.images[0].shape[1], images.images[0].shape[3]
    return EpisodeImages(images, size, channels, min_images, cache_bytes=0)


class EvaluationEpisodes:
    """A finite, unaugmented evaluation stream that also knows which image each episode shows.

    Iterating it gives the `Episode`s `episode_dataset` gives for the same
    arguments (it is one). `indices()` gives every episode's flat image
    indices into `pool`, so an evaluation may embed each distinct image once
    and score the episodes from those embeddings
    (`MetaTrainer.evaluate`, for learners that embed images independently).
    """

    def __init__(self, images, n_way, k_shot, n_query, seed, stream, count, start=0):
        self.pool = _episode_images(images, k_shot + n_query)
        self.n_way, self.k_shot, self.n_query = int(n_way), int(k_shot), int(n_query)
        self.seed, self.stream = int(seed), int(stream)
        self.count, self.start = int(count), int(start)
        self._dataset: tf.data.Dataset | None = None
        self._indices: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def dataset(self) -> tf.data.Dataset:
        """The episodes as a `tf.data.Dataset` (built on first use)."""
        if self._dataset is None:
            self._dataset = episode_dataset(
                self.pool,
                self.n_way,
                self.k_shot,
                self.n_query,
                self.seed,
                self.stream,
                count=self.count,
                start=self.start,
            )
        return self._dataset

    def __iter__(self):
        return iter(self.dataset)

    def __len__(self) -> int:
        return self.count

    def indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Flat pool indices of every episode: support `[E, N*K]` and query `[E, N*Q]`.

        Class-major, as in the episodes: their labels are `labels()`.
        """
        if self._indices is None:

            def draw(index):
                return episode_indices(
                    self.pool, index, self.n_way, self.k_shot, self.n_query, self.seed, self.stream
                )

            flat = (
                tf.data.Dataset.range(self.start, self.start + self.count)
                .map(graphs.dataset_function(draw))
                .batch(max(1, self.count))
                .get_single_element()
                .numpy()
            )
            support = flat[:, :, : self.k_shot].reshape(self.count, -1)
            query = flat[:, :, self.k_shot :].reshape(self.count, -1)
            self._indices = (support, query)
        return self._indices

    def labels(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Support `[N*K]` and query `[N*Q]` labels, the same in every episode."""
        return episode_labels(self.n_way, self.k_shot), episode_labels(self.n_way, self.n_query)


def indexed_stream(make, count: int | None = None, start: int = 0) -> tf.data.Dataset:
    """`make(index)` for indices `start, start + 1, ...`: `count` of them, or endless if None.

    Mapped in parallel but deterministically and prefetched; every episode
    stream (class-based or generated, e.g. `sinusoid`) is built this way.

    Fixed parallelism, without tf.data's autotuning: its model thread sleeps
    in doubling periods (20.5 s, then 41 s, 82 s after the stream starts),
    and deleting the iterator waited for it to wake, up to 20 s at the end of
    a trial (measured on Omniglot: 13 of 35 trials of a 30-minute search
    stalled 1.8 to 20 s, 82 s in all). An episode takes a few milliseconds to make, a step
    far longer, so two parallel calls and two prefetched episodes keep up.
    """
    stop = start + count if count is not None else np.iinfo(np.int64).max
    indices = tf.data.Dataset.range(start, stop)
    options = tf.data.Options()
    options.autotune.enabled = False
    parallel = max(2, min(PIPELINE_THREADS, os.cpu_count() or 2))
    return (
        indices.map(graphs.dataset_function(make), num_parallel_calls=parallel, deterministic=True)
        .prefetch(2)
        .with_options(options)
    )


def mean_and_ci95(values) -> tuple[float, float]:
    """Mean and half-width of the normal 95% confidence interval."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1:
        return float(values[0]), 0.0
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(values.size))
