"""`matching`: Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu and
Wierstra, "Matching Networks for One Shot Learning", NeurIPS 2016).

A query is classified by attending over the labelled support set:
`p(y=k | x̂) = Σ_i a(x̂, x_i) [y_i = k]`, with the attention
`a(x̂, x_i) = softmax_i(c · cos(f(x̂), g(x_i)))`. The paper's cosine
attention has no scale; here `c` is a learned temperature (stored as a log,
initialised to 10, as protonet's cosine metric) so the softmax can become
confident. `predict` returns `log(p + 1e-8)`: the core's softmax
cross-entropy of these logits is then the paper's negative log-likelihood.

Without full-context embeddings (the default) `f = g` is the backbone,
optionally followed by a linear projection (`embedding_dim`). With them
(`fce`, the paper's section 2.1.2 and appendix A):

* `g(x_i) = h→_i + h←_i + g'(x_i)`: a bidirectional LSTM reads the support
  embeddings as one sequence, in the order given, with a skip connection.
* `f(x̂)`: an attention LSTM runs `fce_steps` read steps over `g(support)`:
  `h_k, c_k = LSTM(f'(x̂), [h_{k-1} + r_{k-1}, c_{k-1}])`, `h_k += f'(x̂)`,
  `r_k = Σ_i softmax_i(h_k · g(x_i)) g(x_i)`, and `f(x̂) = h_K`. The paper
  concatenates `h` and `r` as the state; summing keeps the state at the
  embedding width.

The LSTMs are as wide as the embedding: with `embedding_dim` 0 that is the
backbone's feature width, so FCE on a wide flattened backbone adds many
parameters (three LSTMs of `8·d²` weights each). The read steps are a Python
loop over a fixed count and the support LSTM is a `tf.while_loop`, so both
trace with unknown support and query sizes and compile with XLA.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import keras_tuner
import tensorflow as tf

from metasearch.api import (
    Config,
    MetaLearner,
    TaskSpec,
    accuracy,
    feature_dim,
    project,
    projection_layer,
)

# 0 keeps the backbone's features as they are.
EMBEDDING_DIMS = (0, 64, 128)
FCE_STEPS = (1, 3, 5)
# Keeps log(p) finite for classes that get (almost) no attention.
LOG_EPSILON = 1e-8


def attention_log_probs(
    logits: tf.Tensor, support_one_hot: tf.Tensor, epsilon: float = LOG_EPSILON
) -> tf.Tensor:
    """`log(Σ_i softmax_i(logits)[q, i] · one_hot[i, k] + epsilon)`: `[q, num_classes]`.

    `logits [q, n]` score every query against every support item;
    `support_one_hot [n, num_classes]` are the support labels. A matmul with
    the one-hot labels sums the attention per class, which XLA compiles for a
    Python-int class count and which runs with a tensor one.
    """
    attention = tf.nn.softmax(logits, axis=1)
    return tf.math.log(tf.matmul(attention, support_one_hot) + epsilon)


def cosine_similarities(queries: tf.Tensor, support: tf.Tensor) -> tf.Tensor:
    """`[q, n]` cosine similarities between the rows of `queries` and `support`."""
    return tf.matmul(
        tf.math.l2_normalize(queries, axis=1),
        tf.math.l2_normalize(support, axis=1),
        transpose_b=True,
    )


class MatchingNetworks(MetaLearner):
    """Matching Networks: cosine attention over the support set, with optional FCE."""

    EMBEDS_IMAGES_INDEPENDENTLY = True

    @classmethod
    def sample_config(cls, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        return {
            "fce": hp.Boolean("matching/fce", default=False),
            # Declared always (no conditional scopes); it only matters with fce.
            "fce_steps": hp.Choice("matching/fce_steps", list(FCE_STEPS), default=1),
            "embedding_dim": hp.Choice("matching/embedding_dim", list(EMBEDDING_DIMS), default=0),
        }

    def __init__(self, backbone: keras.layers.Layer, config: Config, task: TaskSpec, **kwargs):
        super().__init__(backbone, config, task, **kwargs)
        self.fce = bool(self.config["fce"])
        self.fce_steps = int(self.config["fce_steps"])
        if self.fce_steps < 1:
            raise ValueError(f"matching: fce_steps must be at least 1, got {self.fce_steps}")
        dim = int(self.config["embedding_dim"])
        self.projection = projection_layer(dim)
        # Cosine similarities live in [-1, 1]; a learned scale lets the
        # softmax become confident. Stored as a log for positivity.
        self.log_temperature = self.add_weight(
            name="log_temperature",
            shape=(),
            initializer=keras.initializers.Constant(math.log(10.0)),
        )
        if self.fce:
            # The LSTM states are added to the embeddings, so they must be as
            # wide; without a projection that is the backbone's output width.
            units = dim or feature_dim(backbone, task)
            self.units = units
            # cuDNN kernels compile with neither XLA nor every export target;
            # the generic kernel gives the same numbers everywhere.
            self.support_lstm = keras.layers.Bidirectional(
                keras.layers.LSTM(units, return_sequences=True, use_cudnn=False),
                merge_mode="sum",
                name="support_lstm",
            )
            self.query_cell = keras.layers.LSTMCell(units, name="query_lstm")

    def embed(self, images, training=False):
        return project(self.backbone, self.projection, images, training)

    def adapt(self, support_images, support_labels, num_classes, training=False):
        embeddings = self.embed(support_images, training=training)
        return self.support_state(embeddings, support_labels, num_classes, training=training)

    def predict(self, task_state, query_images, training=False):
        queries = self.embed(query_images, training=training)
        return self.log_probs(task_state, queries, training=training)

    def adapt_embeddings(self, support_embeddings, support_labels, num_classes):
        return self.support_state(support_embeddings, support_labels, num_classes)

    def predict_embeddings(self, task_state, query_embeddings):
        return self.log_probs(task_state, query_embeddings)

    def support_state(self, embeddings, labels, num_classes, training=False) -> dict[str, Any]:
        """The task state from support embeddings `[n, d]`: `g(support)` and one-hot labels."""
        if self.fce:
            # The whole support set is one sequence (a batch of one).
            context = self.support_lstm(embeddings[None], training=training)[0]
            embeddings = embeddings + context
        return {
            "support": embeddings,
            "one_hot": tf.one_hot(labels, num_classes, dtype=embeddings.dtype),
        }

    def query_embeddings(self, queries, support, training=False) -> tf.Tensor:
        """`f(x̂)`: the attention LSTM's read steps over `support` (identity without FCE)."""
        if not self.fce:
            return queries
        h = tf.zeros_like(queries)
        c = tf.zeros_like(queries)
        read = tf.zeros_like(queries)
        for _ in range(self.fce_steps):
            h, (_, c) = self.query_cell(queries, [h + read, c], training=training)
            h = h + queries
            weights = tf.nn.softmax(tf.matmul(h, support, transpose_b=True), axis=1)
            read = tf.matmul(weights, support)
        return h

    def log_probs(self, task_state, queries, training=False) -> tf.Tensor:
        """Log-probabilities `[q, num_classes]` of query embeddings `[q, d]`."""
        support = task_state["support"]
        queries = self.query_embeddings(queries, support, training=training)
        logits = tf.exp(self.log_temperature) * cosine_similarities(queries, support)
        return attention_log_probs(logits, task_state["one_hot"])

    def meta_train_loss(self, episode):
        # One backbone pass over support and query together: batch norm sees
        # the whole episode and the convolutions run on one larger batch.
        n_support = tf.shape(episode.support_images)[0]
        images = tf.concat([episode.support_images, episode.query_images], axis=0)
        embeddings = self.embed(images, training=True)
        state = self.support_state(
            embeddings[:n_support], episode.support_labels, self.task.n_way, training=True
        )
        logits = self.log_probs(state, embeddings[n_support:], training=True)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=episode.query_labels, logits=logits
            )
        )
        return loss, {"accuracy": accuracy(logits, episode.query_labels)}
