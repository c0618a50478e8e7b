"""What is specific to the MAML family: order, step sizes, heads, batch norm, export."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from metasearch import testing
from metasearch.export import export_learner
from metasearch.plugins.maml import ANIL, FOMAML, MAML, MetaSGD
from metasearch.search_spaces.conv_blocks import ConvBlocks
from metasearch.search_spaces.mlp import MLP
from metasearch.training import MetaTrainer

SMALL_CONV = {"depth": 2, "filters": 8, "growth": 1.0}


def _config(**overrides):
    config = {
        "inner_steps": 2,
        "eval_inner_steps": 3,
        "inner_learning_rate": 0.1,
        "batch_norm": "transductive",
        "head_init": "learned",
    }
    config.update(overrides)
    return config


def _classifier(plugin=MAML, **overrides):
    task = testing.tiny_task()
    return testing.build_learner(plugin, ConvBlocks(), task, _config(**overrides), SMALL_CONV)


def _outer_gradients(learner, task):
    episode = testing.tiny_episode(task)
    trainer = MetaTrainer(learner, (0.5, 0.3), 1e-3, 1, jit_compile=False)
    trainer.build(episode)
    with tf.GradientTape() as tape:
        loss, _ = learner.meta_train_loss(trainer._normalize(episode))
    return dict(
        zip(
            [v.path for v in learner.trainable_variables],
            tape.gradient(loss, learner.trainable_variables),
        )
    )


def test_hyperparameters_are_declared_per_plugin_and_fomaml_fixes_the_order():
    import keras_tuner

    for plugin in (MAML, FOMAML, MetaSGD, ANIL):
        hp = keras_tuner.HyperParameters()
        config = plugin.sample_config(hp)
        names = {p.name for p in hp.space}
        assert all(name.startswith(plugin.NAME + "/") for name in names)
        assert {"inner_steps", "inner_learning_rate", "batch_norm", "head_init"} <= set(config)
        assert ("first_order" in config) == (plugin is not FOMAML)
    assert FOMAML(
        ConvBlocks().build(SMALL_CONV, (28, 28, 1)), _config(), testing.tiny_task()
    ).first_order


def test_missing_settings_are_the_declared_defaults_written_once_in_sample_config():
    import keras_tuner

    assert MAML.default_config() == MAML.sample_config(keras_tuner.HyperParameters())
    backbone = ConvBlocks().build(SMALL_CONV, (28, 28, 1))
    learner = MAML(backbone, {"inner_steps": 3}, testing.tiny_task())
    assert learner.config == {**MAML.default_config(), "inner_steps": 3}
    assert (learner.inner_steps, learner.eval_inner_steps) == (3, 3)
    assert learner.inner_learning_rate == MAML.default_config()["inner_learning_rate"]


def test_second_and_first_order_outer_gradients_differ():
    task = testing.tiny_task()
    second = _outer_gradients(_classifier(MAML), task)
    first = _outer_gradients(_classifier(MAML, first_order=True), task)
    key = next(k for k in second if "kernel" in k and "block0" in k)
    assert not np.allclose(second[key].numpy(), first[key].numpy(), atol=1e-7)


def test_adaptation_changes_predictions_and_more_steps_fit_the_support_set_better():
    task = testing.tiny_task()
    learner = _classifier(MAML, inner_learning_rate=0.01)
    episode = testing.tiny_episode(task)
    losses = []
    for steps in (0, 1, 4):
        learner.eval_inner_steps = steps
        state = learner.adapt(episode.support_images, episode.support_labels, task.n_way)
        logits = learner.predict(state, episode.support_images)
        losses.append(
            float(
                tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(episode.support_labels, logits)
                )
            )
        )
    assert losses[0] > losses[1] > losses[2]


def test_metasgd_learns_its_step_sizes_and_anil_adapts_only_the_head():
    task = testing.tiny_task()
    grads = _outer_gradients(_classifier(MetaSGD), task)
    step_sizes = [k for k in grads if "step_size" in k]
    assert step_sizes and all(np.any(grads[k].numpy() != 0) for k in step_sizes)

    anil = _classifier(ANIL)
    episode = testing.tiny_episode(task)
    state = anil.adapt(episode.support_images, episode.support_labels, task.n_way)
    assert state["backbone"] == [] and len(state["head"]) == 2
    assert not np.allclose(state["head"][0].numpy(), anil.head_kernel.numpy()[:, : task.n_way])


@pytest.mark.parametrize("head_init", ["zero", "proto"])
def test_per_task_heads_serve_any_number_of_classes(head_init):
    learner = _classifier(MAML, head_init=head_init)
    task = testing.tiny_task()
    five_way = testing.tiny_episode(dataclasses.replace(task, n_way=5))
    state = learner.adapt(five_way.support_images, five_way.support_labels, 5)
    assert learner.predict(state, five_way.query_images).shape == (10, 5)


def test_proto_head_starts_as_a_prototypical_network():
    task = testing.tiny_task()
    learner = _classifier(MAML, head_init="proto")
    learner.eval_inner_steps = 0
    episode = testing.tiny_episode(task)
    logits = learner.predict(
        learner.adapt(episode.support_images, episode.support_labels, task.n_way),
        episode.query_images,
    ).numpy()
    support = learner.embed(episode.support_images).numpy()
    query = learner.embed(episode.query_images).numpy()
    labels = episode.support_labels.numpy()
    prototypes = np.stack([support[labels == k].mean(0) for k in range(task.n_way)])
    distances = ((query[:, None] - prototypes[None]) ** 2).sum(-1)
    # -|q - p|^2 = 2 q.p - |p|^2 - |q|^2: the same softmax, shifted per row.
    shifted = logits - (-distances)
    np.testing.assert_allclose(shifted - shifted[:, :1], 0.0, atol=1e-2)


def test_learned_head_refuses_more_classes_than_it_has_in_an_export():
    learner = _classifier(MAML)
    task = testing.tiny_task()
    episode = testing.tiny_episode(task)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
    def adapt(labels):
        return learner.adapt(episode.support_images, labels, tf.reduce_max(labels) + 1)["head"][0]

    assert adapt(episode.support_labels).shape[-1] == task.n_way
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 3 classes"):
        adapt(tf.constant([0, 1, 5]))


def test_per_step_batch_norm_keeps_statistics_per_step_and_uses_them_when_adapting():
    task = testing.tiny_task()
    learner = _classifier(MAML, batch_norm="per_step")
    # One copy of scale/bias and statistics per later pass (steps 1 and the query pass).
    assert len(learner.step_bn_params) == len(learner.step_bn_stats) == 2
    episode = testing.tiny_episode(task)
    trainer = MetaTrainer(learner, (0.5, 0.3), 1e-3, 3, jit_compile=False)
    trainer.build(episode)
    before = [v.numpy().copy() for v in learner.step_bn_stats[-1]]
    trainer.train_step(episode)
    after = [v.numpy() for v in learner.step_bn_stats[-1]]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))
    # Evaluation uses running statistics: one query image alone gets the same
    # logits as inside a batch (transductive batch norm would not).
    state = learner.adapt(episode.support_images, episode.support_labels, task.n_way)
    batch = learner.predict(state, episode.query_images).numpy()
    single = learner.predict(state, episode.query_images[:1]).numpy()
    np.testing.assert_allclose(single, batch[:1], atol=1e-4)


def test_regression_learners_fit_a_sine_after_adaptation():
    task = testing.tiny_task(kind="regression")
    learner = testing.build_learner(
        MAML, MLP(), task, _config(inner_learning_rate=0.01, inner_steps=1, eval_inner_steps=5)
    )
    episode = testing.tiny_episode(task)
    mse = []
    for steps in (0, 5):
        learner.eval_inner_steps = steps
        state = learner.adapt(episode.support_images, episode.support_labels, 1)
        predictions = learner.predict(state, episode.support_images)
        assert predictions.shape == (task.k_shot, 1)
        mse.append(float(tf.reduce_mean((predictions - episode.support_labels) ** 2)))
    assert mse[1] < mse[0]


@pytest.mark.slow  # seconds of processes or XLA: in CI, not the quick loop
def test_the_exported_learner_adapts_inside_the_saved_model_in_a_tensorflow_only_process(
    tmp_path,
):
    task = testing.tiny_task()
    learner = _classifier(MAML, inner_learning_rate=0.03, eval_inner_steps=3)
    episode = testing.tiny_episode(task, seed=4)
    trainer = MetaTrainer(learner, (0.5, 0.3), 1e-3, 2, jit_compile=False)
    trainer.build(episode)
    trainer.train_step(episode)
    adapted = trainer.adapt_step(
        episode.support_images, episode.support_labels, episode.query_images, task.n_way
    ).numpy()
    learner.eval_inner_steps = 0
    unadapted = MetaTrainer(learner, (0.5, 0.3), 1e-3, 2, jit_compile=False).adapt_step(
        episode.support_images, episode.support_labels, episode.query_images, task.n_way
    )
    learner.eval_inner_steps = 3
    # The inner loop matters here, so matching logits mean the SavedModel ran it.
    assert np.max(np.abs(adapted - unadapted.numpy())) > 1e-2
    path = export_learner(
        learner, str(tmp_path / "maml"), 28, 1, (0.5, 0.3), metadata={"test": True}
    )
    logits, _ = testing.run_in_fresh_process(
        path,
        "few_shot",
        "logits",
        {
            "support_images": episode.support_images.numpy(),
            "support_labels": episode.support_labels.numpy(),
            "query_images": episode.query_images.numpy(),
        },
        str(tmp_path),
    )
    np.testing.assert_allclose(logits, adapted, atol=1e-4)
