"""`meta_critic`: Meta-Critic Networks (Sung, Zhang, Xiang, Hospedales and Yang, 2017).

The paper ("Learning to Learn: Meta-Critic Networks for Sample Efficient
Learning") trains a critic shared by all tasks that teaches a new actor: a
task-actor encoder network (TAEN) reads (input, action, reward) triplets of a
task and summarises the task as an embedding z; a meta-value network (MVN)
scores an action for an input given z; each new actor is trained by gradient
ascent on the critic's value, and the critic by regressing its values onto
the observed rewards. In its supervised setting the reward is the negative
loss and the label is known on the training set.

Here the actor is the MAML family's actor
(`metasearch.gradient_learner.GradientMetaLearner`): the
backbone and a linear head as fast weights, adapted with
`inner_loop.gradient_descent`, so batch norm, XLA and the in-graph export
come for free. This learner changes what the inner loop descends:

* `task_context`: the actor at its initial weights runs on the support set;
  each support point becomes a triplet (features, label, per-point loss),
  which an MLP encodes; the codes are mean-pooled (classification: per
  class too) into z. Pooling makes z independent of the order of the points.
* `inner_objective`: minus the mean critic value of the support points,
  i.e. a learned per-point loss. The MVN is factorised: an MLP over
  (features_i, label_i, z) (classification: the label's class code z_y
  instead of the label) gives per-point coefficients (c0, c1, c2), and
  `-V_i = (support_loss_weight + c0) * loss_i + c1 * phi_i + c2`, where
  phi is the mean residual for regression (with c0, a learned target shift
  and step size per point) and the prediction's entropy for classification
  (learned sharpening or smoothing). The actor's features are a fixed state
  (no gradient): the actor learns through its outputs, its "actions".
* `meta_train_loss`: the query loss of the adapted actor, differentiated
  through the critic-driven steps (second order unless `first_order`), so
  the critic learns a loss whose gradients adapt actors well (as in
  learned-loss meta-learning), plus the paper's critic regression:
  `value_weight * mean_q (V_q + loss_q)^2` on the query points at the adapted
  weights (inputs held fixed, so only the critic and TAEN learn from it).
  It anchors the learned loss to the true one, which keeps extra test-time
  steps stable. Metrics: `accuracy` or `mse`, and `critic_error` (that mean
  squared error).

Departures from the paper: the TAEN is a mean-pooled MLP (DeepSets) rather
than an LSTM over the triplet sequence; the MVN is linear in a few fixed
functions of the action, with coefficients from an MLP of the state and z,
rather than an MLP of the action itself. A general MLP of the action
(tried first) must be differentiated twice inside every inner step of every
episode: on sinusoid that made a meta-training step 2.4 times MAML's and
traced 3.5 times longer, for no better adaptation per step. The factorised
MVN is evaluated once per task, outside the inner loop. Further, the actor
is adapted by a few gradient steps from a meta-learned initialisation
(MAML) rather than trained from scratch; the critic is also meta-trained
through the actor's adaptation (second order), not only by value
regression; and the ordinary support loss may be kept next to the critic's
signal. The critic's last layer starts near zero, so an untrained
meta-critic adapts like MAML (exactly, with a zero last layer and
`support_loss_weight` 1).

Hyperparameters (prefix `meta_critic/`): the MAML family's `inner_steps`,
`eval_inner_steps`, `inner_learning_rate`, `batch_norm`, `head_init` and
`first_order` and `inner_optimizer` (see `metasearch.gradient_learner`; for meta_critic a regression task treats
`proto` as `learned`), and
* `critic_units`: width of the TAEN's and the MVN's hidden layers;
* `embedding_dim`: width of the task embedding z (and of each class's z_c);
* `support_loss_weight`: weight of the ordinary support loss in the inner
  objective (0 is the paper's pure critic signal);
* `value_weight`: weight of the critic regression term in meta-training.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner
import tensorflow as tf

from metasearch.api import (
    CLASSIFICATION,
    REGRESSION,
    Config,
    Episode,
    TaskSpec,
    class_means,
    task_loss,
)
from metasearch.gradient_learner import GradientMetaLearner

CRITIC_UNITS = (32, 64, 128)
EMBEDDING_DIMS = (16, 32, 64)
SUPPORT_LOSS_WEIGHTS = (0.0, 1.0)
VALUE_WEIGHTS = (0.1, 1.0)
# The MVN's per-point outputs: the loss's coefficient, the other action
# feature's and a constant (see `values`).
LOSS_FEATURES = 3


def _width(outputs: tf.Tensor):
    """The number of classes of logits: static when known, so XLA sees a constant."""
    return outputs.shape[-1] if outputs.shape[-1] is not None else tf.shape(outputs)[-1]


def _state(features: tf.Tensor) -> tf.Tensor:
    """Features as the critic sees them: unit length, whatever the backbone's scale."""
    return tf.math.l2_normalize(features, axis=-1)


class _MLP:
    """A one-hidden-layer ReLU MLP of explicit weights whose first layer takes named input parts.

    Each part gets its own slice of the first kernel, so a part that is
    shared by many rows (z, a class's z_c) is projected once and broadcast,
    instead of being tiled before the matmul. Small on purpose: the core
    unrolls every episode of a meta-batch into one graph, so each op here
    is repeated for every episode of every training step.
    """

    def __init__(self, owner: keras.layers.Layer, name: str, parts: dict[str, int], units, out):
        glorot = keras.initializers.GlorotUniform()
        self.first = {
            part: owner.add_weight(
                name=f"{name}_in_{part}", shape=(width, units), initializer=glorot
            )
            for part, width in parts.items()
        }
        self.first_bias = owner.add_weight(
            name=f"{name}_in_bias", shape=(units,), initializer="zeros"
        )
        # A near-zero last layer: the untrained critic barely moves the actor,
        # so meta-training starts from MAML's behaviour.
        self.out = owner.add_weight(
            name=f"{name}_out",
            shape=(units, out),
            initializer=keras.initializers.RandomNormal(stddev=1e-2),
        )
        self.out_bias = owner.add_weight(name=f"{name}_out_bias", shape=(out,), initializer="zeros")

    def project(self, part: str, value: tf.Tensor) -> tf.Tensor:
        """The first layer's contribution of one input part: `[n, width]` or `[width]`."""
        if value.shape.rank == 1:
            return tf.matmul(value[None, :], self.first[part])[0]
        return tf.matmul(value, self.first[part])

    def finish(self, pre_activation: tf.Tensor) -> tf.Tensor:
        """The rest of the MLP from the first layer's summed projections `[n, units]`."""
        hidden = tf.nn.relu(pre_activation + self.first_bias)
        return tf.matmul(hidden, self.out) + self.out_bias


class MetaCritic(GradientMetaLearner):
    """Meta-critic networks: a task encoder and a value network that drive MAML's inner loop."""

    NAME = "meta_critic"
    TASK_KINDS = (CLASSIFICATION, REGRESSION)

    # Proto-MAML's head: the best MAML-family start on Omniglot; regression
    # tasks have no prototypes and use the learned head instead.
    DEFAULT_HEAD_INIT = "proto"

    @classmethod
    def sample_config(cls, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """The MAML family's hyperparameters (under `meta_critic/`) and the critic's."""
        name = cls.NAME
        return {
            **super().sample_config(hp),
            "critic_units": hp.Choice(f"{name}/critic_units", list(CRITIC_UNITS), default=64),
            "embedding_dim": hp.Choice(f"{name}/embedding_dim", list(EMBEDDING_DIMS), default=32),
            "support_loss_weight": hp.Choice(
                f"{name}/support_loss_weight", list(SUPPORT_LOSS_WEIGHTS), default=1.0
            ),
            "value_weight": hp.Choice(f"{name}/value_weight", list(VALUE_WEIGHTS), default=1.0),
        }

    def __init__(self, backbone: keras.layers.Layer, config: Config, task: TaskSpec, **kwargs):
        config = {**self.default_config(), **config}
        if task.is_regression and config["head_init"] == "proto":
            config["head_init"] = "learned"
        super().__init__(backbone, config, task, **kwargs)
        self.critic_units = int(self.config["critic_units"])
        self.embedding_dim = int(self.config["embedding_dim"])
        self.support_loss_weight = float(self.config["support_loss_weight"])
        self.value_weight = float(self.config["value_weight"])
        for key, value, known in (
            ("critic_units", self.critic_units, CRITIC_UNITS),
            ("embedding_dim", self.embedding_dim, EMBEDDING_DIMS),
        ):
            if value not in known:
                raise ValueError(f"{self.NAME}: unknown {key} {value!r}; known: {known}")
        if self.support_loss_weight < 0 or self.value_weight < 0:
            raise ValueError(f"{self.NAME}: loss weights must be >= 0")
        d, units, e = self.feature_dim, self.critic_units, self.embedding_dim
        if task.is_regression:
            t = task.target_dim
            # Triplet: features, label, per-point loss.
            self.encoder = _MLP(self, "taen", {"features": d, "label": t, "loss": 1}, units, e)
            critic_parts = {"features": d, "label": t, "z": e}
        else:
            # Triplet: features, per-point loss and probability of the label;
            # the label itself is which class's pool the code joins.
            self.encoder = _MLP(self, "taen", {"features": d, "loss": 2}, units, e)
            critic_parts = {"features": d, "z": e, "z_class": e}
        self.critic = _MLP(self, "mvn", critic_parts, units, LOSS_FEATURES)
        # The task context of the latest `adapt`, for the query-value term of
        # `meta_train_loss` (both run in one trace; no tensor value decides it).
        self._last_context: Any = None

    # --- the critic ---------------------------------------------------------------

    def _per_point_loss(self, outputs, labels, num_classes):
        """Per-point task losses `[n]`, and the label encoding (one-hot, or the targets)."""
        if self.task.is_regression:
            return tf.reduce_mean(tf.square(outputs - labels), axis=-1), labels
        one_hot = tf.one_hot(labels, num_classes, dtype=outputs.dtype)
        return -tf.reduce_sum(one_hot * tf.nn.log_softmax(outputs), axis=-1), one_hot

    def _loss_features(self, outputs, labels, num_classes):
        """The task loss `[n]` and the other action feature `[n]` the value is linear in.

        Regression: the mean residual (with the loss's coefficient, a learned
        per-point target shift and step size). Classification: the entropy of
        the prediction (a learned sharpening or smoothing). Kept to two terms:
        the inner loop differentiates them twice for every point and episode.
        """
        losses, _ = self._per_point_loss(outputs, labels, num_classes)
        if self.task.is_regression:
            return losses, tf.reduce_mean(outputs - labels, axis=-1)
        log_p = tf.nn.log_softmax(outputs)
        return losses, -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)

    def _coefficients(self, features, labels, context, num_classes):
        """The MVN's per-point coefficients `[n, f]` of the action features."""
        critic = self.critic
        pre = critic.project("features", _state(tf.stop_gradient(features))) + critic.project(
            "z", context["z"]
        )
        if self.task.is_regression:
            pre += critic.project("label", labels)
        else:
            one_hot = tf.one_hot(labels, num_classes, dtype=features.dtype)
            pre += tf.matmul(one_hot, critic.project("z_class", context["z_class"]))
        return critic.finish(pre)

    def task_context(self, support_images, support_labels, num_classes, training):
        """The task embedding z from (features, label, loss) triplets of the support set.

        Runs the actor at its initial weights; the triplets are inputs to the
        TAEN, not paths for gradients into the actor. Classification also
        returns each class's pooled code `z_class` `[num_classes, embedding_dim]`.
        The context also holds the MVN's coefficients for the support points.
        """
        base = self._read_backbone()
        initial = [base[0][p] for p in self.adapted_positions]
        features = self._features(base, initial, support_images, 0, training, {})
        head = self._initial_head(features, support_labels, num_classes)
        features = tf.stop_gradient(features)
        outputs = tf.stop_gradient(self._linear(features, head))
        losses, encoded = self._per_point_loss(outputs, support_labels, num_classes)
        # Bounded inputs: untrained heads (e.g. prototype heads on wide
        # features) give losses in the thousands.
        losses = tf.math.log1p(losses)
        enc = self.encoder
        pre = enc.project("features", _state(features))
        if self.task.is_regression:
            pre += enc.project("label", encoded) + enc.project("loss", losses[:, None])
            context = {"z": tf.reduce_mean(enc.finish(pre), axis=0)}
        else:
            probability = tf.reduce_sum(encoded * tf.nn.softmax(outputs), axis=-1)
            pre += enc.project("loss", tf.stack([losses, probability], axis=-1))
            per_class = class_means(enc.finish(pre), support_labels, num_classes)
            context = {"z": tf.reduce_mean(per_class, axis=0), "z_class": per_class}
        context["coefficients"] = self._coefficients(features, support_labels, context, num_classes)
        self._last_context = context
        return context

    def values(self, outputs, labels, coefficients) -> tf.Tensor:
        """The critic's value `[n]` of the actor's `outputs`: minus the learned per-point loss.

        `(support_loss_weight + c0) * loss + c1 * phi(outputs) + c2` for the
        MVN's per-point coefficients `c`; higher is better, and meta-training
        regresses it onto the negative loss.
        """
        num_classes = None if self.task.is_regression else _width(outputs)
        losses, feature = self._loss_features(outputs, labels, num_classes)
        scale, slope, offset = tf.unstack(coefficients, axis=-1)
        return -((self.support_loss_weight + scale) * losses + slope * feature + offset)

    def inner_objective(self, outputs, labels, features, context, step):
        """Minus the mean critic value of the support set's outputs (the learned loss)."""
        return -tf.reduce_mean(self.values(outputs, labels, context["coefficients"]))

    # --- meta-training ------------------------------------------------------------

    def meta_train_loss(self, episode: Episode) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """Query loss through the critic-driven adaptation, plus the critic's value regression."""
        state = self.adapt(
            episode.support_images, episode.support_labels, self.task.n_way, training=True
        )
        context = self._last_context
        features = self.query_features(state, episode.query_images, training=True)
        outputs = self._linear(features, state["head"])
        loss, metrics = task_loss(self.task, outputs, episode.query_labels)
        # The critic regression teaches the critic only: the actor's outputs
        # and the target are fixed here.
        fixed = tf.stop_gradient(outputs)
        targets, _ = self._per_point_loss(fixed, episode.query_labels, self.task.n_way)
        coefficients = self._coefficients(features, episode.query_labels, context, self.task.n_way)
        values = self.values(fixed, episode.query_labels, coefficients)
        critic_error = tf.reduce_mean(tf.square(values + targets))
        metrics = {**metrics, "critic_error": critic_error}
        return loss + self.value_weight * critic_error, metrics
