import time

import numpy as np
import tensorflow as tf

from metasearch.api import ClassSet
from metasearch.data import episodes
from metasearch.data.pipeline import EpisodeImages


def _class_set(num_classes=12, per_class=6, size=4):
    # Every pixel of image j of class c holds c * 100 + j, so samples can be traced back.
    values = np.arange(num_classes)[:, None] * 100 + np.arange(per_class)[None, :]
    images = np.broadcast_to(
        values[:, :, None, None, None], (num_classes, per_class, size, size, 1)
    )
    return ClassSet(images.astype(np.float32), [f"c{i}" for i in range(num_classes)])


def _decode(images):
    ids = images[:, 0, 0, 0].astype(int)
    return ids // 100, ids % 100


def test_episode_shapes_labels_and_no_repeats():
    ds = episodes.episode_dataset(
        _class_set(), n_way=5, k_shot=2, n_query=3, seed=1, stream=1, count=4
    )
    for episode in ds:
        assert episode.support_images.shape == (10, 4, 4, 1)
        assert episode.query_images.shape == (15, 4, 4, 1)
        support_class, support_image = _decode(episode.support_images.numpy())
        query_class, query_image = _decode(episode.query_images.numpy())
        # Labels are 0..N-1 and consistent with the true classes.
        for labels, classes in (
            (episode.support_labels, support_class),
            (episode.query_labels, query_class),
        ):
            labels = labels.numpy()
            assert set(labels) == set(range(5))
            mapping = {}
            for label, cls in zip(labels, classes):
                assert mapping.setdefault(label, cls) == cls
        # Support and query images of a class are distinct images.
        support_pairs = set(zip(support_class, support_image))
        query_pairs = set(zip(query_class, query_image))
        assert not support_pairs & query_pairs
        assert len(set(support_class)) == 5


def test_episodes_are_deterministic_under_seed_and_differ_across_seeds():
    a = list(episodes.episode_dataset(_class_set(), 5, 1, 2, seed=3, stream=1, count=3))
    b = list(episodes.episode_dataset(_class_set(), 5, 1, 2, seed=3, stream=1, count=3))
    c = list(episodes.episode_dataset(_class_set(), 5, 1, 2, seed=4, stream=1, count=3))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.support_images, y.support_images)
        np.testing.assert_array_equal(x.query_images, y.query_images)
    assert any(not np.array_equal(x.support_images, z.support_images) for x, z in zip(a, c))


def test_episode_i_does_not_depend_on_where_the_stream_starts():
    whole = list(episodes.episode_dataset(_class_set(), 5, 1, 2, seed=0, stream=2, count=4))
    tail = list(episodes.episode_dataset(_class_set(), 5, 1, 2, seed=0, stream=2, count=2, start=2))
    np.testing.assert_array_equal(whole[2].query_images, tail[0].query_images)


def test_mean_and_ci95():
    mean, ci = episodes.mean_and_ci95([0.5, 0.7, 0.9, 0.7])
    assert abs(mean - 0.7) < 1e-9
    assert abs(ci - 1.96 * np.std([0.5, 0.7, 0.9, 0.7], ddof=1) / 2) < 1e-9


def test_sample_episode_runs_in_graph_mode():
    class_set = _class_set()
    size, channels = class_set.images.shape[2], class_set.images.shape[4]
    images = EpisodeImages(class_set, size, channels, min_images=2, cache_bytes=0)
    fn = tf.function(lambda i: episodes.sample_episode(images, i, 3, 1, 1, 0, 1))
    assert fn(tf.constant(5, tf.int64)).support_images.shape[0] == 3


def test_evaluation_episodes_are_the_dataset_episodes_and_know_each_image_index():
    class_set = _class_set(num_classes=9, per_class=7)
    stream = episodes.EvaluationEpisodes(
        class_set, n_way=4, k_shot=2, n_query=3, seed=5, stream=2, count=6, start=3
    )
    plain = episodes.episode_dataset(
        class_set, n_way=4, k_shot=2, n_query=3, seed=5, stream=2, count=6, start=3
    )
    support_rows, query_rows = stream.indices()
    assert support_rows.shape == (6, 8) and query_rows.shape == (6, 12)
    support_labels, query_labels = stream.labels()
    assert len(stream) == 6
    seen = 0
    for i, (mine, theirs) in enumerate(zip(stream, plain)):
        seen += 1
        for field in ("support_images", "support_labels", "query_images", "query_labels"):
            np.testing.assert_array_equal(getattr(mine, field), getattr(theirs, field))
        # The pool's images at the episode's indices are the episode's images.
        np.testing.assert_array_equal(
            stream.pool.images(tf.constant(support_rows[i])), mine.support_images
        )
        np.testing.assert_array_equal(
            stream.pool.images(tf.constant(query_rows[i])), mine.query_images
        )
        np.testing.assert_array_equal(support_labels, mine.support_labels)
        np.testing.assert_array_equal(query_labels, mine.query_labels)
    assert seen == 6


def test_episode_streams_do_not_autotune_so_deleting_one_never_waits():
    # tf.data's autotuning thread made deleting a trial's iterator wait up to 20 s.
    stream = episodes.indexed_stream(lambda index: index * 2, count=5)
    assert stream.options().autotune.enabled is False
    iterator = iter(stream)
    assert [int(next(iterator)) for _ in range(3)] == [0, 2, 4]
    started = time.perf_counter()
    del iterator
    assert time.perf_counter() - started < 1.0
