"""`versa`: VERSA (Gordon, Bronskill, Bauer, Nowozin and Turner, ICLR 2019,
"Meta-Learning Probabilistic Inference for Prediction").

The paper: a shared feature extractor embeds every point; an amortization
network maps the support set of a task, in one forward pass and without
gradient steps, to an approximate posterior over the task-specific
parameters of a linear head. For classification each class's support
features are mean-pooled and the same network, applied to each class
independently, gives a diagonal Gaussian over that class's weight vector and
bias. Predictions average the softmax over L samples of the head, drawn with
the reparameterisation trick, and meta-training maximises the predictive
log-likelihood of the query labels, `log 1/L sum_l p(y | x, w_l)`.

This implementation:
* Feature extractor: the backbone, optionally followed by a linear
  projection (`embedding_dim`, as `protonet`).
* Classification: for class mean feature `p_k` (one-hot matmul, so
  `num_classes` may be a tensor in exports) the amortizer, an MLP of two
  hidden ELU layers (`hidden_units` wide), outputs a residual and a log
  scale. Departure from the paper (whose network outputs the mean
  directly): the mean is residual around a Prototypical Network's linear
  head, `mean_w = 2 p_k + f(p_k)`, `mean_b = -|p_k|^2 + g(p_k)`, and the
  residual's last layer starts at zero, so at initialisation the mean head
  is ProtoNet with squared Euclidean distance and meta-training starts
  where ProtoNet does. Second departure: the standard deviations are
  relative, `sigma_w = exp(u_w) * rms(2 p_k)` and `sigma_b = exp(u_b) *
  rms(2 p_k) |p_k|` (the scales without gradient), with `u` starting at
  log 0.05, so the initial noise is 5% of the head's scale whatever the
  features' magnitude and training starts stable.
* Regression (e.g. `sinusoid` with the `mlp` backbone): each support point
  gives `[h(x), y, h(x) y^T]` (features, targets and their products); these
  are mean-pooled (the pooled products are `H^T y / k`, linear regression's
  sufficient statistic given the features' second moments), and the two
  hidden layers and a linear output map them to a diagonal Gaussian over the
  head's weights `[d, target_dim]` and bias `[target_dim]` (mean kernel
  initialised small, scales at 0.05). Pooling before any per-point layer
  (as the paper's classification amortizer does) trained about 3x better on
  sine waves in a 50 s budget than a DeepSets per-point encoder. The
  observation noise is a learned homoscedastic scale per target (a
  log-sigma variable, starting at 1); the loss is
  `-mean_q log 1/L sum_l N(y_q | f_l(x_q), sigma^2)`.
* `adapt` is one forward pass returning the Gaussians' means and scales;
  `predict` samples them. Classification logits are the log of the sample-
  averaged probabilities (`logsumexp_l log_softmax_l - log L`), so they are
  normalised log-probabilities; regression predictions are the sample mean.
* Randomness: training draws from a `keras.random.SeedGenerator` (each
  step differs). With `training=False` everything is deterministic: the
  mean head (`eval_weights="mean"`), or `EVAL_SAMPLES` samples drawn with
  `tf.random.stateless_normal` under a fixed seed (`"samples"`), so graph,
  XLA and a reloaded SavedModel agree.

Hyperparameters (`versa/...`):
* `embedding_dim` (0, 64, 128, 256; default 0): width of the linear
  projection after the backbone; 0 uses the backbone's features directly.
* `hidden_units` (64, 128, 256; default 128): width of the amortizer's
  hidden layers.
* `train_samples` (1, 5, 10; default 10): L, head samples per meta-training
  episode (the paper's L = 10).
* `eval_weights` ("mean", "samples"; default "mean"): what evaluation and
  exports predict with.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import keras_tuner
import tensorflow as tf
import tensorflow_probability as tfp

from metasearch.api import (
    CLASSIFICATION,
    REGRESSION,
    Config,
    MetaLearner,
    TaskSpec,
    accuracy,
    class_means,
    feature_dim,
    project,
    projection_layer,
)

tfd = tfp.distributions

EMBEDDING_DIMS = (0, 64, 128, 256)
HIDDEN_UNITS = (64, 128, 256)
TRAIN_SAMPLES = (1, 5, 10)
EVAL_WEIGHTS = ("mean", "samples")
# Head samples and their fixed stateless seed for `eval_weights="samples"`.
EVAL_SAMPLES = 10
EVAL_SEED = (20190506, 7)
# Initial standard deviation of the head relative to its scale.
INITIAL_RELATIVE_SCALE = 0.05
# Keeps relative scales positive when features vanish.
EPSILON = 1e-6


def predictive_log_probs(queries: tf.Tensor, weights: tf.Tensor, biases: tf.Tensor) -> tf.Tensor:
    """`log 1/L sum_l softmax(x W_l^T + b_l)`: `[q, c]` from samples `weights [L, c, d]`,
    `biases [L, c]` and `queries [q, d]`, computed stably in log space."""
    logits = tf.einsum("qd,lcd->lqc", queries, weights) + biases[:, None, :]
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    samples = tf.cast(tf.shape(weights)[0], log_probs.dtype)
    return tf.reduce_logsumexp(log_probs, axis=0) - tf.math.log(samples)


def regression_log_likelihood(
    predictions: tf.Tensor, targets: tf.Tensor, noise_scale: tf.Tensor
) -> tf.Tensor:
    """Per query point `log 1/L sum_l N(y | f_l(x), sigma^2)`: `[q]` from
    `predictions [L, q, t]`, `targets [q, t]` and `noise_scale [t]`."""
    per_sample = tfd.Normal(predictions, noise_scale).log_prob(targets[None])
    per_sample = tf.reduce_sum(per_sample, axis=-1)  # independent target dims
    samples = tf.cast(tf.shape(predictions)[0], per_sample.dtype)
    return tf.reduce_logsumexp(per_sample, axis=0) - tf.math.log(samples)


def reparameterized_sample(normal: tfd.Normal, samples, seed: tf.Tensor) -> tf.Tensor:
    """`loc + scale * eps`, `[samples, *batch_shape]`, with `eps` from Philox under `seed`.

    Not `normal.sample`: its stateless sampler leaves the algorithm to the
    device and compiler, and XLA on CPU picks another one than the graph
    kernels, so a fixed seed would give different heads with and without
    XLA. Philox, named explicitly, gives the same numbers everywhere.
    """
    shape = tf.concat([[samples], tf.shape(normal.loc)], axis=0)
    eps = tf.random.stateless_normal(shape, seed, dtype=normal.loc.dtype, alg="philox")
    return normal.loc[None] + normal.scale[None] * eps


def _rms(x: tf.Tensor) -> tf.Tensor:
    return tf.sqrt(tf.reduce_mean(tf.square(x), axis=-1) + EPSILON)


class Versa(MetaLearner):
    """VERSA: amortized Gaussian posteriors over a linear head, for classification
    and regression (see the module docstring)."""

    TASK_KINDS = (CLASSIFICATION, REGRESSION)

    @classmethod
    def sample_config(cls, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """Declares `versa/embedding_dim`, `hidden_units`, `train_samples`, `eval_weights`."""
        return {
            "embedding_dim": hp.Choice("versa/embedding_dim", list(EMBEDDING_DIMS), default=0),
            "hidden_units": hp.Choice("versa/hidden_units", list(HIDDEN_UNITS), default=128),
            "train_samples": hp.Choice("versa/train_samples", list(TRAIN_SAMPLES), default=10),
            "eval_weights": hp.Choice("versa/eval_weights", list(EVAL_WEIGHTS), default="mean"),
        }

    def __init__(self, backbone: keras.layers.Layer, config: Config, task: TaskSpec, **kwargs):
        super().__init__(backbone, config, task, **kwargs)
        dim = int(self.config["embedding_dim"])
        hidden = int(self.config["hidden_units"])
        self.train_samples = int(self.config["train_samples"])
        self.eval_weights = self.config["eval_weights"]
        for key, value, known in (
            ("embedding_dim", dim, EMBEDDING_DIMS),
            ("hidden_units", hidden, HIDDEN_UNITS),
            ("train_samples", self.train_samples, TRAIN_SAMPLES),
            ("eval_weights", self.eval_weights, EVAL_WEIGHTS),
        ):
            if value not in known:
                raise ValueError(f"versa: unknown {key} {value!r}; known: {known}")
        self.projection = projection_layer(dim)
        self.feature_dim = dim or feature_dim(backbone, task)
        self.seed_generator = keras.random.SeedGenerator(name="versa_seed")
        log_scale = keras.initializers.Constant(math.log(INITIAL_RELATIVE_SCALE))
        d = self.feature_dim
        self.hidden = [
            keras.layers.Dense(hidden, activation="elu", name=f"amortizer{i}") for i in range(2)
        ]
        if task.is_regression:
            t = task.target_dim
            self.head_size = d * t + t
            # Means start small (near a zero head); scales at 5% of a unit head.
            self.mean_output = keras.layers.Dense(
                self.head_size,
                kernel_initializer=keras.initializers.VarianceScaling(0.1),
                name="mean_output",
            )
            self.scale_output = keras.layers.Dense(
                self.head_size,
                kernel_initializer="zeros",
                bias_initializer=log_scale,
                name="scale_output",
            )
            self.log_noise = self.add_weight(name="log_noise", shape=(t,), initializer="zeros")
        else:
            # Zero residual: the initial mean head is exactly ProtoNet's.
            self.mean_output = keras.layers.Dense(
                d + 1, kernel_initializer="zeros", name="residual_output"
            )
            self.scale_output = keras.layers.Dense(
                d + 1, kernel_initializer="zeros", bias_initializer=log_scale, name="scale_output"
            )

    def embed(self, images, training=False):
        """Features `[n, d]`: the backbone, then the projection if any."""
        return project(self.backbone, self.projection, images, training)

    # Amortization: support features to the head's Gaussian.

    def adapt(self, support_images, support_labels, num_classes, training=False):
        """One forward pass: the means and scales of the head's Gaussian posterior."""
        features = self.embed(support_images, training=training)
        if self.task.is_regression:
            return self.regression_posterior(features, support_labels)
        return self.class_posterior(class_means(features, support_labels, num_classes))

    def class_posterior(self, prototypes: tf.Tensor) -> dict[str, tf.Tensor]:
        """Per class, from mean features `[c, d]`: weight means and scales `[c, d]`,
        bias means and scales `[c]`."""
        d = self.feature_dim
        h = prototypes
        for layer in self.hidden:
            h = layer(h)
        residual = self.mean_output(h)
        log_scale = self.scale_output(h)
        squared_norm = tf.reduce_sum(tf.square(prototypes), axis=-1)
        # Scales relative to the prototype head; no gradient into the features through them.
        weight_scale = tf.stop_gradient(_rms(2.0 * prototypes))
        bias_scale = tf.stop_gradient(weight_scale * tf.sqrt(squared_norm + EPSILON))
        return {
            "weight_mean": 2.0 * prototypes + residual[:, :d],
            "weight_scale": tf.exp(log_scale[:, :d]) * weight_scale[:, None],
            "bias_mean": -squared_norm + residual[:, d],
            "bias_scale": tf.exp(log_scale[:, d]) * bias_scale,
        }

    def regression_inputs(self, features: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """Per-point amortizer inputs `[n, d + t + d t]`: features, targets, their products."""
        products = features[:, :, None] * targets[:, None, :]
        products = tf.reshape(products, [-1, self.feature_dim * self.task.target_dim])
        return tf.concat([features, targets, products], axis=-1)

    def regression_posterior(self, features: tf.Tensor, targets: tf.Tensor) -> dict:
        """From support features `[k, d]` and targets `[k, t]`: weight means and scales
        `[d, t]`, bias means and scales `[t]`."""
        d, t = self.feature_dim, self.task.target_dim
        # Pooling first: the mean of h(x) y is linear regression's H^T y / k, which
        # the layers then decode; encoding each point before pooling trained
        # several times slower on sine waves.
        h = tf.reduce_mean(self.regression_inputs(features, targets), axis=0, keepdims=True)
        for layer in self.hidden:
            h = layer(h)
        mean = self.mean_output(h)[0]
        scale = tf.exp(self.scale_output(h)[0])
        return {
            "weight_mean": tf.reshape(mean[: d * t], [d, t]),
            "weight_scale": tf.reshape(scale[: d * t], [d, t]),
            "bias_mean": mean[d * t :],
            "bias_scale": scale[d * t :],
        }

    # Sampling and prediction.

    def sample_head(self, state: dict, samples: int, seed: tf.Tensor):
        """`samples` reparameterised draws of the head: weights `[L, *w]`, biases `[L, *b]`.

        Weights and biases are drawn as one flat Gaussian under one seed: no
        seed splitting, whose default algorithm also differs under XLA.
        """
        weight_mean, bias_mean = state["weight_mean"], state["bias_mean"]
        head = tfd.Normal(
            tf.concat([tf.reshape(weight_mean, [-1]), tf.reshape(bias_mean, [-1])], 0),
            tf.concat(
                [tf.reshape(state["weight_scale"], [-1]), tf.reshape(state["bias_scale"], [-1])],
                0,
            ),
        )
        drawn = reparameterized_sample(head, samples, tf.cast(seed, tf.int32))
        size = tf.size(weight_mean)
        weights = tf.reshape(drawn[:, :size], tf.concat([[samples], tf.shape(weight_mean)], 0))
        biases = tf.reshape(drawn[:, size:], tf.concat([[samples], tf.shape(bias_mean)], 0))
        return weights, biases

    def head_samples(self, state: dict, training: bool):
        """Weights and biases with a leading sample axis, as `predict` uses them.

        Training draws `train_samples` with a fresh seed each call; evaluation
        uses the mean head (one "sample") or `EVAL_SAMPLES` under a fixed seed.
        """
        if training:
            return self.sample_head(state, self.train_samples, self.seed_generator.next())
        if self.eval_weights == "samples":
            return self.sample_head(state, EVAL_SAMPLES, tf.constant(EVAL_SEED, tf.int32))
        return state["weight_mean"][None], state["bias_mean"][None]

    def sampled_outputs(self, state: dict, queries: tf.Tensor, training: bool) -> tf.Tensor:
        """Regression: predictions `[L, q, t]` of each head sample."""
        weights, biases = self.head_samples(state, training)
        return tf.einsum("qd,ldt->lqt", queries, weights) + biases[:, None, :]

    def predict(self, task_state, query_images, training=False):
        """Classification: log predictive probabilities `[q, c]` (valid logits);
        regression: the mean prediction over head samples `[q, t]`."""
        queries = self.embed(query_images, training=training)
        return self._predict_features(task_state, queries, training)

    def _predict_features(self, state, queries, training):
        if self.task.is_regression:
            return tf.reduce_mean(self.sampled_outputs(state, queries, training), axis=0)
        weights, biases = self.head_samples(state, training)
        return predictive_log_probs(queries, weights, biases)

    @property
    def noise_scale(self) -> tf.Tensor:
        """Regression: the learned observation noise standard deviation `[t]`."""
        return tf.exp(self.log_noise)

    def meta_train_loss(self, episode):
        """Negative predictive log-likelihood of the query set under `train_samples` heads."""
        # One backbone pass over support and query together (as protonet).
        n_support = tf.shape(episode.support_images)[0]
        images = tf.concat([episode.support_images, episode.query_images], axis=0)
        features = self.embed(images, training=True)
        support, queries = features[:n_support], features[n_support:]
        if self.task.is_regression:
            state = self.regression_posterior(support, episode.support_labels)
            outputs = self.sampled_outputs(state, queries, training=True)
            log_likelihood = regression_log_likelihood(
                outputs, episode.query_labels, self.noise_scale
            )
            mse = tf.reduce_mean(tf.square(tf.reduce_mean(outputs, 0) - episode.query_labels))
            return -tf.reduce_mean(log_likelihood), {"mse": mse}
        state = self.class_posterior(class_means(support, episode.support_labels, self.task.n_way))
        log_probs = self._predict_features(state, queries, training=True)
        true = tf.gather(log_probs, episode.query_labels, axis=1, batch_dims=1)
        return -tf.reduce_mean(true), {"accuracy": accuracy(log_probs, episode.query_labels)}
