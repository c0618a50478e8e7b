"""Controller pieces that need no search run."""

import keras_tuner
import pytest

from metasearch import controller


def _sampled_values(strategy, seed, count=4):
    components = controller.Components("protonet", "conv_blocks", "glyphs")
    oracle = controller.make_oracle(strategy, count, seed)
    space = keras_tuner.HyperParameters()
    components.sample(space)
    oracle.update_space(space)
    return [oracle.populate_space(str(i))["values"] for i in range(count)]


@pytest.mark.parametrize("strategy", ["random", "bayesian", "evolution", "controller"])
def test_same_seed_samples_the_same_trials_including_seed_zero(strategy):
    for seed in (0, 7):
        assert _sampled_values(strategy, seed) == _sampled_values(strategy, seed)
    assert _sampled_values("random", 0) != _sampled_values("random", 1)


def test_derived_seeds_are_fixed_distinct_and_never_zero():
    seeds = [controller.derived_seed(s, p) for s in range(50) for p in ("oracle", "trial 0")]
    assert all(0 < s < 2**31 - 1 for s in seeds)
    assert len(set(seeds)) == len(seeds)
    assert controller.derived_seed(0, "oracle") == controller.derived_seed(0, "oracle")
