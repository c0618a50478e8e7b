"""`protonet`: Prototypical Networks (Snell, Swersky and Zemel, NeurIPS 2017).

A class is represented by the mean embedding of its support images (its
prototype); a query is classified by a softmax over negative distances to
the prototypes. The metric is part of the search: squared Euclidean distance
(the paper's) or cosine similarity scaled by a learned temperature; so is the
embedding width (a linear projection of the backbone's features, or none).
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
    class_means,
    project,
    projection_layer,
)

METRICS = ("sqeuclidean", "cosine")
# 0 keeps the backbone's features as they are.
EMBEDDING_DIMS = (0, 64, 128, 256)


def squared_distances(queries: tf.Tensor, prototypes: tf.Tensor) -> tf.Tensor:
    """`[q, c]` squared Euclidean distances, via the expansion |a|^2 - 2ab + |b|^2."""
    q2 = tf.reduce_sum(tf.square(queries), axis=1, keepdims=True)
    p2 = tf.reduce_sum(tf.square(prototypes), axis=1)[None, :]
    return tf.maximum(q2 - 2.0 * tf.matmul(queries, prototypes, transpose_b=True) + p2, 0.0)


class PrototypicalNetworks(MetaLearner):
    """Prototypical Networks with a searchable metric and embedding width."""

    EMBEDS_IMAGES_INDEPENDENTLY = True

    @classmethod
    def sample_config(cls, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        return {
            "metric": hp.Choice("protonet/metric", list(METRICS), default="sqeuclidean"),
            "embedding_dim": hp.Choice("protonet/embedding_dim", list(EMBEDDING_DIMS), default=0),
        }

    def __init__(self, backbone: keras.layers.Layer, config: Config, task: TaskSpec, **kwargs):
        super().__init__(backbone, config, task, **kwargs)
        self.metric = self.config["metric"]
        if self.metric not in METRICS:
            raise ValueError(f"protonet: unknown metric {self.metric!r}; known: {METRICS}")
        dim = int(self.config["embedding_dim"])
        self.projection = projection_layer(dim)
        if self.metric == "cosine":
            # Cosine similarities live in [-1, 1]; a learned scale lets the
            # softmax become confident. Stored as a log for positivity.
            self.log_temperature = self.add_weight(
                name="log_temperature",
                shape=(),
                initializer=keras.initializers.Constant(math.log(10.0)),
            )

    def embed(self, images, training=False):
        return project(self.backbone, self.projection, images, training)

    def adapt(self, support_images, support_labels, num_classes, training=False):
        embeddings = self.embed(support_images, training=training)
        return self.adapt_embeddings(embeddings, support_labels, num_classes)

    def predict(self, task_state, query_images, training=False):
        return self.predict_embeddings(task_state, self.embed(query_images, training=training))

    def adapt_embeddings(self, support_embeddings, support_labels, num_classes):
        return {"prototypes": class_means(support_embeddings, support_labels, num_classes)}

    def predict_embeddings(self, task_state, query_embeddings):
        return self.logits(query_embeddings, task_state["prototypes"])

    def logits(self, queries, prototypes):
        """Logits `[q, c]` of query embeddings against prototypes under the metric."""
        if self.metric == "sqeuclidean":
            return -squared_distances(queries, prototypes)
        similarity = tf.matmul(
            tf.math.l2_normalize(queries, axis=1),
            tf.math.l2_normalize(prototypes, axis=1),
            transpose_b=True,
        )
        return tf.exp(self.log_temperature) * similarity

    def meta_train_loss(self, episode):
        # One backbone pass over support and query together: batch norm sees
        # the whole episode and the convolutions run on one larger batch.
        n_support = tf.shape(episode.support_images)[0]
        images = tf.concat([episode.support_images, episode.query_images], axis=0)
        embeddings = self.embed(images, training=True)
        prototypes = class_means(embeddings[:n_support], episode.support_labels, self.task.n_way)
        logits = self.logits(embeddings[n_support:], prototypes)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=episode.query_labels, logits=logits
            )
        )
        return loss, {"accuracy": accuracy(logits, episode.query_labels)}
