"""Every registered plugin and search space through the same checks."""

import json

import pytest

from metasearch import conformance, registry

PLUGINS = registry.names("plugin")
REGRESSION_PLUGINS = [
    name
    for name in PLUGINS
    if "regression" in getattr(registry.load("plugin", name), "TASK_KINDS", ())
]
SPACES = registry.names("search_space")
BASE_SPACE = "conv_blocks"
# Plugins whose exported graph is another registered plugin's (see test_export_round_trip).
IDENTICAL_EXPORTS = {"fomaml"}
BASE_PLUGIN = "protonet"
# Every search space must serve both the small grey and the larger colour setting.
INPUT_SETTINGS = [(28, 1), (84, 3)]


def _space(space_name):
    space_class = registry.load("search_space", space_name)
    return space_class(space_class.test_options())


def _pair(
    plugin_name, space_name, plugin_config=None, space_config=None, image_size=28, channels=1
):
    plugin = registry.load("plugin", plugin_name)
    task = conformance.tiny_task(image_size, channels)
    # One conv-BN-ReLU-pool block keeps XLA compiles short; plugins are what vary here.
    small = {"depth": 1, "filters": 16, "growth": 1.0} if space_name == "conv_blocks" else None
    learner = conformance.build_learner(
        plugin, _space(space_name), task, plugin_config, space_config or small
    )
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
        # fomaml's exported graph is maml's (the order only changes meta-training),
        # so it skips the TensorFlow-only process that maml's export goes through.
        fresh = plugin_name not in IDENTICAL_EXPORTS
        conformance.check_export_round_trip(learner, task, str(tmp_path), fresh_process=fresh)


@pytest.mark.parametrize("plugin_name", REGRESSION_PLUGINS)
def test_regression_plugin_trains_traces_compiles_exports(plugin_name, tmp_path):
    plugin = registry.load("plugin", plugin_name)
    task = conformance.tiny_task(kind="regression")
    space = registry.load("search_space", "mlp")()
    learner = conformance.build_learner(
        plugin,
        space,
        task,
        {**conformance.sample_configs(plugin, 1)[0], "inner_learning_rate": 0.01},
    )
    conformance.check_trains(learner, task)
    conformance.check_traces_with_variable_batch(learner, task)
    conformance.check_compiles_with_xla(learner, task)
    # TestPluginConformance already reloads every plugin in a TensorFlow-only process.
    conformance.check_export_round_trip(learner, task, str(tmp_path), fresh_process=False)


@pytest.mark.parametrize("plugin_name", PLUGINS)
def test_every_sampled_plugin_config_trains_and_adapts(plugin_name):
    plugin = registry.load("plugin", plugin_name)
    # Index 0 holds the defaults, which TestPluginConformance covers (XLA included);
    # a random config gets the light check, in graph mode, to keep the suite short.
    for config in conformance.sample_configs(plugin, 2, seed=1)[1:]:
        learner, task = _pair(
            plugin_name,
            BASE_SPACE,
            plugin_config=config,
            space_config={"depth": 1, "filters": 8, "growth": 1.0},
        )
        conformance.check_runs(learner, task)


@pytest.mark.parametrize("image_size,channels", INPUT_SETTINGS)
@pytest.mark.parametrize("space_name", SPACES)
def test_search_space_sample_builds_trains_traces_compiles_exports(
    space_name, image_size, channels, tmp_path
):
    # A random sample (index 1; index 0 is the defaults), not only the defaults.
    config = conformance.sample_configs(_space(space_name), 2, seed=image_size)[1]
    learner, task = _pair(
        BASE_PLUGIN, space_name, space_config=config, image_size=image_size, channels=channels
    )
    conformance.check_traces_with_variable_batch(learner, task)
    conformance.check_trains(learner, task, steps=3)
    conformance.check_compiles_with_xla(learner, task)
    # The TensorFlow-only process reloads each space once (28x28); the colour setting
    # reloads in process, which checks the same graph and saves a TensorFlow start.
    conformance.check_export_round_trip(
        learner, task, str(tmp_path), fresh_process=(image_size, channels) == INPUT_SETTINGS[0]
    )


@pytest.mark.parametrize("space_name", SPACES)
def test_genotype_json_round_trips(space_name):
    space = _space(space_name)
    configs = conformance.sample_configs(space, 200, seed=3)
    if space.genotype(configs[0]) is None:
        pytest.skip(f"{space_name} has no genotype")
    for config in configs:
        text = json.dumps(space.genotype(config))
        assert space.config_from_genotype(json.loads(text)) == config
        assert json.dumps(space.genotype(space.config_from_genotype(json.loads(text)))) == text
