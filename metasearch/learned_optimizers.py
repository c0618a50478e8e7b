"""Meta-training a learned optimiser on its own, and shipping it as a Keras optimiser.

`meta_train` trains a `metasearch.inner_optimizers.LSTMOptimizer`
the way Andrychowicz et al. (2016) did: sample an optimisee problem (initial
parameters and a loss over mini-batches), run the LSTM on it for
`unroll_steps` steps (e.g. 100) in truncations of `truncation` steps (e.g.
20); each truncation's meta-loss is the mean of the optimisee's losses at the
parameters its steps produce, and its gradient with respect to the LSTM's
weights, taken through the updates, is applied with Adam. As in the paper the
optimisee's gradients are constants to the meta-gradient (no second
derivatives), and the optimisee's parameters and the LSTM's state carry over
from one truncation to the next as constants. This module owns that
`tf.function`.

`to_keras_optimizer` turns a (trained) `LSTMOptimizer` into a
`keras.optimizers.Optimizer` (`LearnedKerasOptimizer`) whose `update_step`
applies the same rule coordinate-wise, with the LSTM's state in per-variable
slots, so `model.compile(optimizer=...)` and `fit` work with it.
`save_optimizer` / `load_optimizer` (and the Keras optimiser's `save` /
`load`) write and read the LSTM's weights as `weights.npz` and its
hyperparameters as `config.json` in a folder.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from metasearch import graphs
from metasearch.export import staged_export
from metasearch.inner_optimizers import LSTMOptimizer

WEIGHTS_FILE = "weights.npz"
META_OBJECTIVES = ("loss", "log_loss")
FINAL_LEARNING_RATE_FRACTION = 0.05
CONFIG_FILE = "config.json"


class Problem(NamedTuple):
    """One optimisee: its initial parameters and whatever its loss reads.

    `data` is any nest of tensors (e.g. a task's images, labels and the
    mini-batch indices of every step); problems given to one `meta_train`
    should share shapes so that its step is traced once.
    """

    params: list[tf.Tensor]
    data: Any


# loss_fn(params, data, step) -> scalar: the optimisee's loss on step `step`'s
# mini-batch (`step` a scalar int32 tensor in 0..unroll_steps).
LossFn = Callable[[list[tf.Tensor], Any, tf.Tensor], tf.Tensor]


class TruncatedBPTT:
    """Truncated backpropagation through unrolled optimisation (the paper's procedure).

    `train_truncation(params, state, data, start)` runs `truncation` steps
    of `optimizer` on `loss_fn` from step `start`, takes one Adam step on the
    LSTM's weights and returns `(params, state, meta_loss)`, the first two as
    constants for the next truncation. `run_problem` runs one problem's
    whole unroll.
    """

    def __init__(
        self,
        optimizer: LSTMOptimizer,
        loss_fn: LossFn,
        unroll_steps: int = 100,
        truncation: int = 20,
        learning_rate: float = 1e-3,
        clip_norm: float | None = None,
        jit_compile: bool = False,
        meta_objective: str = "loss",
    ):
        if meta_objective not in META_OBJECTIVES:
            raise ValueError(f"meta_objective must be one of {META_OBJECTIVES}")
        self.log_objective = meta_objective == "log_loss"
        if truncation < 1 or unroll_steps < truncation:
            raise ValueError("need 1 <= truncation <= unroll_steps")
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.unroll_steps = int(unroll_steps)
        self.truncation = int(truncation)
        self.meta_optimizer = keras.optimizers.Adam(learning_rate, global_clipnorm=clip_norm)
        self.meta_optimizer.build(optimizer.trainable_variables)
        self.train_truncation = graphs.function(self._train_truncation, jit_compile=jit_compile)

    def meta_gradients(self, params, state, data, start):
        """One truncation's meta-gradient: `(gradients, params, state, meta_loss)`.

        `gradients` are with respect to the LSTM's trainable variables; the
        returned parameters and state are constants. Pure tensor code (the
        tf.function is `train_truncation`).
        """
        variables = self.optimizer.trainable_variables
        params = [tf.convert_to_tensor(p) for p in params]
        losses = []
        with tf.GradientTape() as tape:
            for k in range(self.truncation):
                with tf.GradientTape(watch_accessed_variables=False) as inner:
                    inner.watch(params)
                    loss = self.loss_fn(params, data, start + k)
                # Not recording the gradient makes it a constant to the outer
                # tape: the paper's dropped second derivatives, and no memory
                # spent on the gradient's own graph.
                with tape.stop_recording():
                    grads = inner.gradient(
                        loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO
                    )
                # The first loss is at the truncation's given parameters, which
                # the LSTM's weights cannot change.
                if k > 0:
                    losses.append(self._objective(loss))
                params, state = self.optimizer.update(params, grads, state, k)
            # The last update is judged on the next step's mini-batch.
            losses.append(self._objective(self.loss_fn(params, data, start + self.truncation)))
            meta_loss = tf.add_n(losses) / len(losses)
        gradients = tape.gradient(meta_loss, variables)
        return (
            gradients,
            [tf.stop_gradient(p) for p in params],
            tf.nest.map_structure(tf.stop_gradient, state),
            meta_loss,
        )

    def _train_truncation(self, params, state, data, start):
        gradients, params, state, meta_loss = self.meta_gradients(params, state, data, start)
        self.meta_optimizer.apply_gradients(zip(gradients, self.optimizer.trainable_variables))
        return params, state, meta_loss

    def _objective(self, loss):
        # The log weighs a halving of the loss the same late as early, where
        # the plain sum is dominated by the first steps' large losses.
        return tf.math.log(loss + 1e-8) if self.log_objective else loss

    def run_problem(self, problem: Problem) -> list[float]:
        """Meta-trains over one problem's unroll; returns each truncation's meta-loss."""
        params = [tf.convert_to_tensor(p) for p in problem.params]
        state = self.optimizer.init(params)
        losses = []
        for start in range(0, self.unroll_steps, self.truncation):
            params, state, meta_loss = self.train_truncation(
                params, state, problem.data, tf.constant(start, tf.int32)
            )
            losses.append(float(meta_loss))
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"meta-loss became {losses[-1]} at step {start}")
        return losses


def meta_train(
    optimizer: LSTMOptimizer,
    make_problem: Callable[[int], Problem],
    loss_fn: LossFn,
    problems: int | None = None,
    seconds: float | None = None,
    unroll_steps: int = 100,
    truncation: int = 20,
    learning_rate: float = 1e-3,
    clip_norm: float | None = None,
    jit_compile: bool = False,
    meta_objective: str = "loss",
    cosine_decay: bool = False,
    on_problem: Callable[[int, list[float]], None] | None = None,
) -> dict[str, Any]:
    """Meta-trains `optimizer` on problems `make_problem(0), make_problem(1), ...`.

    Stops after `problems` problems or once `seconds` of wall-clock time are
    spent (checked between problems; at least one runs), whichever comes
    first. `loss_fn(params, data, step)` is the optimisee's loss at step
    `step`'s mini-batch, for steps `0..unroll_steps` (the last judges the
    final update). Adam (`learning_rate`, optional global-norm clipping
    `clip_norm`) updates the LSTM's weights once per truncation; with
    `cosine_decay` its learning rate decays along a cosine to 5% over the
    budget (the fraction of problems or of seconds spent, whichever is
    larger). `meta_objective` is `"loss"` (the paper's mean of the losses) or
    `"log_loss"` (the mean of their logs, which keeps counting once the
    losses are small).
    `on_problem(index, meta_losses)` is called after each problem. Returns
    the per-problem mean meta-loss, the number of problems and truncations,
    and the seconds spent.
    """
    if problems is None and seconds is None:
        raise ValueError("meta_train needs a number of problems or a time budget")
    trainer = TruncatedBPTT(
        optimizer,
        loss_fn,
        unroll_steps,
        truncation,
        learning_rate,
        clip_norm,
        jit_compile,
        meta_objective,
    )
    start = time.perf_counter()
    history: list[float] = []
    index = 0
    while problems is None or index < problems:
        elapsed = time.perf_counter() - start
        if index and seconds is not None and elapsed >= seconds:
            break
        if cosine_decay:
            progress = max(
                index / problems if problems else 0.0, elapsed / seconds if seconds else 0.0
            )
            factor = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
            trainer.meta_optimizer.learning_rate.assign(
                learning_rate
                * (FINAL_LEARNING_RATE_FRACTION + (1 - FINAL_LEARNING_RATE_FRACTION) * factor)
            )
        losses = trainer.run_problem(make_problem(index))
        history.append(float(np.mean(losses)))
        if on_problem is not None:
            on_problem(index, losses)
        index += 1
    return {
        "meta_losses": history,
        "problems": index,
        "truncations": index * math.ceil(unroll_steps / truncation),
        "seconds": time.perf_counter() - start,
    }


class LearnedKerasOptimizer(keras.optimizers.Optimizer):
    """A trained `LSTMOptimizer` as a Keras optimiser, for `model.compile`/`fit`.

    `update_step` applies the LSTM to each variable's gradient coordinate-wise
    and adds `learning_rate * output` to it; every variable keeps its own
    LSTM state (per layer `h` and `c`, `[numel, hidden_units]`) in optimiser
    slots. `learning_rate` defaults to the LSTM's `output_scale`, with which
    the updates are exactly `LSTMOptimizer.update`'s. The LSTM's weights are
    frozen: the Keras optimiser never trains them.
    """

    def __init__(
        self,
        lstm_optimizer: LSTMOptimizer,
        learning_rate: float | None = None,
        name: str = "learned_optimizer",
        **kwargs,
    ):
        if learning_rate is None:
            learning_rate = lstm_optimizer.output_scale
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.lstm_optimizer = lstm_optimizer
        self._lstm_slots: list[list[keras.Variable]] = []

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        units = self.lstm_optimizer.hidden_units
        self._lstm_slots = []
        for variable in var_list:
            count = int(np.prod(variable.shape))
            self._lstm_slots.append(
                [
                    self.add_variable(
                        shape=(count, units),
                        initializer="zeros",
                        name=f"{_clean(variable)}_lstm{layer}_{part}",
                    )
                    for layer in range(self.lstm_optimizer.num_layers)
                    for part in ("h", "c")
                ]
            )

    def update_step(self, gradient, variable, learning_rate):
        slots = self._lstm_slots[self._get_variable_index(variable)]
        state = [
            (tf.convert_to_tensor(slots[2 * i]), tf.convert_to_tensor(slots[2 * i + 1]))
            for i in range(self.lstm_optimizer.num_layers)
        ]
        gradient = tf.cast(tf.reshape(gradient, [-1]), tf.float32)
        delta, new_state = self.lstm_optimizer.flat_update(
            gradient, state, scale=tf.cast(learning_rate, tf.float32)
        )
        for slot, value in zip(slots, [t for pair in new_state for t in pair]):
            self.assign(slot, value)
        self.assign_add(variable, tf.cast(tf.reshape(delta, variable.shape), variable.dtype))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["lstm_optimizer"] = self.lstm_optimizer.get_config()
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # The config has the LSTM's shape, not its trained weights.
        raise NotImplementedError(
            "LearnedKerasOptimizer is restored with LearnedKerasOptimizer.load(path) "
            "from what its save(path) wrote; load Keras models using it with compile=False"
        )

    def save(self, path: str) -> str:
        """Writes the LSTM's weights and hyperparameters to the folder `path`."""
        return save_optimizer(self.lstm_optimizer, path)

    @classmethod
    def load(cls, path: str, **kwargs) -> LearnedKerasOptimizer:
        """A Keras optimiser running the LSTM saved at `path`."""
        return cls(load_optimizer(path), **kwargs)


def _clean(variable) -> str:
    # Slot names from the variable's path (a tf.Variable has only a name).
    path = getattr(variable, "path", None) or variable.name
    return "".join(c if c.isalnum() else "_" for c in str(path))


def to_keras_optimizer(
    lstm_optimizer: LSTMOptimizer, learning_rate: float | None = None, **kwargs
) -> LearnedKerasOptimizer:
    """The Keras optimiser applying `lstm_optimizer`'s rule (see `LearnedKerasOptimizer`)."""
    return LearnedKerasOptimizer(lstm_optimizer, learning_rate=learning_rate, **kwargs)


def save_optimizer(optimizer: LSTMOptimizer, path: str) -> str:
    """Writes `weights.npz` (each weight by name) and `config.json` into the folder `path`.

    Atomically, like the exports: an earlier save at `path` is replaced whole
    or not at all. Returns the folder's absolute path.
    """
    path = os.path.abspath(path)
    weights = {_weight_key(v): np.asarray(v.numpy()) for v in optimizer.weights}
    config = {
        k: v
        for k, v in optimizer.get_config().items()
        if k in ("hidden_units", "output_scale", "layers", "preprocess_p")
    }
    with staged_export(path) as folder:
        os.makedirs(folder)
        np.savez(os.path.join(folder, WEIGHTS_FILE), **weights)
        with open(os.path.join(folder, CONFIG_FILE), "w") as stream:
            json.dump(config, stream, indent=2, sort_keys=True)
    return path


def load_optimizer(path: str) -> LSTMOptimizer:
    """The `LSTMOptimizer` that `save_optimizer` wrote to `path`."""
    with open(os.path.join(path, CONFIG_FILE)) as stream:
        config = json.load(stream)
    optimizer = LSTMOptimizer(**config)
    with np.load(os.path.join(path, WEIGHTS_FILE)) as stored:
        expected = {_weight_key(v) for v in optimizer.weights}
        if set(stored.files) != expected:
            raise ValueError(
                f"{path}: weights {sorted(stored.files)} do not match the optimiser's "
                f"{sorted(expected)}"
            )
        for variable in optimizer.weights:
            value = stored[_weight_key(variable)]
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"{path}: {_weight_key(variable)} has shape {value.shape}, "
                    f"the optimiser's is {tuple(variable.shape)}"
                )
            variable.assign(value)
    return optimizer


def _weight_key(variable) -> str:
    # The name given to add_weight, unique within the layer (paths carry the
    # layer's auto-numbered name, which differs between instances).
    return str(variable.name)
