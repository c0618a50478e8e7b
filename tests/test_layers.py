"""`metasearch.layers.FusedBatchNormalization` computes what Keras' batch norm computes."""

import keras
import numpy as np
import tensorflow as tf

from metasearch import inner_loop, inner_optimizers
from metasearch.layers import FusedBatchNormalization


def _pair(seed=0):
    """The same conv-BN-ReLU network with Keras' batch norm and with the fused one."""
    models = []
    for norm in (keras.layers.BatchNormalization, FusedBatchNormalization):
        keras.utils.set_random_seed(seed)
        models.append(
            keras.Sequential(
                [
                    keras.Input((6, 6, 2)),
                    keras.layers.Conv2D(4, 3, padding="same"),
                    norm(momentum=0.9),
                    keras.layers.ReLU(),
                    keras.layers.Flatten(),
                    keras.layers.Dense(3),
                ]
            )
        )
    return models


def _images(seed, n=7):
    return tf.random.stateless_normal([n, 6, 6, 2], [seed, 1]) * 2.0 + 0.5


def test_training_outputs_gradients_and_running_statistics_match_keras():
    plain, fused = _pair()
    x = _images(1)
    results = []
    for model in (plain, fused):

        @tf.function
        def step(x, model=model):
            with tf.GradientTape() as tape:
                out = model(x, training=True)
                loss = tf.reduce_sum(out**2)
            return out, tape.gradient(loss, model.trainable_variables)

        out, grads = step(x)
        ops = {op.type for op in step.get_concrete_function(x).graph.get_operations()}
        assert ("FusedBatchNormV3" in ops) == (model is fused)
        step(_images(2))  # a second update of the running statistics
        bn = model.layers[1]
        results.append((out, grads, bn.moving_mean.numpy(), bn.moving_variance.numpy()))
    (out_a, grads_a, mean_a, var_a), (out_b, grads_b, mean_b, var_b) = results
    np.testing.assert_allclose(out_b, out_a, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads_a, grads_b):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(mean_b, mean_a, rtol=1e-5, atol=1e-6)
    # The biased batch variance, as Keras tracks it (the fused kernel returns the unbiased one).
    np.testing.assert_allclose(var_b, var_a, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(mean_a) > 1e-3) and np.all(np.abs(var_a - 1.0) > 1e-3)
    # Inference uses the running statistics, the same way, through the fused kernel too.
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), atol=1e-5)
    infer = tf.function(lambda x: fused(x, training=False))
    ops = {op.type for op in infer.get_concrete_function(x).graph.get_operations()}
    assert "FusedBatchNormV3" in ops


def test_second_order_gradients_through_the_fused_kernel_match_keras_exact_moments():
    # Second-order MAML differentiates through the batch norm's gradient; the fused
    # kernel's second derivative must equal the exact one (`inner_loop.exact_moments`).
    x, y = _images(3, n=5), tf.random.stateless_normal([5, 3], [4, 5])
    gradients = []
    for model in _pair(seed=1):
        inner_loop.use_exact_moments(model)
        network = inner_loop.FunctionalNetwork(model)

        @tf.function
        def outer(network=network):
            params = network.values()
            with tf.GradientTape() as tape:
                tape.watch(params)

                def loss(p, step):
                    return tf.reduce_mean((network(p, x, training=True)[0] - y) ** 2)

                fast = inner_loop.gradient_descent(loss, params, 2, inner_optimizers.SGD(0.3))
                value = loss(fast, 0)
            return tape.gradient(value, params)

        gradients.append(outer())
        graph = outer.get_concrete_function().graph
        gradient_ops = {op.type for op in graph.get_operations()}
        assert ("FusedBatchNormGradV3" in gradient_ops) == (len(gradients) == 2)
    # Relative to the largest gradient: the conv bias's is zero in exact arithmetic
    # (batch norm cancels it) and both sides give rounding noise there.
    scale = max(float(np.abs(g).max()) for g in gradients[0])
    assert scale > 1.0
    for a, b in zip(*gradients):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6 * scale)


def test_under_xla_it_compiles_and_matches_graph_mode():
    _, fused = _pair(seed=2)
    x = _images(4)
    graph = tf.function(lambda x: fused(x, training=True))(x)
    xla = tf.function(lambda x: fused(x, training=True), jit_compile=True)(x)
    np.testing.assert_allclose(xla, graph, rtol=1e-4, atol=1e-4)
