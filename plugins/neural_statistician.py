"""`neural_statistician`: the Neural Statistician (Edwards and Storkey, "Towards a
Neural Statistician", ICLR 2017).

The paper learns a generative model of *data sets*. A set `D` gets a context
`c` summarising it; each item `x_i` of the set gets a latent `z_i`:

* statistic network `q(c|D)`: a shared instance encoder per item, mean
  pooling over the set, an MLP to a diagonal Gaussian; prior `p(c) = N(0, I)`;
* inference network `q(z|x, c)` and prior `p(z|c)`, diagonal Gaussians;
* decoder (observation model) `p(x|z, c)`;
* trained on the per-set ELBO
  `Σ_i E_q[log p(x_i|z_i,c)] - Σ_i KL(q(z_i|x_i,c) || p(z_i|c)) - KL(q(c|D) || p(c))`
  with reparameterised single samples.

Few-shot classification is the paper's: each class's support set `D_k` gets
its posterior `q(c|D_k)`, each query `x` alone gets `q(c|{x})`, and the
logits are `-KL(q(c|{x}) || q(c|D_k))` (closed form for diagonal Gaussians).
`adapt` returns the class posteriors' means and scales, `predict` the KL
logits; both use posterior means and scales only, so they are deterministic.

This implementation:

* The instance encoder is the search space's backbone (its features `h_i` are
  what `embed` returns); the statistic network mean-pools them per class
  with a one-hot matmul (so `num_classes` may be a tensor, as in exports),
  then an MLP gives `c`'s mean and scale.
* One stochastic layer of `z` (the paper stacks several, each conditioned on
  the one above): `q(z|x, c)` is an MLP of `[h_i, c]`, `p(z|c)` an MLP of `c`.
* Every MLP has one hidden layer of 256 units with layer normalisation
  before its ReLU, and every Gaussian's log-scale is soft-clipped to [-4, 4]
  (`4 tanh(raw / 4)`): without both, one Adam step on a wide backbone's
  features moved the outputs by tens and the KL terms reached millions.
* The decoder maps `[z, c]` through a dense layer to a small feature map,
  stride-2 transposed convolutions (halving the width at each) and a 3x3
  convolution to the image's channels, resized to the exact image size when
  the sizes do not divide. It gives the per-pixel mean of a Gaussian with one
  learned log-scale. The likelihood is on the normalised pixels the learner
  receives: the core's normalisation constants are unknown here (the paper
  uses a Bernoulli likelihood on binarised pixels).
* In meta-training every class of the episode, support and query images
  together, is one set. The loss is the negative ELBO divided by the number
  of items and pixels (metric `neg_elbo_per_pixel`) plus
  `classification_weight` times the cross-entropy of the KL logits on the
  query images. The paper trains the ELBO alone (`classification_weight` 0);
  the extra term makes short training budgets give a good classifier.
  Samples are drawn with a `keras.random.SeedGenerator` (each step differs).
* `generate` takes `q(c|D)`'s mean for the given images of one class, draws
  `z ~ p(z|c)` with `tf.random.stateless_normal` and returns the decoder's
  means, in normalised pixel space.

Hyperparameters (`neural_statistician/NAME`):

* `context_dim`: size of the context `c`, the space the classifier compares in.
* `latent_dim`: size of each item's latent `z`.
* `classification_weight`: weight of the query cross-entropy added to the
  negative ELBO per pixel; 0.0 is the paper's pure ELBO.
* `decoder_filters`: width of the decoder's first feature map (halved at each
  upsampling, at least 8).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import keras
import keras_tuner
import tensorflow as tf
import tensorflow_probability as tfp

from metasearch.api import Config, MetaLearner, TaskSpec, accuracy, class_means, feature_dim

tfd = tfp.distributions

CONTEXT_DIMS = (16, 32, 64)
LATENT_DIMS = (8, 16, 32)
CLASSIFICATION_WEIGHTS = (0.0, 0.1, 1.0, 3.0)
DECODER_FILTERS = (16, 32, 64)
# Width of the hidden layer of every MLP (statistic, inference, prior networks).
HIDDEN_UNITS = 256
# Log-scales are soft-clipped to [-LOG_SCALE_BOUND, LOG_SCALE_BOUND]: near
# zero scales KL terms and the logits' 1/scale^2 explode, and one Adam step on
# a wide first layer can move a raw scale by tens.
LOG_SCALE_BOUND = 4.0
# The decoder upsamples until its first feature map is at most this size.
DECODER_BASE_SIZE = 7
MIN_DECODER_FILTERS = 8


def gaussian(parameters: tf.Tensor) -> tfd.Normal:
    """A diagonal Gaussian from `[..., 2d]` MLP outputs: means, then raw scales."""
    mean, raw_scale = tf.split(parameters, 2, axis=-1)
    log_scale = LOG_SCALE_BOUND * tf.tanh(raw_scale / LOG_SCALE_BOUND)
    return tfd.Normal(mean, tf.exp(log_scale))


def kl_logits(
    query_mean: tf.Tensor, query_scale: tf.Tensor, class_mean: tf.Tensor, class_scale: tf.Tensor
) -> tf.Tensor:
    """`-KL(N(query) || N(class))` summed over dimensions: logits `[q, k]`.

    Queries `[q, d]` broadcast against classes `[k, d]` as `[q, 1, d]` vs
    `[1, k, d]`; the KL of diagonal Gaussians is closed-form.
    """
    queries = tfd.Normal(query_mean[:, None, :], query_scale[:, None, :])
    classes = tfd.Normal(class_mean[None, :, :], class_scale[None, :, :])
    return -tf.reduce_sum(tfd.kl_divergence(queries, classes), axis=-1)


def _mlp(input_dim: int, output_dim: int, name: str) -> keras.Sequential:
    # Built from an Input, so every variable exists before the first call:
    # an export may trace `generate` without meta_train_loss ever running.
    # Layer normalisation bounds the hidden layer whatever the input's width
    # and scale: a wide backbone (thousands of features) or a large context
    # otherwise lets one Adam step move the outputs by tens, and the KL terms
    # explode.
    return keras.Sequential(
        [
            keras.Input((input_dim,)),
            keras.layers.Dense(HIDDEN_UNITS),
            keras.layers.LayerNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dense(output_dim),
        ],
        name=name,
    )


def _decoder(input_dim: int, image_shape: tuple[int, ...], filters: int) -> keras.Sequential:
    """`[z, c]` to a `[n, h', w', channels]` mean image, `h' >= h`, `w' >= w`."""
    height, width, channels = image_shape
    upsamplings = max(1, math.ceil(math.log2(max(height, width) / DECODER_BASE_SIZE)))
    base_h = math.ceil(height / 2**upsamplings)
    base_w = math.ceil(width / 2**upsamplings)
    layers = [
        keras.Input((input_dim,)),
        keras.layers.Dense(base_h * base_w * filters, activation="relu"),
        keras.layers.Reshape((base_h, base_w, filters)),
    ]
    for index in range(upsamplings):
        # Halving the width as the map grows keeps the full-resolution layers,
        # which dominate the cost, cheap.
        width_here = max(MIN_DECODER_FILTERS, filters // 2 ** (index + 1))
        layers.append(
            keras.layers.Conv2DTranspose(
                width_here, 3, strides=2, padding="same", activation="relu"
            )
        )
    layers.append(keras.layers.Conv2D(channels, 3, padding="same"))
    return keras.Sequential(layers, name="decoder")


def _check_choice(name: str, value: Any, minimum: float) -> None:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value >= minimum:
        raise ValueError(f"neural_statistician: {name} must be >= {minimum}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"neural_statistician: {name} must be finite, got {value!r}")


class NeuralStatistician(MetaLearner):
    """The Neural Statistician: a generative model of sets, classifying by context KL."""

    GENERATIVE = True

    @classmethod
    def sample_config(cls, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        prefix = "neural_statistician/"
        return {
            "context_dim": hp.Choice(prefix + "context_dim", list(CONTEXT_DIMS), default=64),
            "latent_dim": hp.Choice(prefix + "latent_dim", list(LATENT_DIMS), default=16),
            "classification_weight": hp.Choice(
                prefix + "classification_weight", list(CLASSIFICATION_WEIGHTS), default=1.0
            ),
            "decoder_filters": hp.Choice(
                prefix + "decoder_filters", list(DECODER_FILTERS), default=32
            ),
        }

    def __init__(self, backbone: keras.layers.Layer, config: Config, task: TaskSpec, **kwargs):
        super().__init__(backbone, config, task, **kwargs)
        if task.is_regression or len(task.image_shape) != 3:
            raise ValueError("neural_statistician: needs image classification tasks")
        for name in ("context_dim", "latent_dim", "decoder_filters"):
            _check_choice(name, self.config[name], 1)
            if int(self.config[name]) != self.config[name]:
                raise ValueError(f"neural_statistician: {name} must be an integer")
        _check_choice("classification_weight", self.config["classification_weight"], 0.0)
        self.context_dim = int(self.config["context_dim"])
        self.latent_dim = int(self.config["latent_dim"])
        self.classification_weight = float(self.config["classification_weight"])
        self.decoder_filters = int(self.config["decoder_filters"])

        width = feature_dim(backbone, task)
        self.feature_dim = width
        self.statistic_network = _mlp(width, 2 * self.context_dim, "statistic_network")
        self.inference_network = _mlp(
            width + self.context_dim, 2 * self.latent_dim, "inference_network"
        )
        self.latent_prior = _mlp(self.context_dim, 2 * self.latent_dim, "latent_prior")
        self.decoder = _decoder(
            self.latent_dim + self.context_dim, task.image_shape, self.decoder_filters
        )
        self.log_pixel_scale = self.add_weight(
            name="log_pixel_scale", shape=(), initializer="zeros"
        )
        self.seed_generator = keras.random.SeedGenerator(0, name="sampling_seed")

    # -- the model's pieces -------------------------------------------------

    def embed(self, images, training=False):
        return self.backbone(images, training=training)

    def context_posterior(self, pooled_features: tf.Tensor) -> tfd.Normal:
        """`q(c|D)` from mean-pooled instance features `[sets, d]`."""
        return gaussian(self.statistic_network(pooled_features))

    def decode(self, latents: tf.Tensor, contexts: tf.Tensor) -> tf.Tensor:
        """Per-pixel means `[n, h, w, channels]` of `p(x|z, c)`, in normalised space."""
        means = self.decoder(tf.concat([latents, contexts], axis=-1))
        height, width = self.task.image_shape[:2]
        if tuple(means.shape[1:3]) != (height, width):
            means = tf.image.resize(means, (height, width), method="bilinear")
        return means

    def _sample(self, distribution: tfd.Normal, training: bool) -> tf.Tensor:
        # Reparameterised single samples in training, the mean otherwise.
        if not training:
            return distribution.loc
        noise = keras.random.normal(tf.shape(distribution.loc), seed=self.seed_generator)
        return distribution.loc + distribution.scale * noise

    def elbo_terms(
        self,
        images: tf.Tensor,
        features: tf.Tensor,
        labels: tf.Tensor,
        num_sets: int | tf.Tensor,
        training: bool = False,
    ) -> dict[str, tf.Tensor]:
        """The ELBO's terms, summed over the items and sets of a batch of sets.

        `labels [n]` say which set each image belongs to; `features` are the
        backbone's features of `images`. Returns `log_likelihood` (sum over
        items and pixels of `log p(x_i|z_i,c)`), `kl_z` (sum over items),
        `kl_c` (sum over sets) and `squared_error` (mean squared error of the
        decoder's means). With `training=False` it uses means, not samples.
        """
        context_posterior = self.context_posterior(class_means(features, labels, num_sets))
        contexts = self._sample(context_posterior, training)
        item_contexts = tf.gather(contexts, labels)
        latent_posterior = gaussian(
            self.inference_network(tf.concat([features, item_contexts], axis=-1))
        )
        latent_prior = gaussian(self.latent_prior(item_contexts))
        latents = self._sample(latent_posterior, training)
        means = self.decode(latents, item_contexts)
        likelihood = tfd.Normal(means, tf.exp(self.log_pixel_scale))
        context_prior = tfd.Normal(tf.zeros_like(context_posterior.loc), 1.0)
        return {
            "log_likelihood": tf.reduce_sum(likelihood.log_prob(images)),
            "kl_z": tf.reduce_sum(tfd.kl_divergence(latent_posterior, latent_prior)),
            "kl_c": tf.reduce_sum(tfd.kl_divergence(context_posterior, context_prior)),
            "squared_error": tf.reduce_mean(tf.square(means - images)),
        }

    # -- few-shot classification -------------------------------------------

    def adapt(self, support_images, support_labels, num_classes, training=False):
        features = self.embed(support_images, training=training)
        posterior = self.context_posterior(class_means(features, support_labels, num_classes))
        return {"context_mean": posterior.loc, "context_scale": posterior.scale}

    def predict(self, task_state, query_images, training=False):
        return self._query_logits(self.embed(query_images, training=training), task_state)

    def _query_logits(self, query_features, task_state):
        # Each query alone is a set of one: its pooled features are its own.
        posterior = self.context_posterior(query_features)
        return kl_logits(
            posterior.loc,
            posterior.scale,
            task_state["context_mean"],
            task_state["context_scale"],
        )

    def meta_train_loss(self, episode):
        # One backbone pass over support and query together (as protonet):
        # batch norm sees the whole episode and the ELBO reuses the features.
        n_support = tf.shape(episode.support_images)[0]
        images = tf.concat([episode.support_images, episode.query_images], axis=0)
        labels = tf.concat([episode.support_labels, episode.query_labels], axis=0)
        features = self.embed(images, training=True)
        n_way = self.task.n_way

        support_posterior = self.context_posterior(
            class_means(features[:n_support], episode.support_labels, n_way)
        )
        logits = self._query_logits(
            features[n_support:],
            {"context_mean": support_posterior.loc, "context_scale": support_posterior.scale},
        )
        cross_entropy = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=episode.query_labels, logits=logits
            )
        )

        # Each class's support and query images form one set.
        terms = self.elbo_terms(images, features, labels, n_way, training=True)
        items = tf.cast(tf.shape(images)[0], tf.float32)
        pixels = float(math.prod(self.task.image_shape))
        neg_elbo = -terms["log_likelihood"] + terms["kl_z"] + terms["kl_c"]
        neg_elbo_per_pixel = neg_elbo / (items * pixels)
        loss = neg_elbo_per_pixel + self.classification_weight * cross_entropy
        return loss, {
            "accuracy": accuracy(logits, episode.query_labels),
            "neg_elbo_per_pixel": neg_elbo_per_pixel,
            "reconstruction_per_pixel": -terms["log_likelihood"] / (items * pixels),
            "kl_z_per_item": terms["kl_z"] / items,
            "kl_c_per_set": terms["kl_c"] / float(n_way),
            "squared_error": terms["squared_error"],
            "cross_entropy": cross_entropy,
        }

    # -- generation -----------------------------------------------------------

    def generate(self, support_images, num_samples, seed):
        """`num_samples` decoder means `[num_samples, h, w, c]` for the class of the images.

        The context is `q(c|D)`'s mean for `support_images` (one class); each
        sample draws `z ~ p(z|c)` with `tf.random.stateless_normal(seed)`.
        """
        features = self.embed(support_images, training=False)
        pooled = tf.reduce_mean(features, axis=0, keepdims=True)
        context = self.context_posterior(pooled).loc
        prior = gaussian(self.latent_prior(context))
        shape = tf.stack([tf.cast(num_samples, tf.int32), self.latent_dim])
        noise = tf.random.stateless_normal(shape, seed=seed)
        latents = prior.loc + prior.scale * noise
        contexts = tf.broadcast_to(context, tf.stack([shape[0], self.context_dim]))
        return self.decode(latents, contexts)
