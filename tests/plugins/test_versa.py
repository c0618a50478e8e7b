"""VERSA: the predictive maths, deterministic evaluation, sampling, the ProtoNet
start, regression on sine waves and the shared conformance checks."""

from __future__ import annotations

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from metasearch import testing
from metasearch.api import DatasetOptions, TaskSpec, class_means
from metasearch.data.sinusoid import Sinusoid
from metasearch.plugins.protonet import PrototypicalNetworks, squared_distances
from metasearch.plugins.versa import (
    Versa,
    predictive_log_probs,
    regression_log_likelihood,
)
from metasearch.search_spaces.conv_blocks import ConvBlocks
from metasearch.search_spaces.mlp import MLP
from metasearch.training import MetaTrainer

SMALL_CONV = {"depth": 1, "filters": 8, "growth": 1.0}
SINE_MLP = {"depth": 2, "units": 40, "activation": "relu"}


def _classifier(**config):
    task = testing.tiny_task()
    return testing.build_learner(Versa, ConvBlocks(), task, config or None, SMALL_CONV), task


def _normalized_episode(task, seed=0):
    episode = testing.tiny_episode(task, seed)
    if task.is_regression:
        return episode
    return episode._replace(
        support_images=(episode.support_images - 0.5) / 0.3,
        query_images=(episode.query_images - 0.5) / 0.3,
    )


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def test_config_defaults_prefixes_and_validation():
    hp = keras_tuner.HyperParameters()
    config = Versa.sample_config(hp)
    assert config == {
        "embedding_dim": 0,
        "hidden_units": 128,
        "train_samples": 10,
        "eval_weights": "mean",
    }
    assert all(p.name.startswith("versa/") for p in hp.space)
    learner, _ = _classifier()
    assert learner.train_samples == 10 and learner.eval_weights == "mean"
    backbone = ConvBlocks().build(SMALL_CONV, (28, 28, 1))
    for bad in ({"eval_weights": "mode"}, {"train_samples": 3}, {"hidden_units": 7}):
        with pytest.raises(ValueError, match="versa"):
            Versa(backbone, bad, testing.tiny_task())


def test_predictive_maths_match_a_hand_computation():
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(4, 3)).astype(np.float32)
    weights = rng.normal(size=(5, 2, 3)).astype(np.float32)  # L=5 samples, 2 classes
    biases = rng.normal(size=(5, 2)).astype(np.float32)
    got = predictive_log_probs(tf.constant(queries), tf.constant(weights), tf.constant(biases))
    probs = np.zeros((4, 2))
    for s in range(5):
        logits = queries @ weights[s].T + biases[s]
        probs += np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got.numpy(), np.log(probs / 5), rtol=1e-5, atol=1e-5)
    # Confident, disagreeing samples: the log-space average must not underflow.
    far = predictive_log_probs(
        tf.constant([[1.0]]),
        tf.constant([[[200.0], [-200.0]], [[-200.0], [200.0]]]),
        tf.zeros([2, 2]),
    )
    np.testing.assert_allclose(far.numpy(), np.log([[0.5, 0.5]]), atol=1e-5)

    predictions = rng.normal(size=(3, 4, 2)).astype(np.float32)  # L=3, q=4, t=2
    targets = rng.normal(size=(4, 2)).astype(np.float32)
    sigma = np.array([0.5, 2.0], np.float32)
    got = regression_log_likelihood(tf.constant(predictions), tf.constant(targets), sigma)
    density = np.exp(-0.5 * ((targets - predictions) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    expected = np.log(np.prod(density, axis=-1).mean(axis=0))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_meta_train_loss_is_the_negative_predictive_log_likelihood_of_its_samples():
    learner, task = _classifier(train_samples=5)
    episode = _normalized_episode(task)
    learner.meta_train_loss(episode)  # builds the variables
    seed_state = learner.seed_generator.state.numpy()
    loss, metrics = learner.meta_train_loss(episode)
    # Replay the same draws by hand.
    learner.seed_generator.state.assign(seed_state)
    images = tf.concat([episode.support_images, episode.query_images], axis=0)
    features = learner.embed(images, training=True).numpy()
    n = episode.support_images.shape[0]
    state = learner.class_posterior(class_means(features[:n], episode.support_labels, 3))
    weights, biases = (t.numpy() for t in learner.head_samples(state, training=True))
    assert weights.shape == (5, 3, features.shape[1]) and biases.shape == (5, 3)
    labels = episode.query_labels.numpy()
    probs = np.mean(
        [np.exp(_log_softmax(features[n:] @ weights[s].T + biases[s])) for s in range(5)], axis=0
    )
    expected = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4, atol=1e-5)
    assert float(metrics["accuracy"]) == np.mean(probs.argmax(axis=1) == labels)


def test_zero_residual_starts_as_prototypical_networks():
    learner, task = _classifier()
    protonet = PrototypicalNetworks(learner.backbone, {}, task)
    episode = _normalized_episode(task)
    logits = learner.predict(
        learner.adapt(episode.support_images, episode.support_labels, 3), episode.query_images
    ).numpy()
    features = learner.embed(episode.query_images)
    prototypes = protonet.adapt(episode.support_images, episode.support_labels, 3)["prototypes"]
    proto_logits = -squared_distances(features, prototypes).numpy()
    np.testing.assert_array_equal(logits.argmax(axis=1), proto_logits.argmax(axis=1))
    # Same softmax: the mean head differs from -|x - p|^2 by |x|^2 per query only.
    np.testing.assert_allclose(logits, _log_softmax(proto_logits), rtol=1e-4, atol=1e-3)


def test_evaluation_is_deterministic_and_training_samples_differ():
    mean_learner, task = _classifier(eval_weights="mean")
    sampled, _ = _classifier(eval_weights="samples")
    episode = testing.tiny_episode(task)
    args = (episode.support_images, episode.support_labels, episode.query_images, 3)
    outputs = {}
    for name, learner in (("mean", mean_learner), ("samples", sampled)):
        trainer = MetaTrainer(learner, (0.5, 0.3), 1e-3, 2, jit_compile=False)
        trainer.build(episode)
        eager = trainer._adapt_step(*args).numpy()
        np.testing.assert_array_equal(eager, trainer._adapt_step(*args).numpy())
        np.testing.assert_allclose(trainer.adapt_step(*args).numpy(), eager, rtol=1e-5, atol=1e-5)
        outputs[name] = eager
    # Both start from the same seed, so only the evaluation head differs.
    assert not np.allclose(outputs["mean"], outputs["samples"], atol=1e-4)
    xla = MetaTrainer(sampled, (0.5, 0.3), 1e-3, 1, jit_compile=True).adapt_step(*args)
    np.testing.assert_allclose(xla.numpy(), outputs["samples"], rtol=1e-4, atol=1e-4)

    state = sampled.adapt(*args[:2], 3)
    draw = tf.function(lambda: sampled.head_samples(state, training=True)[0])
    first, second = draw().numpy(), draw().numpy()
    assert first.shape == (10, 3, sampled.feature_dim)
    assert not np.allclose(first, second)
    # The draws are the posterior: centred on the mean head, at its scale.
    z = (first - state["weight_mean"].numpy()) / state["weight_scale"].numpy()
    assert abs(z.mean()) < 0.2 and 0.8 < z.std() < 1.2


def test_regression_predicts_targets_of_any_width_and_learns_sine_waves():
    task = TaskSpec(1, 5, 7, (1,), kind="regression", target_dim=2)
    learner = testing.build_learner(Versa, MLP(), task, {}, SINE_MLP)
    x = tf.random.normal([5, 1])
    state = learner.adapt(x, tf.random.normal([5, 2]), 1)
    assert state["weight_mean"].shape == (40, 2) and state["bias_scale"].shape == (2,)
    assert learner.predict(state, tf.random.normal([7, 1])).shape == (7, 2)
    assert learner.predict(state, tf.random.normal([7, 1]), training=True).shape == (7, 2)

    keras.utils.set_random_seed(0)
    task = TaskSpec(1, 10, 10, (1,), kind="regression")
    learner = Versa(MLP().build(SINE_MLP, (1,)), {"train_samples": 1}, task)
    data = Sinusoid(DatasetOptions(None, 28, 0, {}))
    test = data.episodes("test", 10, 50, 0, 2, count=20).cache()
    trainer = MetaTrainer(learner, (0.0, 1.0), 3e-3, 300, jit_compile=False, meta_batch_size=4)
    trainer.build(next(iter(test)))
    before = trainer.evaluate(test, 1).mean()
    trainer.train(iter(data.episodes("train", 10, 10, 0, 0)), 300)
    after = trainer.evaluate(test, 1).mean()
    assert after < 0.7 * before, (before, after)


def test_conformance_with_sampled_evaluation(tmp_path):
    # test_conformance.py runs the defaults (with XLA) once the plugin is
    # registered; sampled evaluation under XLA is checked above.
    task = testing.tiny_task()
    config = {"eval_weights": "samples", "train_samples": 5, "embedding_dim": 64}
    learner = testing.build_learner(
        Versa, ConvBlocks(ConvBlocks.test_options()), task, config, SMALL_CONV
    )
    # The fixed-seed samples are ops of the graph: a reload reproduces them. The
    # TensorFlow-only process is tested for the defaults by test_conformance.py.
    testing.check_export_round_trip(learner, task, str(tmp_path), fresh_process=False)

    task = testing.tiny_task(kind="regression")
    learner = testing.build_learner(Versa, MLP(), task, {"eval_weights": "samples"})
    testing.check_export_round_trip(learner, task, str(tmp_path), fresh_process=False)
