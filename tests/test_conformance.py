"""Every registered plugin and search space through the same checks."""

import pytest

from metasearch import conformance, registry

PLUGINS = registry.names("plugin")
SPACES = registry.names("search_space")
BASE_SPACE = "conv_blocks"
BASE_PLUGIN = "protonet"


def _pair(plugin_name, space_name, plugin_config=None, space_config=None, image_size=28):
    plugin = registry.load("plugin", plugin_name)
    space = registry.load("search_space", space_name)
    task = conformance.tiny_task(image_size)
    small = {"depth": 3, "filters": 16, "growth": 1.0} if space_name == "conv_blocks" else None
    learner = conformance.build_learner(plugin, space, task, plugin_config, space_config or small)
    return learner, task


@pytest.mark.parametrize("plugin_name", PLUGINS)
class TestPluginConformance:
    def test_trains(self, plugin_name):
        learner, task = _pair(plugin_name, BASE_SPACE)
        conformance.check_trains(learner, task)

    def test_traces_with_variable_batch(self, plugin_name):
        learner, task = _pair(plugin_name, BASE_SPACE)
        conformance.check_traces_with_variable_batch(learner, task)

    def test_compiles_with_xla(self, plugin_name):
        learner, task = _pair(plugin_name, BASE_SPACE)
        conformance.check_compiles_with_xla(learner, task)

    def test_export_round_trip(self, plugin_name, tmp_path):
        learner, task = _pair(plugin_name, BASE_SPACE)
        conformance.check_export_round_trip(learner, task, str(tmp_path))


@pytest.mark.parametrize("plugin_name", PLUGINS)
def test_every_sampled_plugin_config_trains_and_compiles(plugin_name):
    plugin = registry.load("plugin", plugin_name)
    for config in conformance.sample_configs(plugin, 4, seed=1):
        learner, task = _pair(plugin_name, BASE_SPACE, plugin_config=config)
        conformance.check_compiles_with_xla(learner, task)


@pytest.mark.parametrize("space_name", SPACES)
def test_search_space_samples_build_train_trace_compile_export(space_name, tmp_path):
    space = registry.load("search_space", space_name)
    for index, config in enumerate(conformance.sample_configs(space, 3, seed=2)):
        learner, task = _pair(BASE_PLUGIN, space_name, space_config=config)
        conformance.check_traces_with_variable_batch(learner, task)
        conformance.check_compiles_with_xla(learner, task)
        if index == 0:
            conformance.check_trains(learner, task)
            conformance.check_export_round_trip(learner, task, str(tmp_path))
