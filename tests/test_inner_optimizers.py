"""The core's LSTM update rule (SGD and Meta-SGD's rules are tested in test_inner_loop.py)."""

import math

import keras
import numpy as np
import tensorflow as tf

from metasearch.inner_optimizers import LSTMOptimizer, preprocess_gradients


def _reference_preprocess(g, p=10.0):
    out = np.empty(g.shape + (2,))
    for index, value in np.ndenumerate(g):
        if abs(value) >= math.exp(-p):
            out[index] = (min(max(math.log(abs(value)) / p, -1.0), 1.0), np.sign(value))
        else:
            out[index] = (-1.0, math.exp(p) * value)
    return out


def test_preprocessing_matches_the_papers_formula():
    g = np.array([0.0, 1e-6, -3e-5, 4.5e-5, -4.6e-5, 1e-3, -0.5, 2.0, 3e4, -1e6, 1e-20], np.float32)
    np.testing.assert_allclose(
        preprocess_gradients(g).numpy(), _reference_preprocess(g.astype(np.float64)), atol=1e-5
    )
    for p in (5.0, 10.0):
        g = np.random.default_rng(0).normal(0, 1e-3, size=(4, 3)).astype(np.float32)
        assert preprocess_gradients(g, p).shape == (4, 3, 2)
        np.testing.assert_allclose(
            preprocess_gradients(g, p).numpy(), _reference_preprocess(g, p), atol=1e-5
        )


def test_preprocessing_has_finite_second_derivatives_at_zero_gradients():
    g = tf.constant([0.0, 1e-7, 0.3])
    with tf.GradientTape() as tape:
        tape.watch(g)
        value = tf.reduce_sum(preprocess_gradients(g) * [[1.0, 2.0]])
    grad = tape.gradient(value, g).numpy()
    assert np.all(np.isfinite(grad))
    # Small gradients enter linearly, e^p g; large ones through log|g| / p.
    np.testing.assert_allclose(grad, [2 * math.exp(10), 2 * math.exp(10), 1 / (10 * 0.3)], 1e-4)


def _keras_reference(optimizer: LSTMOptimizer, gradients: np.ndarray, steps: int):
    """Updates of the same weights run through keras.layers.LSTMCell and a Dense output."""
    cells = []
    for i in range(optimizer.num_layers):
        cell = keras.layers.LSTMCell(optimizer.hidden_units)
        cell.build((None, 2 if i == 0 else optimizer.hidden_units))
        cell.set_weights(
            [
                optimizer.kernels[i].numpy(),
                optimizer.recurrent_kernels[i].numpy(),
                optimizer.biases[i].numpy(),
            ]
        )
        cells.append(cell)
    n = gradients.shape[1]
    states = [[np.zeros((n, optimizer.hidden_units), np.float32)] * 2 for _ in cells]
    updates = []
    for step in range(steps):
        inputs = preprocess_gradients(gradients[step])
        for i, cell in enumerate(cells):
            inputs, states[i] = cell(inputs, states[i])
        out = inputs @ optimizer.output_kernel.numpy() + optimizer.output_bias.numpy()
        updates.append(optimizer.output_scale * np.asarray(out)[:, 0])
    return np.stack(updates)


def test_update_matches_keras_lstm_cells_and_handles_every_tensor_alike():
    keras.utils.set_random_seed(1)
    optimizer = LSTMOptimizer(hidden_units=6, output_scale=0.1)
    optimizer.output_bias.assign([0.3])
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (4,), (), (2, 1, 3)]
    sizes = [int(np.prod(s)) for s in shapes]
    steps = 3
    flat_grads = rng.normal(0, 0.1, size=(steps, sum(sizes))).astype(np.float32)
    expected = _keras_reference(optimizer, flat_grads, steps)

    params = [tf.constant(rng.normal(size=s), tf.float32) for s in shapes]
    start = np.concatenate([p.numpy().reshape(-1) for p in params])
    state = optimizer.init(params)
    assert [len(s) for s in state] == [2] * len(shapes)
    for s, n in zip(state, sizes):
        assert all(t.shape == (n, 6) for layer in s for t in layer)
    previous = start
    for step in range(steps):
        pieces = np.split(flat_grads[step], np.cumsum(sizes)[:-1])
        grads = [tf.constant(g.reshape(s)) for g, s in zip(pieces, shapes)]
        params, state = optimizer.update(params, grads, state, step)
        assert [tuple(p.shape) for p in params] == shapes
        current = np.concatenate([p.numpy().reshape(-1) for p in params])
        np.testing.assert_allclose(current - previous, expected[step], atol=1e-5)
        previous = current
    # State carried per coordinate: the same gradients a second time give other updates.
    assert not np.allclose(expected[0], expected[1], atol=1e-4)


def test_a_zero_output_layer_leaves_parameters_unchanged():
    optimizer = LSTMOptimizer(hidden_units=4)
    optimizer.output_kernel.assign(tf.zeros_like(optimizer.output_kernel))
    params = [tf.ones([3, 2])]
    new, state = optimizer.update(params, [tf.fill([3, 2], 0.5)], optimizer.init(params), 0)
    np.testing.assert_array_equal(new[0].numpy(), params[0].numpy())
    # ... while its state has moved.
    assert np.any(state[0][0][0].numpy() != 0)


def test_update_compiles_with_xla_and_agrees_with_graph_mode():
    keras.utils.set_random_seed(2)
    optimizer = LSTMOptimizer(hidden_units=5)
    params = [tf.random.normal([7, 3]), tf.random.normal([3])]
    grads = [tf.random.normal([7, 3]) * 1e-3, tf.random.normal([3])]

    def two_steps(params, grads):
        state = optimizer.init(params)
        params, state = optimizer.update(params, grads, state, 0)
        params, _ = optimizer.update(params, grads, state, 1)
        return params

    xla = tf.function(two_steps, jit_compile=True)(params, grads)
    graph = tf.function(two_steps)(params, grads)
    for a, b in zip(xla, graph):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    assert not np.allclose(xla[0].numpy(), params[0].numpy())
