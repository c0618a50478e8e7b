"""Keras layers the search spaces share (kept below them: one definition, no sideways imports)."""

from __future__ import annotations

import keras
import tensorflow as tf


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras batch norm that runs through TensorFlow's fused kernel, training and inference.

    Keras 3 normalises with separate moment and arithmetic ops; on CPU the
    fused kernel makes a NASNet training step about a quarter faster (cells
    hold a dozen batch norms each) and a conv4-64 ProtoNet step about half
    as fast again; in inference it is one pass over the activations instead
    of several. Under XLA, which fuses the Keras ops itself and compiles them
    faster than the fused kernel's gradient, and wherever the fused kernel
    does not apply, the Keras path runs; the moving statistics are the same
    (biased batch variance).
    """

    def call(self, inputs, training=None, mask=None):
        in_xla = getattr(tf.__internal__, "get_enclosing_xla_context", lambda: None)()
        fusable = (
            in_xla is None
            and mask is None
            and self.scale
            and self.center
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and inputs.dtype == tf.float32
        )
        if not fusable:
            return super().call(inputs, training=training, mask=mask)
        if not (training and self.trainable):  # inference, as Keras decides it
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                self.gamma,
                self.beta,
                mean=self.moving_mean,
                variance=self.moving_variance,
                epsilon=self.epsilon,
                is_training=False,
            )
            return outputs
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True
        )
        # The fused kernel returns the unbiased variance; Keras tracks the biased one.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
        )
        return outputs
