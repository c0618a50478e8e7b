"""Inner-loop update rules: the `InnerOptimizer` contract and the rules the core ships.

A gradient-based learner's inner loop (`metasearch.inner_loop.gradient_descent`)
takes its update rule as an `InnerOptimizer`:

* `SGD`: a scalar step size (MAML).
* `PerParameterSGD`: a learned step size per coordinate (Meta-SGD).
* `LSTMOptimizer`: the coordinate-wise LSTM of Andrychowicz, Denil, Gomez,
  Hoffman, Pfau, Schaul, Shillingford and de Freitas, "Learning to learn by
  gradient descent by gradient descent" (NeurIPS 2016).

The LSTM optimiser is a small recurrent network `m` with weights `phi` that
maps a parameter's gradient to its update, `theta_{t+1} = theta_t + g_t`,
`[g_t, h_{t+1}] = m(grad_t, h_t; phi)`. It is coordinate-wise: one two-layer
LSTM (20 units) is shared by every coordinate of every parameter, each
coordinate with its own hidden state, so it serves any number of
parameters. Gradients are preprocessed (their appendix A) into two inputs,
`(log|g| / p, sign g)` when `|g| >= e^-p`, else `(-1, e^p g)`, with `p = 10`,
which evens out scales that span many orders of magnitude; the LSTM's output
is multiplied by a small constant. Here it is a Keras layer: pure tensor
code (hand-written LSTM matmuls on its own weights), XLA-compilable and
exportable in a SavedModel. The MAML family
(`metasearch.gradient_learner.GradientMetaLearner`) takes it as its inner
optimiser (`inner_optimizer="learned"`), meta-trained jointly with the
initialisation by the core's outer loop; `metasearch.learned_optimizers`
meta-trains one on its own, the paper's way, and exports it as a
`keras.optimizers.Optimizer`.

Every rule is pure tensor code; the outer gradient flows through `update`, so
learned rules (step sizes, networks) are meta-trained by the core's optimiser
like any other weight.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

Params = list[tf.Tensor]

DEFAULT_HIDDEN_UNITS = 20
DEFAULT_OUTPUT_SCALE = 0.1
DEFAULT_PREPROCESS_P = 10.0

# One coordinate's LSTM state: per layer, (h, c), each [numel, hidden].
LayerStates = list[tuple[tf.Tensor, tf.Tensor]]


class InnerOptimizer(abc.ABC):
    """An inner-loop update rule over a list of tensors.

    `init(params)` returns the rule's state (any nest of tensors, possibly
    empty); `update(params, grads, state, step)` returns `(new_params,
    new_state)`. Both are pure tensor code; `step` is a Python int. The outer
    gradient flows through `update`, so learned rules (step sizes, networks)
    are meta-trained by the core's optimiser like any other weight.
    """

    def init(self, params: Params) -> Any:
        """The state before the first step (default: none)."""
        return ()

    @abc.abstractmethod
    def update(self, params: Params, grads: Params, state: Any, step: int) -> tuple[Params, Any]:
        """One step: the new parameters and state."""


class SGD(InnerOptimizer):
    """Plain gradient descent with one step size (a float or a scalar tensor)."""

    def __init__(self, learning_rate):
        self.learning_rate = learning_rate

    def update(self, params, grads, state, step):
        return [p - self.learning_rate * g for p, g in zip(params, grads)], state


class PerParameterSGD(InnerOptimizer):
    """Gradient descent with a step size per coordinate (Meta-SGD's learned alpha).

    `learning_rates` holds one tensor (or variable) shaped like each parameter.
    """

    def __init__(self, learning_rates: Sequence[Any]):
        self.learning_rates = list(learning_rates)

    def update(self, params, grads, state, step):
        return [p - lr * g for p, g, lr in zip(params, grads, self.learning_rates)], state


def preprocess_gradients(gradients: tf.Tensor, p: float = DEFAULT_PREPROCESS_P) -> tf.Tensor:
    """The paper's gradient preprocessing: `[..., 2]` inputs from gradients `[...]`.

    `(clip(log|g| / p, -1, 1), sign g)` where `|g| >= e^-p`, `(-1, e^p g)` elsewhere.
    """
    gradients = tf.convert_to_tensor(gradients)
    threshold = math.exp(-p)
    magnitude = tf.abs(gradients)
    large = magnitude >= threshold
    # The log of the floored magnitude keeps the unselected branch finite, so
    # that tf.where's gradient (second-order MAML) never multiplies inf by 0.
    log_part = tf.clip_by_value(tf.math.log(tf.maximum(magnitude, threshold)) / p, -1.0, 1.0)
    first = tf.where(large, log_part, -tf.ones_like(gradients))
    second = tf.where(large, tf.sign(gradients), math.exp(p) * gradients)
    return tf.stack([first, second], axis=-1)


class LSTMOptimizer(keras.layers.Layer, InnerOptimizer):
    """A coordinate-wise LSTM optimiser (Andrychowicz et al., 2016).

    `layers` LSTM layers of `hidden_units` units, shared by all coordinates,
    read `preprocess_gradients` of each coordinate's gradient and emit its
    update, `output_scale * (h W + b)`. The gates follow `keras.layers.
    LSTMCell` (order i, f, c, o; unit forget bias), written as matmuls on the
    layer's own weights so that the rule is plain tensor code.

    As an `InnerOptimizer`: `init(params)` gives zero states, per parameter
    tensor a list over layers of `(h, c)`, each `[numel, hidden_units]`;
    `update` applies one step to every tensor at once.
    """

    def __init__(
        self,
        hidden_units: int = DEFAULT_HIDDEN_UNITS,
        output_scale: float = DEFAULT_OUTPUT_SCALE,
        layers: int = 2,
        preprocess_p: float = DEFAULT_PREPROCESS_P,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_units < 1 or layers < 1:
            raise ValueError("LSTMOptimizer needs hidden_units >= 1 and layers >= 1")
        if not output_scale > 0 or not preprocess_p > 0:
            raise ValueError("LSTMOptimizer needs output_scale > 0 and preprocess_p > 0")
        self.hidden_units = int(hidden_units)
        self.num_layers = int(layers)
        self.output_scale = float(output_scale)
        self.preprocess_p = float(preprocess_p)
        units = self.hidden_units
        self.kernels, self.recurrent_kernels, self.biases = [], [], []
        for index in range(self.num_layers):
            self.kernels.append(
                self.add_weight(
                    name=f"lstm{index}_kernel",
                    shape=(2 if index == 0 else units, 4 * units),
                    initializer="glorot_uniform",
                )
            )
            self.recurrent_kernels.append(
                self.add_weight(
                    name=f"lstm{index}_recurrent_kernel",
                    shape=(units, 4 * units),
                    initializer="orthogonal",
                )
            )
            self.biases.append(
                self.add_weight(
                    name=f"lstm{index}_bias", shape=(4 * units,), initializer=_unit_forget_bias
                )
            )
        self.output_kernel = self.add_weight(
            name="output_kernel", shape=(units, 1), initializer="glorot_uniform"
        )
        self.output_bias = self.add_weight(name="output_bias", shape=(1,), initializer="zeros")
        self.built = True

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "output_scale": self.output_scale,
            "layers": self.num_layers,
            "preprocess_p": self.preprocess_p,
        }

    # --- the rule on flat coordinates ---------------------------------------

    def zero_state(self, count) -> LayerStates:
        """Zero `(h, c)` per layer for `count` coordinates (an int or a scalar tensor)."""
        zeros = tf.zeros(tf.stack([count, self.hidden_units]))
        return [(zeros, zeros) for _ in range(self.num_layers)]

    def flat_update(
        self, gradients: tf.Tensor, state: LayerStates, scale=None
    ) -> tuple[tf.Tensor, LayerStates]:
        """Updates `[n]` for gradients `[n]` of `n` coordinates, and the new state.

        `scale` replaces `output_scale` (a float or scalar tensor; the Keras
        optimiser passes its learning rate).
        """
        inputs = preprocess_gradients(gradients, self.preprocess_p)
        new_state = []
        for index, (h, c) in enumerate(state):
            z = (
                tf.matmul(inputs, self.kernels[index])
                + tf.matmul(h, self.recurrent_kernels[index])
                + self.biases[index]
            )
            i, f, g, o = tf.split(z, 4, axis=-1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            new_state.append((h, c))
            inputs = h
        output = tf.matmul(inputs, self.output_kernel) + self.output_bias
        scale = self.output_scale if scale is None else scale
        return scale * output[:, 0], new_state

    # --- the InnerOptimizer contract ----------------------------------------

    def init(self, params):
        return [self.zero_state(_numel(p)) for p in params]

    def update(self, params, grads, state, step):
        # One LSTM pass over all coordinates of all tensors: a few large
        # matmuls instead of a few small ones per tensor.
        sizes = [_numel(p) for p in params]
        flat_grads = [tf.reshape(g, [-1]) for g in grads]
        if len(params) == 1:
            gradients, joined = flat_grads[0], state[0]
        else:
            gradients = tf.concat(flat_grads, axis=0)
            joined = [
                tuple(tf.concat([s[layer][k] for s in state], axis=0) for k in range(2))
                for layer in range(self.num_layers)
            ]
        delta, new_joined = self.flat_update(gradients, joined)
        if len(params) == 1:
            deltas, new_state = [delta], [new_joined]
        else:
            if all(isinstance(n, int) for n in sizes):
                splits = sizes
            else:
                splits = tf.stack([tf.cast(n, tf.int32) for n in sizes])
            deltas = tf.split(delta, splits, num=len(sizes))
            parts = [
                [tf.split(t, splits, num=len(sizes)) for t in layer_state]
                for layer_state in new_joined
            ]
            new_state = [
                [(parts[layer][0][i], parts[layer][1][i]) for layer in range(self.num_layers)]
                for i in range(len(params))
            ]
        new_params = [p + tf.reshape(d, tf.shape(p)) for p, d in zip(params, deltas)]
        return new_params, new_state


def _unit_forget_bias(shape, dtype=None):
    """Zeros with ones on the forget gate's quarter, as `keras.layers.LSTMCell`."""
    units = shape[0] // 4
    return tf.concat([tf.zeros([units]), tf.ones([units]), tf.zeros([2 * units])], 0)


def _numel(tensor):
    """The element count: a Python int when the shape is static, else a tensor."""
    count = tensor.shape.num_elements()
    return count if count is not None else tf.size(tensor)
