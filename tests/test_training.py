import numpy as np
import pytest
import tensorflow as tf

from metasearch import testing
from metasearch.api import class_means
from metasearch.plugins.protonet import PrototypicalNetworks, squared_distances
from metasearch.search_spaces.conv_blocks import ConvBlocks
from metasearch.training import DivergedError, MetaTrainer, resolve_jit_compile


def test_auto_jit_picks_graph_mode_on_cpu_and_flags_override():
    assert resolve_jit_compile("auto") == bool(tf.config.list_physical_devices("GPU"))
    assert resolve_jit_compile("true") is True
    assert resolve_jit_compile("false") is False
    with pytest.raises(ValueError):
        resolve_jit_compile("sometimes")


def _small_protonet():
    task = testing.tiny_task()
    space_config = {"depth": 3, "filters": 8, "growth": 1.0}
    return task, testing.build_learner(
        PrototypicalNetworks, ConvBlocks, task, space_config=space_config
    )


def test_trainer_steps_are_compiled_with_the_requested_mode():
    task, learner = _small_protonet()
    for jit in (True, False):
        trainer = MetaTrainer(learner, (0.5, 0.3), 1e-3, 5, jit_compile=jit)
        assert trainer.train_step._jit_compile is jit
        assert trainer.eval_step._jit_compile is jit
        assert trainer.adapt_step._jit_compile is jit


def test_non_finite_loss_raises_diverged():
    task, learner = _small_protonet()
    episode = testing.tiny_episode(task)
    poisoned = episode._replace(support_images=episode.support_images * np.nan)
    trainer = MetaTrainer(learner, (0.5, 0.3), 1e-3, 5, jit_compile=False)
    trainer.build(episode)
    dataset = tf.data.Dataset.from_tensors(poisoned).repeat()
    with pytest.raises(DivergedError, match="nan"):
        trainer.train(dataset, 3, check_every=1)


def test_prototypes_and_distances():
    embeddings = tf.constant([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    labels = tf.constant([0, 0, 1])
    prototypes = class_means(embeddings, labels, 2)
    np.testing.assert_allclose(prototypes, [[1.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(
        squared_distances(tf.constant([[1.0, 1.0]]), prototypes), [[1.0, 10.0]], atol=1e-6
    )
    # Works with a tensor class count, as inside the exported model.
    np.testing.assert_allclose(class_means(embeddings, labels, tf.constant(2)), prototypes)


def test_train_for_spends_the_time_budget_and_decays_the_learning_rate():
    task, learner = _small_protonet()
    episode = testing.tiny_episode(task)
    trainer = MetaTrainer(learner, (0.5, 0.3), 1e-2, None, jit_compile=False)
    trainer.build(episode)
    # Trace first: on a loaded machine tracing alone can outlast the budget, and
    # the rate is set between chunks, so one-step chunks see it decay.
    trainer.train_step(episode)
    result = trainer.train_for(tf.data.Dataset.from_tensors(episode).repeat(), seconds=1.5, chunk=1)
    assert result["train_seconds"] >= 1.5 and result["steps"] >= 5
    assert float(trainer.optimizer.learning_rate) < 1e-2 * 0.5


def test_train_reads_an_iterator_on_from_where_it_is():
    task, learner = _small_protonet()
    trainer = MetaTrainer(learner, (0.5, 0.3), 1e-3, 10, jit_compile=False)
    episode = testing.tiny_episode(task)
    trainer.build(episode)
    iterator = iter(tf.data.Dataset.from_tensors(episode).repeat(5))
    trainer.train(iterator, 3)
    trainer.train(iterator, 3)  # only two episodes left
    assert next(iterator, None) is None


def test_a_meta_batch_step_averages_the_loss_over_its_episodes_and_consumes_them():
    task = testing.tiny_task()
    learner = testing.build_learner(
        PrototypicalNetworks,
        ConvBlocks,
        task,
        space_config={"depth": 2, "filters": 8, "growth": 1.0},
    )
    episodes = [testing.tiny_episode(task, seed=s) for s in range(4)]
    single = MetaTrainer(learner, (0.5, 0.3), 0.0, 4, jit_compile=False)
    single.build(episodes[0])
    losses = [float(single.train_step(e)[0]) for e in episodes[:2]]
    batched = MetaTrainer(learner, (0.5, 0.3), 0.0, 4, jit_compile=False, meta_batch_size=2)
    batched.build(episodes[0])
    loss, metrics = batched.train_step(tuple(episodes[:2]))
    # Learning rate 0: the weights stay put, so the losses are comparable.
    np.testing.assert_allclose(float(loss), np.mean(losses), rtol=1e-5)
    assert set(metrics) == {"accuracy"}
    iterator = iter(episodes)
    summary = batched.train(iterator, steps=2)
    assert next(iterator, None) is None and np.isfinite(summary["train_loss"])
    # A dataset is read for steps x meta_batch_size episodes too.
    before = int(batched.optimizer.iterations)
    batched.train(tf.data.Dataset.from_tensor_slices(episodes_tensors(episodes)), steps=2)
    assert int(batched.optimizer.iterations) == before + 2
    with pytest.raises(ValueError, match="meta_batch_size"):
        MetaTrainer(learner, (0.5, 0.3), 1e-3, 1, jit_compile=False, meta_batch_size=0)


def episodes_tensors(episodes):
    """A list of same-shaped episodes as one nest of stacked tensors."""
    return tf.nest.map_structure(lambda *parts: tf.stack(parts), *episodes)


def test_a_restored_checkpoint_trains_on_exactly_as_the_uninterrupted_trainer(tmp_path):
    import keras

    task = testing.tiny_task()
    episodes = [testing.tiny_episode(task, seed=s) for s in range(8)]

    def fresh_trainer():
        keras.backend.clear_session()  # the same variable names, as each trial gets
        _, learner = _small_protonet()
        trainer = MetaTrainer(learner, (0.5, 0.3), 1e-2, 8, jit_compile=False)
        trainer.build(episodes[0])
        return trainer

    def values(trainer):
        return [v.numpy() for group in trainer.checkpoint_variables().values() for v in group]

    whole = fresh_trainer()
    whole.train(iter(episodes), 8, check_every=1)
    expected = values(whole)

    path = str(tmp_path / "checkpoint.npz")
    killed = fresh_trainer()

    def save(state):
        state.extra = {"trial": "7"}
        killed.save_checkpoint(path, state)

    killed.train(iter(episodes), 3, check_every=1, on_checkpoint=save, checkpoint_seconds=1e-9)
    at_kill = values(killed)

    resumed = fresh_trainer()
    state = resumed.restore_checkpoint(path)
    assert (state.step, state.extra, len(state.losses)) == (3, {"trial": "7"}, 3)
    assert int(resumed.optimizer.iterations) == 3  # the cosine decay goes on from step 3
    for restored, saved in zip(values(resumed), at_kill, strict=True):
        np.testing.assert_array_equal(restored, saved)
    summary = resumed.train(iter(episodes[3:]), 8, check_every=1, resume=state)
    assert int(resumed.optimizer.iterations) == 8
    for got, want in zip(values(resumed), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert summary["train_seconds"] >= state.train_seconds
    assert np.isfinite(summary["train_loss"])
