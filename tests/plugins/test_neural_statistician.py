"""Tests for the `neural_statistician` plugin: the KL classifier, the ELBO, generation."""

from __future__ import annotations

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from metasearch import testing
from metasearch.api import TaskSpec
from metasearch.plugins.neural_statistician import NeuralStatistician, kl_logits
from metasearch.search_spaces.conv_blocks import ConvBlocks

SMALL = {"depth": 2, "filters": 8, "growth": 1.0}
# Small widths keep the tests fast; the defaults are covered by test_conformance.
CONFIG = {"context_dim": 16, "latent_dim": 8, "classification_weight": 1.0, "decoder_filters": 16}


def _learner(task=None, config=None, space_config=None):
    task = task or testing.tiny_task()
    learner = testing.build_learner(
        NeuralStatistician, ConvBlocks, task, config or CONFIG, space_config or SMALL
    )
    return learner, task


def _normalized_episode(task, seed=0):
    episode = testing.tiny_episode(task, seed=seed)
    return episode._replace(
        support_images=(episode.support_images - 0.5) / 0.3,
        query_images=(episode.query_images - 0.5) / 0.3,
    )


def _numpy_kl(mean_p, scale_p, mean_q, scale_q):
    """KL(N(p) || N(q)) of diagonal Gaussians, summed over the last axis."""
    return np.sum(
        np.log(scale_q / scale_p)
        + (scale_p**2 + (mean_p - mean_q) ** 2) / (2.0 * scale_q**2)
        - 0.5,
        axis=-1,
    )


def test_sample_config_declares_the_space_with_defaults():
    hp = keras_tuner.HyperParameters()
    config = NeuralStatistician.sample_config(hp)
    assert config == {
        "context_dim": 64,
        "latent_dim": 16,
        "classification_weight": 1.0,
        "decoder_filters": 32,
    }
    assert all(name.startswith("neural_statistician/") for name in hp.values)
    hp.values["neural_statistician/classification_weight"] = 0.0
    assert NeuralStatistician.sample_config(hp)["classification_weight"] == 0.0
    assert NeuralStatistician.GENERATIVE


def test_missing_keys_take_defaults_and_bad_values_are_rejected():
    task = testing.tiny_task()
    backbone = ConvBlocks().build(SMALL, task.image_shape)
    learner = NeuralStatistician(backbone, {"latent_dim": 8}, task)
    assert (learner.context_dim, learner.latent_dim, learner.classification_weight) == (64, 8, 1.0)
    for bad in (
        {"context_dim": 0},
        {"latent_dim": 2.5},
        {"classification_weight": -1.0},
        {"decoder_filters": "wide"},
    ):
        with pytest.raises(ValueError, match="neural_statistician"):
            NeuralStatistician(backbone, bad, task)


def test_kl_logits_match_a_closed_form_computation():
    rng = np.random.default_rng(0)
    query_mean, class_mean = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    query_scale, class_scale = rng.uniform(0.2, 2.0, (4, 3)), rng.uniform(0.2, 2.0, (5, 3))
    logits = kl_logits(
        *(tf.constant(v, tf.float32) for v in (query_mean, query_scale, class_mean, class_scale))
    ).numpy()
    expected = np.array(
        [
            [
                -_numpy_kl(query_mean[i], query_scale[i], class_mean[k], class_scale[k])
                for k in range(5)
            ]
            for i in range(4)
        ]
    )
    assert logits.shape == (4, 5)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert np.all(logits <= 1e-6)


def test_predict_is_the_kl_of_query_posteriors_to_pooled_class_posteriors():
    learner, task = _learner()
    episode = _normalized_episode(TaskSpec(3, 2, 2, task.image_shape))
    state = learner.adapt(episode.support_images, episode.support_labels, 3)
    logits = learner.predict(state, episode.query_images).numpy()

    # By hand: mean-pool each class's support features, then the statistic network.
    support = learner.embed(episode.support_images).numpy()
    labels = episode.support_labels.numpy()
    pooled = np.stack([support[labels == k].mean(axis=0) for k in range(3)])
    classes = learner.context_posterior(tf.constant(pooled))
    queries = learner.context_posterior(learner.embed(episode.query_images))
    np.testing.assert_allclose(state["context_mean"].numpy(), classes.loc.numpy(), atol=1e-5)
    expected = -_numpy_kl(
        queries.loc.numpy()[:, None],
        queries.scale.numpy()[:, None],
        classes.loc.numpy()[None],
        classes.scale.numpy()[None],
    )
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    # Deterministic outside training: no sampling in adapt or predict.
    again = learner.predict(
        learner.adapt(episode.support_images, episode.support_labels, 3), episode.query_images
    )
    np.testing.assert_array_equal(logits, again.numpy())


def test_a_query_equal_to_a_support_image_is_its_class_at_initialisation():
    # With one shot, q(c|D_k) and q(c|{x}) are the same network on the same
    # features, so KL is 0 for the own class and positive for the others.
    task = TaskSpec(5, 1, 1, (28, 28, 1))
    learner, _ = _learner(task)
    episode = _normalized_episode(task, seed=2)
    order = np.array([3, 0, 4, 1, 2])
    queries = tf.gather(episode.support_images, order)
    state = learner.adapt(episode.support_images, episode.support_labels, tf.constant(5))
    logits = learner.predict(state, queries).numpy()
    np.testing.assert_array_equal(np.argmax(logits, axis=1), episode.support_labels.numpy()[order])
    np.testing.assert_allclose(logits[np.arange(5), order], 0.0, atol=1e-4)
    assert np.all(np.delete(logits, order + 5 * np.arange(5)) < -1e-3)


def test_generate_shapes_seeds_and_a_tensor_sample_count():
    learner, task = _learner()
    support = _normalized_episode(task).support_images[:1]
    first = learner.generate(support, 4, tf.constant([1, 2], tf.int32)).numpy()
    assert first.shape == (4, *task.image_shape)
    assert np.all(np.isfinite(first))
    same = learner.generate(support, 4, tf.constant([1, 2], tf.int32)).numpy()
    np.testing.assert_array_equal(first, same)
    other = learner.generate(support, 4, tf.constant([7, 9], tf.int32)).numpy()
    assert np.max(np.abs(first - other)) > 1e-4
    # Samples of one call differ from each other (each has its own z).
    assert np.max(np.abs(first[0] - first[1])) > 1e-5

    sample = tf.function(
        learner.generate,
        input_signature=[
            tf.TensorSpec([None, *task.image_shape], tf.float32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([2], tf.int32),
        ],
    )
    traced = sample(support, tf.constant(4), tf.constant([1, 2], tf.int32)).numpy()
    np.testing.assert_allclose(traced, first, atol=1e-5)
    assert sample(support, tf.constant(2), tf.constant([1, 2], tf.int32)).shape[0] == 2
    assert sample.experimental_get_tracing_count() == 1


def test_training_samples_differ_between_steps():
    learner, task = _learner()
    episode = _normalized_episode(task)
    _, first = learner.meta_train_loss(episode)
    _, second = learner.meta_train_loss(episode)
    # Only the reparameterised samples differ (batch norm uses batch statistics).
    assert float(first["neg_elbo_per_pixel"]) != float(second["neg_elbo_per_pixel"])
    assert float(first["cross_entropy"]) == pytest.approx(float(second["cross_entropy"]))


def test_elbo_kl_terms_are_non_negative_and_reconstruction_improves():
    keras.utils.set_random_seed(0)
    learner, task = _learner(config={**CONFIG, "classification_weight": 0.0})
    episode = _normalized_episode(TaskSpec(2, 2, 2, task.image_shape))
    images = tf.concat([episode.support_images, episode.query_images], axis=0)
    labels = tf.concat([episode.support_labels, episode.query_labels], axis=0)

    def deterministic_terms():
        features = learner.embed(images, training=False)
        return learner.elbo_terms(images, features, labels, 2, training=False)

    optimizer = keras.optimizers.Adam(3e-3)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss, metrics = learner.meta_train_loss(episode)
        variables = learner.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return metrics

    before = deterministic_terms()
    history = [step() for _ in range(30)]
    after = deterministic_terms()
    for metrics in history:
        assert float(metrics["kl_z_per_item"]) >= 0.0
        assert float(metrics["kl_c_per_set"]) >= 0.0
    for terms in (before, after):
        assert float(terms["kl_z"]) >= 0.0 and float(terms["kl_c"]) >= 0.0
    assert float(after["log_likelihood"]) > float(before["log_likelihood"])
    assert float(after["squared_error"]) < 0.85 * float(before["squared_error"])
    recent = np.mean([float(m["reconstruction_per_pixel"]) for m in history[-5:]])
    assert recent < np.mean([float(m["reconstruction_per_pixel"]) for m in history[:5]])


# tests/test_conformance.py runs the shared checks at 28x28 (XLA included); the
# decoder's 84x84x3 path (upsampling past the size, then a resize) is checked here.
@pytest.mark.slow
def test_traces_runs_and_generates_at_84x84x3():
    task = testing.tiny_task(84, 3)
    learner, _ = _learner(task, space_config={"depth": 1, "filters": 16, "growth": 1.0})
    testing.check_traces_with_variable_batch(learner, task)
    testing.check_runs(learner, task)
    samples = learner.generate(
        _normalized_episode(task).support_images[:2], 3, tf.constant([0, 1], tf.int32)
    )
    assert samples.shape == (3, 84, 84, 3)
