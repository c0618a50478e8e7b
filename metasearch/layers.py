"""Keras layers the search spaces share (kept below them: one definition, no sideways imports)."""

from __future__ import annotations

import keras
import tensorflow as tf


def _in_xla() -> bool:
    """Whether the code being traced compiles with XLA (`jit_compile=True`)."""
    return getattr(tf.__internal__, "get_enclosing_xla_context", lambda: None)() is not None


class MaxPooling2D(keras.layers.MaxPooling2D):
    """Keras max pooling that XLA can also differentiate twice on bfloat16 activations.

    XLA has no bfloat16 kernel for the second derivative of max pooling
    (second-order MAML under `--precision=bfloat16 --jit_compile=true`), so
    under XLA bfloat16 inputs pool in float32. Elsewhere the pooling stays
    bfloat16: pooling in float32 there cost a conv4-64 ProtoNet step a quarter
    of its speed.
    """

    def call(self, inputs):
        if inputs.dtype == tf.bfloat16 and _in_xla():
            return tf.cast(super().call(tf.cast(inputs, tf.float32)), tf.bfloat16)
        return super().call(inputs)


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
        fusable = (
            not _in_xla()
            and mask is None
            and self.scale
            and self.center
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            # bfloat16 activations (`--precision=bfloat16`) keep float32 parameters
            # and statistics, as the fused kernel takes them.
            and inputs.dtype in (tf.float32, tf.bfloat16)
        )
        if not fusable:
            return super().call(inputs, training=training, mask=mask)
        gamma, beta = (tf.cast(v, tf.float32) for v in (self.gamma, self.beta))
        if not (training and self.trainable):  # inference, as Keras decides it
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                gamma,
                beta,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon,
                is_training=False,
            )
            return outputs
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=self.epsilon, is_training=True
        )
        # The fused kernel returns the unbiased variance; Keras tracks the biased one.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
        )
        return outputs
