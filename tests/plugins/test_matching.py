"""Tests for the `matching` plugin: the attention arithmetic, invariances and FCE."""

from __future__ import annotations

import math

import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from metasearch import testing
from metasearch.api import TaskSpec
from metasearch.plugins.matching import LOG_EPSILON, MatchingNetworks
from metasearch.search_spaces.conv_blocks import ConvBlocks

SMALL = {"depth": 3, "filters": 16, "growth": 1.0}
# 28x28 through three pooling blocks of 16 filters: 3 * 3 * 16 flattened features.
BACKBONE_WIDTH = 144


def _learner(fce=False, fce_steps=1, embedding_dim=0, task=None):
    task = task or testing.tiny_task()
    config = {"fce": fce, "fce_steps": fce_steps, "embedding_dim": embedding_dim}
    return testing.build_learner(MatchingNetworks, ConvBlocks, task, config, SMALL), task


def _episode(task, seed=0, k_shot=2, n_query=3):
    return testing.tiny_episode(TaskSpec(task.n_way, k_shot, n_query, task.image_shape), seed=seed)


def _run(learner, episode, num_classes):
    state = learner.adapt(episode.support_images, episode.support_labels, num_classes)
    return learner.predict(state, episode.query_images).numpy()


def test_sample_config_declares_the_space_with_paper_defaults():
    hp = keras_tuner.HyperParameters()
    config = MatchingNetworks.sample_config(hp)
    assert config == {"fce": False, "fce_steps": 1, "embedding_dim": 0}
    assert sorted(hp.values) == ["matching/embedding_dim", "matching/fce", "matching/fce_steps"]
    hp.values.update({"matching/fce": True, "matching/fce_steps": 5})
    assert MatchingNetworks.sample_config(hp)["fce_steps"] == 5


@pytest.mark.parametrize("embedding_dim", [0, 64])
def test_attention_matches_a_hand_computation(embedding_dim):
    learner, task = _learner(embedding_dim=embedding_dim)
    episode = _episode(task)
    # A temperature other than the initial one, so the scale must really be applied.
    learner.log_temperature.assign(math.log(3.0))
    outputs = _run(learner, episode, task.n_way)

    support = learner.embed(episode.support_images).numpy().astype(np.float64)
    queries = learner.embed(episode.query_images).numpy().astype(np.float64)
    assert support.shape[1] == (embedding_dim or BACKBONE_WIDTH)
    support /= np.linalg.norm(support, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scores = 3.0 * queries @ support.T
    attention = np.exp(scores - scores.max(axis=1, keepdims=True))
    attention /= attention.sum(axis=1, keepdims=True)
    labels = episode.support_labels.numpy()
    probs = np.stack([attention[:, labels == k].sum(axis=1) for k in range(task.n_way)], axis=1)
    np.testing.assert_allclose(outputs, np.log(probs + LOG_EPSILON), atol=1e-5)


def test_predictions_do_not_depend_on_support_order_without_fce():
    learner, task = _learner()
    episode = _episode(task)
    order = np.random.default_rng(3).permutation(int(episode.support_labels.shape[0]))
    shuffled = episode._replace(
        support_images=tf.gather(episode.support_images, order),
        support_labels=tf.gather(episode.support_labels, order),
    )
    np.testing.assert_allclose(
        _run(learner, shuffled, task.n_way), _run(learner, episode, task.n_way), atol=1e-5
    )


@pytest.mark.parametrize("fce", [False, True])
def test_outputs_are_log_probabilities(fce):
    learner, task = _learner(fce=fce, fce_steps=3)
    episode = _episode(task, n_query=4)
    outputs = _run(learner, episode, task.n_way)
    assert outputs.shape == (task.n_way * 4, task.n_way)
    assert np.all(np.isfinite(outputs)) and np.all(outputs <= 1e-6)
    # Normalised up to the epsilon added to every class.
    np.testing.assert_allclose(
        tf.reduce_logsumexp(outputs, axis=1).numpy(), np.log1p(task.n_way * LOG_EPSILON), atol=1e-5
    )


def test_fce_changes_the_output_for_the_same_backbone():
    plain, task = _learner()
    config = {"fce": True, "fce_steps": 3, "embedding_dim": 0}
    fce = MatchingNetworks(plain.backbone, config, task)
    assert fce.units == BACKBONE_WIDTH
    episode = _episode(task)
    with_fce = _run(fce, episode, task.n_way)
    without = _run(plain, episode, task.n_way)
    # Same backbone, so the difference comes from the LSTMs alone.
    np.testing.assert_allclose(
        fce.embed(episode.query_images).numpy(), plain.embed(episode.query_images).numpy()
    )
    assert np.max(np.abs(with_fce - without)) > 1e-3


def test_fce_serves_unknown_sizes_with_a_tensor_class_count_and_compiles_with_xla():
    learner, task = _learner(fce=True, fce_steps=3, embedding_dim=64)
    image_spec = tf.TensorSpec([None, *task.image_shape], tf.float32)

    def few_shot(support_images, support_labels, query_images):
        num_classes = tf.reduce_max(support_labels) + 1
        state = learner.adapt(support_images, support_labels, num_classes)
        return learner.predict(state, query_images)

    episodes = [_episode(task, seed=0, k_shot=1, n_query=2), _episode(task, seed=1, k_shot=3)]
    expected = [_run(learner, episode, task.n_way) for episode in episodes]  # builds eagerly
    traced = tf.function(
        few_shot, input_signature=[image_spec, tf.TensorSpec([None], tf.int32), image_spec]
    )
    for episode, reference in zip(episodes, expected):
        outputs = traced(episode.support_images, episode.support_labels, episode.query_images)
        np.testing.assert_allclose(outputs.numpy(), reference, atol=1e-5)
    assert traced.experimental_get_tracing_count() == 1

    compiled = tf.function(
        lambda images, labels, queries: learner.predict(
            learner.adapt(images, labels, task.n_way), queries
        ),
        jit_compile=True,
    )
    episode = episodes[1]
    outputs = compiled(episode.support_images, episode.support_labels, episode.query_images)
    np.testing.assert_allclose(outputs.numpy(), expected[1], atol=1e-4)


def test_fce_learner_trains_and_exports(tmp_path):
    learner, task = _learner(fce=True, fce_steps=1, embedding_dim=64)
    testing.check_trains(learner, task, steps=6)
    # The shared conformance suite already reloads matching in a fresh process.
    testing.check_export_round_trip(learner, task, str(tmp_path), fresh_process=False)
