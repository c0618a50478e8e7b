"""The MAML family with the LSTM as its inner optimiser, and the `learned_optimizer` plugin.

The rule itself is tested with the core's other rules, in tests/test_inner_optimizers.py.
"""

import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from metasearch import testing
from metasearch.plugins.learned_optimizer import LearnedOptimizerLearner
from metasearch.plugins.maml import ANIL, FOMAML, MAML, MetaSGD
from metasearch.search_spaces.conv_blocks import ConvBlocks
from metasearch.training import MetaTrainer

ONE_BLOCK = {"depth": 1, "filters": 4, "growth": 1.0}


def test_inner_optimizer_is_declared_for_maml_fomaml_and_anil_but_not_metasgd():
    for plugin in (MAML, FOMAML, ANIL):
        hp = keras_tuner.HyperParameters()
        assert plugin.sample_config(hp)["inner_optimizer"] == "sgd"
        assert f"{plugin.NAME}/inner_optimizer" in {p.name for p in hp.space}
    hp = keras_tuner.HyperParameters()
    assert "inner_optimizer" not in MetaSGD.sample_config(hp)
    backbone = ConvBlocks().build(ONE_BLOCK, (28, 28, 1))
    task = testing.tiny_task()
    with pytest.raises(ValueError, match="inner_optimizer"):
        MetaSGD(backbone, {"inner_optimizer": "learned"}, task)
    with pytest.raises(ValueError, match="unknown inner_optimizer"):
        MAML(backbone, {"inner_optimizer": "adam"}, task)
    with pytest.raises(ValueError, match="inner optimiser is always 'learned'"):
        LearnedOptimizerLearner(backbone, {"inner_optimizer": "sgd"}, task)


def test_learned_optimizer_plugin_declares_its_hyperparameters():
    hp = keras_tuner.HyperParameters()
    config = LearnedOptimizerLearner.sample_config(hp)
    names = {p.name for p in hp.space}
    assert all(name.startswith("learned_optimizer/") for name in names)
    assert {"optimizer_hidden_units", "output_scale", "inner_steps"} <= set(config)
    # The LSTM replaces the step size, and there is no rule left to choose.
    assert not {"inner_learning_rate", "inner_optimizer"} & set(config)
    learner = testing.build_learner(
        LearnedOptimizerLearner,
        ConvBlocks(),
        testing.tiny_task(),
        {**config, "optimizer_hidden_units": 10, "output_scale": 0.03},
        ONE_BLOCK,
    )
    assert learner.learned_optimizer.hidden_units == 10
    assert learner.learned_optimizer.output_scale == 0.03
    assert learner._optimizer(3) is learner.learned_optimizer


@pytest.mark.parametrize("first_order", [False, True])
def test_the_outer_gradient_reaches_every_lstm_weight(first_order):
    task = testing.tiny_task()
    config = {"inner_optimizer": "learned", "inner_steps": 2, "first_order": first_order}
    learner = testing.build_learner(MAML, ConvBlocks(), task, config, ONE_BLOCK)
    episode = testing.tiny_episode(task)
    trainer = MetaTrainer(learner, (0.5, 0.3), 1e-3, 1, jit_compile=False)
    trainer.build(episode)
    lstm = learner.learned_optimizer.trainable_variables
    assert {id(v) for v in lstm} <= {id(v) for v in learner.trainable_variables}
    with tf.GradientTape() as tape:
        loss, _ = learner.meta_train_loss(trainer._normalize(episode))
    grads = tape.gradient(loss, lstm)
    for variable, grad in zip(lstm, grads):
        assert grad is not None, variable.path
        assert np.all(np.isfinite(grad.numpy())), variable.path
        assert np.any(grad.numpy() != 0), variable.path


@pytest.mark.slow  # seconds of processes or XLA: in CI, not the quick loop
def test_maml_with_the_learned_inner_optimizer_trains_and_exports(tmp_path):
    # The learned_optimizer plugin (the same code path) gets the full conformance
    # suite, XLA and the fresh-process reload included; here maml's own plumbing.
    task = testing.tiny_task()
    config = {"inner_optimizer": "learned", "inner_steps": 1, "eval_inner_steps": 2}
    learner = testing.build_learner(MAML, ConvBlocks(), task, config, ONE_BLOCK)
    assert any("learned_optimizer" in v.path for v in learner.trainable_variables)
    testing.check_runs(learner, task)
    testing.check_export_round_trip(learner, task, str(tmp_path), fresh_process=False)
