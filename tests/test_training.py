import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from metasearch import testing
from metasearch.api import class_means
from metasearch.plugins.protonet import PrototypicalNetworks, squared_distances
from metasearch.search_spaces.conv_blocks import ConvBlocks
from metasearch.training import (
    EMBED_BATCH,
    DivergedError,
    MetaTrainer,
    TrainingState,
    resolve_jit_compile,
)


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


def test_nan_weights_raise_diverged_even_when_the_loss_stays_finite():
    # On CPU, ReLU and max pooling turn NaN activations into numbers: a NaN weight
    # can leave the loss finite while every step's gradients are NaN.
    task, learner = _small_protonet()
    episode = testing.tiny_episode(task)
    trainer = MetaTrainer(learner, (0.5, 0.3), 1e-3, 5, jit_compile=False)
    trainer.build(episode)
    kernel = learner.backbone.layers[1].kernel
    kernel.assign(tf.fill(kernel.shape, float("nan")))
    loss, _ = tf.function(learner.meta_train_loss)(episode)
    assert np.isfinite(float(loss))
    dataset = tf.data.Dataset.from_tensors(episode).repeat()
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


def test_training_for_seconds_stops_at_them_and_goes_on_from_a_checkpoints_seconds():
    task, learner = _small_protonet()
    episode = testing.tiny_episode(task)
    trainer = MetaTrainer(learner, (0.5, 0.3), 1e-2, None, jit_compile=False)
    trainer.build(episode)
    trainer.train_step(episode)  # traced before the clock starts
    stream = tf.data.Dataset.from_tensors(episode).repeat()
    chunks, rates = [], []

    def on_chunk(chunk):
        chunks.append(chunk)
        rates.append(float(trainer.optimizer.learning_rate))

    summary = trainer.train(stream, None, check_every=1, on_chunk=on_chunk, seconds=0.6)
    assert summary["train_seconds"] >= 0.6 and summary["steps"] == len(chunks) >= 3
    seconds = [chunk.train_seconds for chunk in chunks]
    assert seconds == sorted(seconds) and seconds[-2] < 0.6 <= seconds[-1]
    assert rates == sorted(rates, reverse=True) and rates[0] > rates[-1]

    # A checkpoint taken after 0.5 of 0.6 s: the rest is about 0.1 s, the rate near its floor.
    chunks.clear(), rates.clear()
    state = TrainingState(step=40, train_seconds=0.5, losses=[1.0] * 40, metrics=[0.5] * 40)
    resumed = trainer.train(
        stream, None, check_every=1, on_chunk=on_chunk, resume=state, seconds=0.6
    )
    assert chunks[0].step == 41 and chunks[0].train_seconds > 0.5
    assert resumed["steps"] == 40 + len(chunks) and resumed["train_seconds"] >= 0.6
    # cosine at 0.5 of 0.6 s: 0.05 + 0.95 * 0.5 * (1 + cos(pi * 5 / 6)) = 0.1136 of the rate
    assert rates[0] <= 1e-2 * 0.114


def test_train_takes_steps_or_seconds_and_seconds_need_a_time_schedule():
    task, learner = _small_protonet()
    episode = testing.tiny_episode(task)
    stream = tf.data.Dataset.from_tensors(episode).repeat()
    by_time = MetaTrainer(learner, (0.5, 0.3), 1e-2, None, jit_compile=False)
    with pytest.raises(ValueError, match="either steps or seconds"):
        by_time.train(stream, 3, seconds=1.0)
    with pytest.raises(ValueError, match="either steps or seconds"):
        by_time.train(stream, None)
    by_steps = MetaTrainer(learner, (0.5, 0.3), 1e-2, 10, jit_compile=False)
    with pytest.raises(ValueError, match="total_steps=None"):
        by_steps.train(stream, None, seconds=1.0)


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


def _evaluation_stream(task, count=8):
    from metasearch.api import ClassSet
    from metasearch.data.episodes import EvaluationEpisodes

    rng = np.random.default_rng(3)
    # 7 classes of 6 images for 5-way episodes of 1 + 4 images per class.
    images = rng.uniform(size=(7, 6, *task.image_shape)).astype(np.float32)
    class_set = ClassSet(images, [f"c{i}" for i in range(7)])
    return EvaluationEpisodes(class_set, task.n_way, 1, 4, seed=0, stream=2, count=count)


@pytest.mark.parametrize(
    "plugin, config",
    [
        ("protonet", {"metric": "sqeuclidean", "embedding_dim": 0}),
        ("protonet", {"metric": "cosine", "embedding_dim": 64}),
        ("matching", {"fce": True, "fce_steps": 2}),
    ],
)
def test_pooled_evaluation_embeds_each_distinct_image_once_and_scores_as_image_by_image(
    plugin, config
):
    from metasearch import registry

    task = testing.tiny_task()
    task = dataclasses.replace(task, k_shot=1, n_query=4)
    learner = testing.build_learner(
        registry.load("plugin", plugin),
        ConvBlocks,
        task,
        config,
        {"depth": 2, "filters": 8, "growth": 1.0},
    )
    stream = _evaluation_stream(task)
    trainer = MetaTrainer(learner, (0.5, 0.3), 1e-2, 5, jit_compile=False)
    first = next(iter(stream))
    trainer.build(first)
    for _ in range(3):  # batch norm's statistics move off their initial values
        trainer.train_step(first)
    image_by_image = trainer.evaluate(stream.dataset, task.n_way)
    requested = []
    images = stream.pool.images
    stream.pool.images = lambda flat: (requested.append(flat.numpy()), images(flat))[1]
    pooled = trainer.evaluate(stream, task.n_way)
    # One batch to embed: the distinct images the episodes show, padded with repeats
    # to the fixed batch size (one trace for every evaluation).
    support, query = stream.indices()
    distinct = np.unique(np.concatenate([support, query], axis=1))
    assert len(distinct) < support.size + query.size
    assert len(requested) == 1 and len(requested[0]) == EMBED_BATCH
    np.testing.assert_array_equal(requested[0][: len(distinct)], distinct)
    assert set(requested[0]) == set(distinct)
    np.testing.assert_allclose(pooled, image_by_image, atol=1e-6)
    assert pooled.shape == (8,) and len(set(np.round(pooled, 4))) > 1


def test_a_learner_that_does_not_embed_images_independently_is_evaluated_image_by_image():
    from metasearch import registry

    task = dataclasses.replace(testing.tiny_task(), k_shot=1, n_query=4)
    maml = registry.load("plugin", "maml")
    assert not maml.EMBEDS_IMAGES_INDEPENDENTLY
    learner = testing.build_learner(
        maml, ConvBlocks, task, None, {"depth": 1, "filters": 8, "growth": 1.0}
    )
    stream = _evaluation_stream(task, count=3)
    trainer = MetaTrainer(learner, (0.5, 0.3), 1e-3, 5, jit_compile=False)
    trainer.build(next(iter(stream)))
    trainer.pooled_eval_step = None  # would fail if the pooled path were taken
    np.testing.assert_array_equal(
        trainer.evaluate(stream, task.n_way), trainer.evaluate(stream.dataset, task.n_way)
    )


def test_pooled_evaluation_by_a_trainer_per_trial_does_not_warn_about_retracing(caplog):
    # A search makes a trainer per trial; each traces its pooled steps once, and
    # TensorFlow would count those traces together and warn.
    task = dataclasses.replace(testing.tiny_task(), k_shot=1, n_query=4)
    stream = _evaluation_stream(task, count=4)
    for _trial in range(6):
        _, learner = _small_protonet()
        trainer = MetaTrainer(learner, (0.5, 0.3), 1e-3, 5, jit_compile=False)
        trainer.build(next(iter(stream)))
        for _ in range(2):
            assert trainer.evaluate(stream, task.n_way).shape == (4,)
    warnings = [r.getMessage() for r in caplog.records if "retracing" in r.getMessage()]
    assert warnings == []
