import keras
import keras_tuner
import numpy as np

from metasearch.layers import FusedBatchNormalization
from metasearch.search_spaces.conv_blocks import ConvBlocks


def _convs(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def test_sampled_blocks_have_no_conv_bias_and_the_fused_batch_norm():
    space = ConvBlocks()
    config = space.sample_config(keras_tuner.HyperParameters())
    assert config == {"depth": 4, "filters": 64, "growth": 1.0, "conv_bias": False}
    model = space.build(config, (28, 28, 1))
    assert [conv.use_bias for conv in _convs(model)] == [False] * 4
    norms = [layer for layer in model.layers if "bn" in layer.name]
    assert len(norms) == 4 and all(isinstance(n, FusedBatchNormalization) for n in norms)
    # conv4-64 at 28x28: 3x3 kernels, batch norm's four vectors per block.
    kernels = 9 * 1 * 64 + 3 * 9 * 64 * 64
    assert model.count_params() == kernels + 4 * 4 * 64
    assert space.describe(config) == "conv4-64"


def test_a_trial_config_of_an_earlier_version_keeps_its_conv_bias_so_its_weights_load():
    space = ConvBlocks()
    earlier = {"depth": 4, "filters": 64, "growth": 1.0}  # no "conv_bias": recorded before it
    old = space.build(earlier, (28, 28, 1))
    assert [conv.use_bias for conv in _convs(old)] == [True] * 4
    new = space.build({**earlier, "conv_bias": False}, (28, 28, 1))
    assert old.count_params() - new.count_params() == 4 * 64
    weights = [np.full(w.shape, 0.5, np.float32) for w in old.weights]
    again = space.build(earlier, (28, 28, 1))
    again.set_weights(weights)
    assert all(np.all(w.numpy() == 0.5) for w in again.weights)


def test_pooling_before_relu_gives_the_outputs_and_gradients_of_relu_then_pooling():
    """The blocks pool before their ReLU (faster); the two orders are the same function."""
    import tensorflow as tf

    config = {"depth": 4, "filters": 16, "growth": 1.0, "conv_bias": False}
    model = ConvBlocks().build(config, (28, 28, 1))
    kinds = [type(layer).__name__ for layer in model.layers[1:5]]
    assert kinds == ["Conv2D", "FusedBatchNormalization", "MaxPooling2D", "ReLU"]

    def relu_then_pool(images):
        x = images
        for layer in model.layers[1:-1]:
            if isinstance(layer, keras.layers.MaxPooling2D):
                continue  # applied after the ReLU below
            x = layer(x, training=True)
            if isinstance(layer, keras.layers.ReLU) and x.shape[1] >= 2:
                x = tf.nn.max_pool2d(x, 2, 2, "VALID")
        return tf.reshape(x, [tf.shape(x)[0], -1])

    images = tf.random.stateless_normal([6, 28, 28, 1], seed=[1, 2])
    outputs = []
    for network in (lambda x: model(x, training=True), relu_then_pool):
        with tf.GradientTape() as tape:
            features = network(images)
            loss = tf.reduce_sum(tf.sin(features))
        outputs.append((features, tape.gradient(loss, model.trainable_variables)))
    (features, grads), (expected, expected_grads) = outputs
    assert features.shape == (6, 16)
    np.testing.assert_allclose(features, expected, rtol=1e-6, atol=1e-6)
    for grad, expected_grad in zip(grads, expected_grads):
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-6)
