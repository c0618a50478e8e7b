"""Every registered plugin and search space through the `metasearch.testing` suites."""

import ast
from pathlib import Path

import pytest
import tensorflow as tf

from metasearch import registry, testing

PLUGINS = registry.names("plugin")
SPACES = registry.names("search_space")
# Plugins whose exported graph is another registered plugin's (see _select below).
IDENTICAL_EXPORTS = {"fomaml"}


class TestPluginConformance(testing.MetaLearnerConformance):
    """The suite a plugin package runs on its own class, here once per registered plugin."""

    @pytest.fixture(autouse=True, params=PLUGINS)
    def _select(self, request):
        self.plugin = registry.load("plugin", request.param)
        # fomaml's exported graph is maml's (the order only changes meta-training),
        # so it skips the TensorFlow-only process that maml's export goes through.
        self.fresh_process = request.param not in IDENTICAL_EXPORTS


class TestSearchSpaceConformance(testing.SearchSpaceConformance):
    """The suite a search-space package runs on its own class, here once per registered space."""

    @pytest.fixture(autouse=True, params=SPACES)
    def _select(self, request):
        self.search_space = registry.load("search_space", request.param)


def test_the_suites_themselves_are_not_collected_but_subclasses_are():
    assert testing.MetaLearnerConformance.__test__ is False
    assert testing.SearchSpaceConformance.__test__ is False
    assert TestPluginConformance.__test__ is True and TestSearchSpaceConformance.__test__ is True


def test_a_failed_check_raises_conformance_error_saying_what_failed():
    class Lossy:
        def genotype(self, config):
            return {"a": config["a"]}

        def config_from_genotype(self, genotype):
            return {"a": genotype["a"], "b": 0}

    with pytest.raises(testing.ConformanceError, match=r"config 1: .* differs in \['b'\]"):
        testing.check_genotype_round_trip(Lossy(), [{"a": 1, "b": 0}, {"a": 2, "b": 5}])

    class Unset(testing.MetaLearnerConformance):
        __test__ = False

    with pytest.raises(testing.ConformanceError, match="set `plugin`"):
        Unset().plugin_class()
    assert issubclass(testing.ConformanceError, AssertionError)


def test_the_checks_raise_instead_of_bare_asserts_that_optimisation_drops():
    # A bare `assert` vanishes under `python -O`; every check raises ConformanceError.
    tree = ast.parse(Path(testing.__file__).read_text())
    asserts = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert not asserts, f"bare asserts in metasearch/testing.py at lines {asserts}"


def test_the_pooled_evaluation_check_catches_a_learner_that_does_not_embed_independently():
    from metasearch.api import project
    from metasearch.plugins.protonet import PrototypicalNetworks

    class Transductive(PrototypicalNetworks):
        """Claims independence, but its batch norm uses each batch's own statistics."""

        def embed(self, images, training=False):
            return project(self.backbone, self.projection, images, True)

    class SeesSupportImages(PrototypicalNetworks):
        """Claims independence, but its prototypes also read the support images directly."""

        def adapt(self, support_images, support_labels, num_classes, training=False):
            state = super().adapt(support_images, support_labels, num_classes, training)
            return {"prototypes": state["prototypes"] + tf.reduce_mean(support_images)}

    task = testing.tiny_task()
    space = {"depth": 1, "filters": 8, "growth": 1.0}
    for claims in (Transductive, SeesSupportImages):
        learner = testing.build_learner(claims, "conv_blocks", task, None, space)
        with pytest.raises(testing.ConformanceError, match="episode 0: logits from pooled"):
            testing.check_pooled_evaluation(learner, task)
