"""The search's pieces that need no search run: seeded oracles over the joint space."""

import keras_tuner
import pytest

from metasearch import strategies
from metasearch.components import Components
from metasearch.job import derived_seed


def _sampled_values(strategy, seed, count=4):
    components = Components("protonet", "conv_blocks", "glyphs")
    oracle = strategies.make_oracle(
        strategy,
        objective=keras_tuner.Objective("val_accuracy", "max"),
        max_trials=count,
        seed=derived_seed(seed, "oracle"),
        hyperparameters=None,
    )
    space = keras_tuner.HyperParameters()
    components.sample(space)
    oracle.update_space(space)
    return [oracle.populate_space(str(i))["values"] for i in range(count)]


@pytest.mark.parametrize("strategy", ["random", "bayesian", "evolution", "controller"])
def test_same_seed_samples_the_same_trials_including_seed_zero(strategy):
    for seed in (0, 7):
        assert _sampled_values(strategy, seed) == _sampled_values(strategy, seed)
    assert _sampled_values("random", 0) != _sampled_values("random", 1)
