"""What is specific to meta_critic: the critic's effect on adaptation, its task encoder, its training."""

from __future__ import annotations

import dataclasses

import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from metasearch import testing
from metasearch.api import DatasetOptions
from metasearch.data import episodes
from metasearch.data.sinusoid import Sinusoid
from metasearch.plugins.maml import MAML
from metasearch.plugins.meta_critic import MetaCritic
from metasearch.search_spaces.conv_blocks import ConvBlocks
from metasearch.search_spaces.mlp import MLP
from metasearch.training import MetaTrainer

SMALL_CONV = {"depth": 1, "filters": 8, "growth": 1.0}
MLP_CONFIG = {"depth": 2, "units": 40, "activation": "relu"}


def _config(**overrides):
    config = {
        "inner_steps": 2,
        "eval_inner_steps": 2,
        "inner_learning_rate": 0.03,
        "batch_norm": "transductive",
        "head_init": "learned",
        "first_order": False,
    }
    config.update(overrides)
    return config


def _classifier(plugin=MetaCritic, **overrides):
    task = testing.tiny_task()
    learner = testing.build_learner(plugin, ConvBlocks(), task, _config(**overrides), SMALL_CONV)
    return learner, task


def _regressor(plugin=MetaCritic, **overrides):
    task = testing.tiny_task(kind="regression")
    return testing.build_learner(plugin, MLP(), task, _config(**overrides), MLP_CONFIG), task


def _critic_variables(learner):
    return [v for v in learner.trainable_variables if "mvn_" in v.path or "taen_" in v.path]


def _set_critic_output(learner, value):
    learner.critic.out.assign(np.full(learner.critic.out.shape, value, np.float32))


def test_config_is_prefixed_defaults_fill_in_and_unknown_values_fail():
    hp = keras_tuner.HyperParameters()
    config = MetaCritic.sample_config(hp)
    assert all(p.name.startswith("meta_critic/") for p in hp.space)
    assert {"critic_units", "embedding_dim", "support_loss_weight", "value_weight"} <= set(config)
    backbone = MLP().build(MLP_CONFIG, (1,))
    task = testing.tiny_task(kind="regression")
    learner = MetaCritic(backbone, {}, task)
    # Regression has no prototypes: the default proto head becomes the learned one.
    assert learner.head_init == "learned" and learner.critic_units == 64
    with pytest.raises(ValueError, match="critic_units"):
        MetaCritic(backbone, {"critic_units": 7}, task)
    with pytest.raises(ValueError, match="weights"):
        MetaCritic(backbone, {"value_weight": -1.0}, task)


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_the_critic_changes_the_adaptation_and_a_silent_critic_is_maml(kind):
    build = _classifier if kind == "classification" else _regressor
    maml, task = build(MAML)
    critic, _ = build(MetaCritic)
    # Same actor: copy MAML's backbone and head into the meta-critic.
    for target, source in zip(
        [*critic.backbone.weights, critic.head_kernel, critic.head_bias],
        [*maml.backbone.weights, maml.head_kernel, maml.head_bias],
    ):
        target.assign(source)
    episode = testing.tiny_episode(task)
    n = 1 if task.is_regression else task.n_way

    def fast(learner):
        state = learner.adapt(episode.support_images, episode.support_labels, n)
        return np.concatenate([np.ravel(w.numpy()) for w in state["backbone"] + state["head"]])

    reference = fast(maml)
    _set_critic_output(critic, 0.0)
    np.testing.assert_allclose(fast(critic), reference, atol=1e-6)
    _set_critic_output(critic, 0.05)
    assert np.max(np.abs(fast(critic) - reference)) > 1e-3


def _support_permutation_pair(learner, task, n):
    episode = testing.tiny_episode(task, seed=3)
    order = np.random.default_rng(0).permutation(int(episode.support_images.shape[0]))
    shuffled = (tf.gather(episode.support_images, order), tf.gather(episode.support_labels, order))
    first = learner.task_context(episode.support_images, episode.support_labels, n, False)
    second = learner.task_context(*shuffled, n, False)
    return first, second, order


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_task_context_ignores_the_order_of_the_support_points(kind):
    if kind == "classification":
        learner, task = _classifier(head_init="proto")
        # Two shots per class, so pooling within a class is exercised too.
        task = dataclasses.replace(task, k_shot=2)
    else:
        learner, task = _regressor()
    n = 1 if task.is_regression else task.n_way
    # A larger TAEN output layer, so z is far from zero and differences show.
    learner.encoder.out.assign(learner.encoder.out * 100.0)
    first, second, order = _support_permutation_pair(learner, task, n)
    assert np.abs(first["z"].numpy()).max() > 1e-2
    np.testing.assert_allclose(first["z"].numpy(), second["z"].numpy(), atol=1e-5)
    if not task.is_regression:
        assert first["z_class"].shape == (task.n_way, learner.embedding_dim)
        np.testing.assert_allclose(first["z_class"].numpy(), second["z_class"].numpy(), atol=1e-5)
        # Classes differ, so their codes do.
        assert not np.allclose(first["z_class"][0].numpy(), first["z_class"][1].numpy())
    # Per-point coefficients follow their points.
    np.testing.assert_allclose(
        tf.gather(first["coefficients"], order).numpy(), second["coefficients"].numpy(), atol=1e-5
    )


def _critic_gradients(learner, task):
    episode = testing.tiny_episode(task)
    trainer = MetaTrainer(learner, testing.task_normalization(task), 1e-3, 1, jit_compile=False)
    trainer.build(episode)
    variables = _critic_variables(learner)
    with tf.GradientTape() as tape:
        loss, metrics = learner.meta_train_loss(trainer._normalize(episode))
    return {v.path: g for v, g in zip(variables, tape.gradient(loss, variables))}, metrics


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_the_query_loss_teaches_the_critic_through_the_inner_loop(kind):
    build = _classifier if kind == "classification" else _regressor
    # No value regression: any gradient on the critic comes through the
    # critic-driven inner steps (second order).
    learner, task = build(value_weight=0.0)
    grads, metrics = _critic_gradients(learner, task)
    assert {"critic_error", "mse" if task.is_regression else "accuracy"} <= set(metrics)
    for name in ("mvn_out", "mvn_in_features", "taen_out"):
        (key,) = [k for k in grads if k.endswith(name)]
        assert grads[key] is not None and np.any(grads[key].numpy() != 0), key
    # First order drops exactly that path.
    learner, task = build(value_weight=0.0, first_order=True)
    grads, _ = _critic_gradients(learner, task)
    assert all(g is None or not np.any(g.numpy()) for g in grads.values())


def test_shapes_for_other_numbers_of_classes_and_for_regression():
    learner, task = _classifier(head_init="zero")
    five_way = testing.tiny_episode(dataclasses.replace(task, n_way=5, k_shot=2))
    state = learner.adapt(five_way.support_images, five_way.support_labels, 5)
    assert learner.predict(state, five_way.query_images).shape == (10, 5)
    context = learner._last_context
    assert context["z_class"].shape == (5, learner.embedding_dim)
    assert context["coefficients"].shape == (10, 3)

    regressor, rtask = _regressor()
    episode = testing.tiny_episode(rtask)
    state = regressor.adapt(episode.support_images, episode.support_labels, 1)
    assert regressor.predict(state, episode.query_images).shape == (rtask.n_query, 1)
    outputs = regressor.predict(state, episode.support_images)
    coefficients = regressor._last_context["coefficients"]
    assert regressor.values(outputs, episode.support_labels, coefficients).shape == (rtask.k_shot,)


def test_value_is_minus_the_learned_loss():
    learner, task = _regressor(support_loss_weight=1.0)
    outputs = tf.constant([[1.0], [2.0]])
    labels = tf.constant([[0.0], [4.0]])
    coefficients = tf.constant([[0.5, 2.0, 1.0], [0.0, -1.0, 0.0]])
    # (1 + c0) r^2 + c1 r + c2 for residuals 1 and -2.
    expected = -np.array([1.5 * 1 + 2.0 * 1 + 1.0, 1.0 * 4 + 2.0])
    np.testing.assert_allclose(learner.values(outputs, labels, coefficients), expected, rtol=1e-6)


def test_short_training_on_sine_tasks_lowers_the_critic_error():
    learner, task = _regressor(inner_steps=1, eval_inner_steps=1)
    learner.task = task = dataclasses.replace(task, k_shot=10, n_query=10)
    data = Sinusoid(DatasetOptions(None, 28, 0, {}))
    fixed = list(data.episodes("val", 10, 10, 0, episodes.TRAIN_STREAM, count=8))

    def critic_error():
        return float(np.mean([learner.meta_train_loss(e)[1]["critic_error"] for e in fixed]))

    trainer = MetaTrainer(learner, (0.0, 1.0), 3e-3, 60, jit_compile=False, meta_batch_size=4)
    stream = data.episodes("train", 10, 10, 0, episodes.TRAIN_STREAM)
    trainer.build(fixed[0])
    before = critic_error()
    trainer.train(iter(stream), 60, check_every=60)
    assert critic_error() < 0.7 * before
