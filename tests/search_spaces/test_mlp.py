from __future__ import annotations

import keras_tuner
import numpy as np
import tensorflow as tf

from metasearch import registry, testing
from metasearch.search_spaces.mlp import MLP


def test_registered():
    assert registry.load("search_space", "mlp") is MLP


def test_default_is_maml_sinusoid_body_with_1720_parameters():
    space = MLP(MLP.test_options())
    config = space.sample_config(keras_tuner.HyperParameters())
    assert config == {"depth": 2, "units": 40, "activation": "relu"}
    model = space.build(config, (1,))
    assert model.count_params() == 40 * 1 + 40 + 40 * 40 + 40 == 1720
    assert [layer.name for layer in model.layers[1:]] == ["flatten", "dense0", "dense1"]
    x = tf.random.stateless_uniform([6, 1], [0, 1], -5.0, 5.0)
    features = model(x, training=False)
    assert features.shape == (6, 40) and features.dtype == tf.float32
    # ReLU features: non-negative and not all dead.
    assert np.all(features.numpy() >= 0) and np.any(features.numpy() > 0)


def test_tanh_is_applied():
    model = MLP().build({"depth": 1, "units": 64, "activation": "tanh"}, (1,))
    features = model(tf.constant([[-50.0], [50.0]]), training=False).numpy()
    assert features.shape == (2, 64)
    assert np.all(np.abs(features) <= 1.0) and np.any(features < 0)


def test_builds_for_images():
    config = {"depth": 3, "units": 64, "activation": "relu"}
    model = MLP().build(config, (28, 28, 1))
    assert model.count_params() == 784 * 64 + 64 + 2 * (64 * 64 + 64)
    features = model(tf.zeros([3, 28, 28, 1]), training=True)
    assert features.shape == (3, 64)


def test_every_sampled_config_builds_and_traces_with_variable_batch():
    space = MLP(MLP.test_options())
    configs = testing.sample_configs(space, 10)
    assert len({space.describe(c) for c in configs}) > 3
    for config in configs:
        model = space.build(config, (1,))
        call = tf.function(
            lambda x, model=model: model(x, training=False),
            input_signature=[tf.TensorSpec([None, 1], tf.float32)],
        )
        for batch in (2, 5):
            features = call(tf.ones([batch, 1]))
            assert features.shape == (batch, config["units"])
            assert len(model.layers) == 2 + config["depth"]


def test_compiles_with_xla():
    model = MLP().build({"depth": 2, "units": 40, "activation": "tanh"}, (1,))
    x = tf.linspace(-5.0, 5.0, 8)[:, None]
    compiled = tf.function(lambda x: model(x, training=False), jit_compile=True)
    np.testing.assert_allclose(compiled(x), model(x, training=False), rtol=1e-5, atol=1e-6)


def test_describe():
    space = MLP()
    assert space.describe({"depth": 2, "units": 40, "activation": "relu"}) == "mlp2x40-relu"
    assert space.describe({"depth": 3, "units": 128, "activation": "tanh"}) == "mlp3x128-tanh"
