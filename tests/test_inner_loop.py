"""The core's inner loops and SGD rules: gradients of either order, explicit parameters, XLA."""

import keras
import numpy as np
import tensorflow as tf

from metasearch import inner_loop, inner_optimizers


def _quadratic_setup():
    # loss(w) = 0.5 * a * w^2 per coordinate: one SGD step gives w1 = w0 (1 - lr a),
    # so the outer loss 0.5 * w1^2 has d/dw0 = w1 (1 - lr a) (second order) and
    # w1 (first order: the inner gradient is a constant).
    a = tf.constant([1.0, 3.0])
    w0 = tf.Variable([2.0, -1.0])
    return a, w0


def test_second_order_gradient_matches_the_closed_form():
    a, w0 = _quadratic_setup()
    lr = 0.1
    with tf.GradientTape() as outer:
        (w1,) = inner_loop.gradient_descent(
            lambda params, step: tf.reduce_sum(0.5 * a * params[0] ** 2),
            [w0],
            steps=1,
            optimizer=inner_optimizers.SGD(lr),
        )
        loss = tf.reduce_sum(0.5 * w1**2)
    grad = outer.gradient(loss, w0).numpy()
    expected_w1 = w0.numpy() * (1 - lr * a.numpy())
    np.testing.assert_allclose(w1.numpy(), expected_w1, rtol=1e-6)
    np.testing.assert_allclose(grad, expected_w1 * (1 - lr * a.numpy()), rtol=1e-6)


def test_first_order_drops_the_second_order_terms():
    a, w0 = _quadratic_setup()
    with tf.GradientTape() as outer:
        (w1,) = inner_loop.gradient_descent(
            lambda params, step: tf.reduce_sum(0.5 * a * params[0] ** 2),
            [w0],
            steps=1,
            optimizer=inner_optimizers.SGD(0.1),
            first_order=True,
        )
        loss = tf.reduce_sum(0.5 * w1**2)
    np.testing.assert_allclose(outer.gradient(loss, w0).numpy(), w1.numpy(), rtol=1e-6)


def test_per_parameter_step_sizes_are_meta_learned():
    a, w0 = _quadratic_setup()
    rates = tf.Variable([0.1, 0.2])
    with tf.GradientTape() as outer:
        (w1,) = inner_loop.gradient_descent(
            lambda params, step: tf.reduce_sum(0.5 * a * params[0] ** 2),
            [w0],
            steps=1,
            optimizer=inner_optimizers.PerParameterSGD([rates]),
        )
        loss = tf.reduce_sum(0.5 * w1**2)
    # d loss / d rate = w1 * (-a w0)
    expected = w1.numpy() * (-a.numpy() * w0.numpy())
    np.testing.assert_allclose(outer.gradient(loss, rates).numpy(), expected, rtol=1e-6)


def test_steps_are_applied_in_order_and_unused_parameters_get_zero_gradients():
    w = tf.constant([1.0])
    unused = tf.constant([5.0])
    seen_steps = []

    def loss(params, step):
        seen_steps.append(step)
        return tf.reduce_sum(params[0] ** 2)

    w3, same = inner_loop.gradient_descent(
        loss, [w, unused], steps=3, optimizer=inner_optimizers.SGD(0.25)
    )
    assert seen_steps == [0, 1, 2]
    np.testing.assert_allclose(w3.numpy(), [0.125])  # halves each step
    np.testing.assert_allclose(same.numpy(), [5.0])


def test_functional_network_runs_a_layer_on_fast_weights_without_touching_it():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    network = inner_loop.FunctionalNetwork(model)
    before = [v.numpy().copy() for v in model.weights]
    zeros = [tf.zeros_like(v) for v in network.values()]
    outputs, _ = network(zeros, tf.ones([4, 3]))
    np.testing.assert_allclose(outputs.numpy(), 0.0)
    for variable, value in zip(model.weights, before):
        np.testing.assert_array_equal(variable.numpy(), value)
    same, _ = network(network.values(), tf.ones([4, 3]))
    np.testing.assert_allclose(same.numpy(), model(tf.ones([4, 3])).numpy(), rtol=1e-6)


def test_second_order_inner_loop_compiles_with_xla_and_matches_graph_mode():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )
    network = inner_loop.FunctionalNetwork(model)
    x = tf.random.stateless_normal([6, 4], [1, 2])
    y = tf.random.stateless_normal([6, 1], [3, 4])

    def outer_step():
        with tf.GradientTape() as tape:
            fast = inner_loop.gradient_descent(
                lambda params, step: tf.reduce_mean((network(params, x)[0] - y) ** 2),
                network.values(),
                steps=3,
                optimizer=inner_optimizers.SGD(0.1),
            )
            loss = tf.reduce_mean((network(fast, x)[0] - y) ** 2)
        return loss, tape.gradient(loss, network.trainable)

    graph_loss, graph_grads = tf.function(outer_step)()
    xla_loss, xla_grads = tf.function(outer_step, jit_compile=True)()
    np.testing.assert_allclose(xla_loss.numpy(), graph_loss.numpy(), rtol=1e-4)
    for a, b in zip(xla_grads, graph_grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-5)
    assert all(np.any(g.numpy() != 0) for g in graph_grads)


def test_second_order_gradients_through_batch_norm_match_finite_differences():
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Conv2D(2, 3, padding="same", dtype="float64"),
            keras.layers.BatchNormalization(dtype="float64"),
            keras.layers.Flatten(dtype="float64"),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )
    inner_loop.use_exact_moments(model)
    network = inner_loop.FunctionalNetwork(model)
    x = tf.random.stateless_normal([5, 4, 4, 1], [5, 6], dtype=tf.float64)
    y = tf.random.stateless_normal([5, 1], [7, 8], dtype=tf.float64)

    def outer_loss(params):
        def loss(p, step):
            return tf.reduce_mean((network(p, x, training=True)[0] - y) ** 2)

        fast = inner_loop.gradient_descent(loss, params, 1, inner_optimizers.SGD(0.3))
        return loss(fast, 0)

    params = network.values()
    direction = [
        tf.random.stateless_normal(p.shape, [9, i], dtype=tf.float64) for i, p in enumerate(params)
    ]
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = outer_loss(params)
    grads = tape.gradient(loss, params)
    analytic = sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads, direction))
    h = 1e-6
    plus = outer_loss([p + h * d for p, d in zip(params, direction)])
    minus = outer_loss([p - h * d for p, d in zip(params, direction)])
    numeric = float(plus - minus) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5)
