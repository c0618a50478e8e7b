import pytest
import tensorflow as tf
from tensorflow.python.autograph.impl import api as autograph_api

from metasearch import graphs, latency, testing
from metasearch.data.episodes import EvaluationEpisodes, episode_dataset
from metasearch.plugins.protonet import PrototypicalNetworks
from metasearch.search_spaces.conv_blocks import ConvBlocks
from metasearch.training import MetaTrainer


def _python_if_on_a_tensor(x):
    if x > 0:  # AutoGraph would turn this into tf.cond; plain tracing cannot
        return x
    return -x


def test_functions_are_traced_without_autograph():
    with pytest.raises(tf.errors.OperatorNotAllowedInGraphError):
        graphs.function(_python_if_on_a_tensor)(tf.constant(1.0))
    with pytest.raises(tf.errors.OperatorNotAllowedInGraphError):
        graphs.function(
            _python_if_on_a_tensor, input_signature=[tf.TensorSpec([], tf.float32)]
        ).get_concrete_function()
    with pytest.raises(tf.errors.OperatorNotAllowedInGraphError):
        tf.data.Dataset.range(3).map(graphs.dataset_function(_python_if_on_a_tensor))
    # Python control flow on Python values is unrolled as before; options pass through.
    squares = graphs.function(lambda x, n: sum(x**k for k in range(n)), reduce_retracing=True)
    assert float(squares(tf.constant(2.0), 3)) == 7.0
    assert squares._reduce_retracing


@pytest.fixture
def conversions(monkeypatch):
    """The Python functions AutoGraph converts meanwhile."""
    converted = []
    convert = autograph_api._convert_actual

    def spy(entity, program_ctx):
        converted.append(getattr(entity, "__qualname__", repr(entity)))
        return convert(entity, program_ctx)

    monkeypatch.setattr(autograph_api, "_convert_actual", spy)
    return converted


def test_episodes_training_evaluation_and_the_exported_signature_need_no_autograph(
    conversions,
):
    task = testing.tiny_task()
    learner = testing.build_learner(
        PrototypicalNetworks,
        ConvBlocks,
        task,
        space_config={"depth": 2, "filters": 8, "growth": 1.0},
    )
    images = testing._pipeline_images(task)
    stream = episode_dataset(images, task.n_way, task.k_shot, task.n_query, 0, 1, augment="affine")
    episode = next(iter(stream))
    trainer = MetaTrainer(learner, (0.5, 0.3), 1e-3, 2, jit_compile=False)
    trainer.build(episode)
    trainer.train(iter([episode, episode]), 2)
    evaluation = EvaluationEpisodes(
        images, task.n_way, task.k_shot, task.n_query, seed=0, stream=2, count=3
    )
    assert len(trainer.evaluate(evaluation, task.n_way)) == 3  # pooled (indices mapped too)
    assert latency.measure(learner, 28, (0.5, 0.3)) > 0  # through the export's signature
    # A sanity check of the spy itself: AutoGraph's conversions are seen.
    assert not conversions
    tf.function(_python_if_on_a_tensor)(tf.constant(1.0))
    assert conversions == ["_python_if_on_a_tensor"]
