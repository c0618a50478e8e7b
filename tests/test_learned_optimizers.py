"""Meta-training an LSTM optimiser by truncated BPTT, and its Keras export."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from metasearch import learned_optimizers
from metasearch.inner_optimizers import LSTMOptimizer
from metasearch.learned_optimizers import LearnedKerasOptimizer, Problem, TruncatedBPTT


def _quadratic_problem(index: int, dim: int = 5) -> Problem:
    """f(x) = mean((W x - y)^2) for a random well-conditioned W, y; x starts at random."""
    rng = np.random.default_rng([7, index])
    w = rng.normal(size=(dim, dim)) / np.sqrt(dim) + np.eye(dim)
    return Problem(
        [tf.constant(rng.normal(size=(dim,)), tf.float32)],
        (tf.constant(w, tf.float32), tf.constant(rng.normal(size=(dim,)), tf.float32)),
    )


def _quadratic_loss(params, data, step):
    w, y = data
    return tf.reduce_mean(tf.square(tf.linalg.matvec(w, params[0]) - y))


def _trajectory_loss(optimizer, problem, steps):
    """Mean loss along `steps` updates of `optimizer` from the problem's start."""
    params = list(problem.params)
    state = optimizer.init(params)
    total = 0.0
    for step in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = _quadratic_loss(params, problem.data, step)
        params, state = optimizer.update(params, tape.gradient(loss, params), state, step)
        total += float(_quadratic_loss(params, problem.data, step))
    return total / steps


def test_meta_gradient_treats_the_optimisees_gradients_as_constants():
    keras.utils.set_random_seed(0)
    # Large updates make the dropped second-order terms visible.
    optimizer = LSTMOptimizer(hidden_units=4, output_scale=1.0)
    trainer = TruncatedBPTT(optimizer, _quadratic_loss, unroll_steps=4, truncation=4)
    problem = _quadratic_problem(0)
    start = tf.constant(0)
    grads, _, _, meta_loss = trainer.meta_gradients(
        problem.params, optimizer.init(problem.params), problem.data, start
    )

    def reference(stop):
        with tf.GradientTape() as outer:
            params, state, losses = list(problem.params), optimizer.init(problem.params), []
            for k in range(4):
                with tf.GradientTape() as tape:
                    tape.watch(params)
                    loss = _quadratic_loss(params, problem.data, k)
                g = tape.gradient(loss, params)
                if stop:
                    g = [tf.stop_gradient(x) for x in g]
                if k:
                    losses.append(loss)
                params, state = optimizer.update(params, g, state, k)
            losses.append(_quadratic_loss(params, problem.data, 4))
            total = tf.add_n(losses) / len(losses)
        return total, outer.gradient(total, optimizer.trainable_variables)

    loss, first_order = reference(stop=True)
    _, second_order = reference(stop=False)
    np.testing.assert_allclose(float(meta_loss), float(loss), rtol=1e-6)
    for ours, ref in zip(grads, first_order):
        np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5, atol=1e-7)
    differences = [np.max(np.abs(a.numpy() - b.numpy())) for a, b in zip(grads, second_order)]
    assert max(differences) > 1e-4, differences


def test_truncated_bptt_meta_training_lowers_the_loss_on_held_out_quadratics():
    keras.utils.set_random_seed(0)
    optimizer = LSTMOptimizer(hidden_units=8, output_scale=0.1)
    held_out = [_quadratic_problem(1000 + i) for i in range(6)]
    before = np.mean([_trajectory_loss(optimizer, p, 20) for p in held_out])
    calls = []
    history = learned_optimizers.meta_train(
        optimizer,
        _quadratic_problem,
        _quadratic_loss,
        problems=30,
        unroll_steps=20,
        truncation=5,
        learning_rate=1e-2,
        on_problem=lambda index, losses: calls.append((index, len(losses))),
    )
    after = np.mean([_trajectory_loss(optimizer, p, 20) for p in held_out])
    assert history["problems"] == 30 and history["truncations"] == 120
    assert calls[-1] == (29, 4)
    assert np.mean(history["meta_losses"][-10:]) < np.mean(history["meta_losses"][:10])
    assert after < 0.5 * before, (before, after)


def test_meta_train_needs_a_budget_and_valid_truncations():
    optimizer = LSTMOptimizer(hidden_units=2)
    with pytest.raises(ValueError, match="budget"):
        learned_optimizers.meta_train(optimizer, _quadratic_problem, _quadratic_loss)
    with pytest.raises(ValueError, match="truncation"):
        TruncatedBPTT(optimizer, _quadratic_loss, unroll_steps=5, truncation=10)
    with pytest.raises(ValueError, match="meta_objective"):
        TruncatedBPTT(optimizer, _quadratic_loss, meta_objective="sum")


def _dense_problem():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 3)).astype(np.float32)
    y = (x @ rng.normal(size=(3, 2)) + 0.5).astype(np.float32)
    return x, y


def test_keras_optimizer_applies_the_same_updates_as_the_functional_rule():
    keras.utils.set_random_seed(4)
    lstm = LSTMOptimizer(hidden_units=6, output_scale=0.05)
    lstm.output_bias.assign([0.2])
    x, y = _dense_problem()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    variables = model.trainable_variables
    params = [tf.convert_to_tensor(v) for v in variables]
    state = lstm.init(params)
    optimizer = learned_optimizers.to_keras_optimizer(lstm)
    assert isinstance(optimizer, keras.optimizers.Optimizer)

    def loss_of(weights):
        kernel, bias = weights
        return tf.reduce_mean(tf.square(tf.matmul(x, kernel) + bias - y))

    for step in range(4):
        with tf.GradientTape() as tape:
            loss = loss_of(variables)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = loss_of(params)
        params, state = lstm.update(params, tape.gradient(loss, params), state, step)
        for variable, param in zip(variables, params):
            np.testing.assert_allclose(variable.numpy(), param.numpy(), atol=1e-5)
    # The learning rate scales the output: twice the rate, twice the first update.
    model2 = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model2.set_weights(model.get_weights())
    start = [w.copy() for w in model2.get_weights()]
    doubled = LearnedKerasOptimizer(lstm, learning_rate=0.1)
    single = LearnedKerasOptimizer(lstm)
    grads = [tf.ones_like(v) * 0.01 for v in model2.trainable_variables]
    doubled.apply_gradients(zip(grads, model2.trainable_variables))
    moved = [w - s for w, s in zip(model2.get_weights(), start)]
    model2.set_weights(start)
    single.apply_gradients(zip(grads, model2.trainable_variables))
    for twice, once in zip(moved, [w - s for w, s in zip(model2.get_weights(), start)]):
        np.testing.assert_allclose(twice, 2 * once, atol=1e-6)
        assert np.any(once != 0)


def _regression_problem(index: int) -> Problem:
    """Linear least squares on 32 points in 4-d: the kind of problem `fit` solves below."""
    rng = np.random.default_rng([11, index])
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = x @ rng.normal(size=(4, 1)).astype(np.float32) + rng.normal()
    params = [
        tf.constant(rng.uniform(-0.9, 0.9, size=(4, 1)), tf.float32),
        tf.zeros([1]),
    ]
    return Problem(params, (tf.constant(x), tf.constant(y, tf.float32)))


def _regression_loss(params, data, step):
    x, y = data
    return tf.reduce_mean(tf.square(x @ params[0] + params[1] - y))


def test_fit_with_the_meta_trained_keras_optimizer_lowers_the_loss():
    keras.utils.set_random_seed(5)
    lstm = LSTMOptimizer(hidden_units=8, output_scale=0.1)
    learned_optimizers.meta_train(
        lstm,
        _regression_problem,
        _regression_loss,
        problems=25,
        unroll_steps=20,
        truncation=5,
        learning_rate=1e-2,
    )
    x, y = _regression_problem(999).data
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(
        optimizer=learned_optimizers.to_keras_optimizer(lstm), loss="mse", jit_compile=False
    )
    before = float(model.evaluate(x, y, verbose=0))
    history = model.fit(x, y, batch_size=32, epochs=20, verbose=0)
    after = float(model.evaluate(x, y, verbose=0))
    assert len(history.history["loss"]) == 20
    assert after < 0.2 * before, (before, after)


def test_save_and_load_round_trip(tmp_path):
    keras.utils.set_random_seed(6)
    lstm = LSTMOptimizer(hidden_units=5, output_scale=0.03, preprocess_p=8.0)
    path = LearnedKerasOptimizer(lstm).save(str(tmp_path / "opt"))
    loaded = learned_optimizers.load_optimizer(path)
    assert (loaded.hidden_units, loaded.output_scale, loaded.preprocess_p) == (5, 0.03, 8.0)
    for a, b in zip(lstm.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    params = [tf.constant([[0.5, -1.0]]), tf.constant([2.0])]
    grads = [tf.constant([[1e-3, -0.2]]), tf.constant([0.0])]
    ours, _ = lstm.update(params, grads, lstm.init(params), 0)
    theirs, _ = loaded.update(params, grads, loaded.init(params), 0)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    keras_optimizer = LearnedKerasOptimizer.load(path)
    assert keras_optimizer.lstm_optimizer.hidden_units == 5
    assert np.isclose(float(keras_optimizer.learning_rate), 0.03)

    config_path = tmp_path / "opt" / learned_optimizers.CONFIG_FILE
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "hidden_units": 7}))
    with pytest.raises(ValueError, match="shape"):
        learned_optimizers.load_optimizer(path)
    # Saving again replaces the folder whole, leaving no staging folder beside it.
    assert learned_optimizers.save_optimizer(lstm, path) == path
    assert learned_optimizers.load_optimizer(path).hidden_units == 5
    assert [p.name for p in tmp_path.iterdir()] == ["opt"]
