"""Tests for metasearch.flops: hand-counted FLOPs of small Keras models."""

from __future__ import annotations

import logging

import keras
import pytest
import tensorflow as tf
from tensorflow.python.util import deprecation

from metasearch.flops import estimate_flops, flop_breakdown, format_flops

L = keras.layers


def _sequential(input_shape, layers) -> keras.Model:
    inputs = keras.Input(input_shape)
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def test_conv_dense_matches_hand_count():
    model = _sequential((8, 8, 3), [L.Conv2D(4, 3, activation="relu"), L.Flatten(), L.Dense(10)])
    conv = 2 * (6 * 6 * 4) * (3 * 3 * 3) + 6 * 6 * 4  # multiply-adds + bias
    dense = 2 * 144 * 10 + 10
    assert estimate_flops(model, (8, 8, 3)) == pytest.approx(conv + dense, rel=0.01)
    breakdown = flop_breakdown(model, (8, 8, 3))
    assert breakdown["Conv2D"] == 2 * (6 * 6 * 4) * 27
    assert breakdown["MatMul"] == 2 * 144 * 10


def test_separable_conv_matches_hand_count():
    model = _sequential((6, 6, 4), [L.SeparableConv2D(8, 3, padding="same")])
    depthwise = 2 * (6 * 6 * 4) * 9
    pointwise = 2 * (6 * 6 * 8) * 4
    bias = 6 * 6 * 8
    assert estimate_flops(model, (6, 6, 4)) == pytest.approx(depthwise + pointwise + bias, rel=0.01)
    breakdown = flop_breakdown(model, (6, 6, 4))
    assert breakdown["DepthwiseConv2dNative"] == depthwise
    assert breakdown["Conv2D"] == pointwise


def test_nested_models_and_multiple_inputs():
    # A two-input "cell" used twice inside a backbone, as NAS search spaces do.
    a, b = keras.Input((5, 5, 4)), keras.Input((5, 5, 4))
    mixed = L.Add()([L.Conv2D(4, 1, use_bias=False)(a), L.DepthwiseConv2D(3, padding="same")(b)])
    cell = keras.Model([a, b], mixed, name="cell")
    cell_flops = 2 * 25 * 4 * 4 + 2 * 25 * 4 * 9 + 25 * 4 + 25 * 4  # conv, depthwise, bias, add
    assert estimate_flops(cell, [(5, 5, 4), (5, 5, 4)]) == cell_flops

    inputs = keras.Input((5, 5, 4))
    h1 = cell([inputs, inputs])
    h2 = cell([inputs, h1])
    features = L.Dense(3, use_bias=False)(L.Flatten()(h2))
    backbone = keras.Model(inputs, features)
    assert estimate_flops(backbone, (5, 5, 4)) == 2 * cell_flops + 2 * 100 * 3


def test_matches_tensorflow_profiler():
    model = _sequential(
        (12, 12, 3),
        [
            L.Conv2D(6, 3, strides=2),
            L.BatchNormalization(),
            L.DepthwiseConv2D(3, padding="same"),
            L.AveragePooling2D(2),
            L.GlobalAveragePooling2D(),
            L.Dense(5),
        ],
    )
    graph = (
        tf.function(lambda x: model(x, training=False))
        .get_concrete_function(tf.TensorSpec((1, 12, 12, 3)))
        .graph
    )
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    profiled = tf.compat.v1.profiler.profile(graph, options=options).total_float_ops
    assert profiled > 0
    assert estimate_flops(model, (12, 12, 3)) == profiled


class _MatmulFunction(keras.layers.Layer):
    """A layer whose call is a tf.function, first traced with an unknown batch."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 7))

    @tf.function
    def call(self, x):
        return tf.matmul(x, self.kernel)


class _Branches(keras.layers.Layer):
    """A data-dependent `tf.cond`: a costly and a cheap branch."""

    def call(self, x):
        return tf.cond(tf.reduce_sum(x) > 0, lambda: tf.matmul(x, tf.ones((7, 7))), lambda: 2.0 * x)


def test_functions_and_control_flow_are_entered():
    model = _sequential((4,), [_MatmulFunction(), _Branches()])
    breakdown = flop_breakdown(model, (4,))
    assert breakdown["MatMul"] == 2 * 4 * 7 + 2 * 7 * 7


def test_einsum_and_transposed_conv():
    inputs = keras.Input((3, 4))
    attention = keras.Model(inputs, L.MultiHeadAttention(2, 5, use_bias=False)(inputs, inputs))
    breakdown = flop_breakdown(attention, (3, 4))
    # Scores (B T N H, B S N H -> B N T S) and the weighted sum: 2 * T * S * N * H each.
    assert breakdown["Einsum"] == 2 * (2 * 3 * 3 * 2 * 5)
    # Four projections of 3 tokens between 4 features and 2 heads x 5.
    assert breakdown["BatchMatMulV2"] == 4 * 2 * 3 * 4 * 10

    upsample = _sequential((5, 5, 2), [L.Conv2DTranspose(4, 3, strides=2, use_bias=False)])
    assert estimate_flops(upsample, (5, 5, 2)) == 2 * (5 * 5 * 2) * 9 * 4


def test_quiet(capfd, caplog, monkeypatch):
    # Forget which deprecation notices were shown so the first one would print again.
    monkeypatch.setattr(deprecation, "_PRINTED_WARNING", {})
    model = _sequential((6, 6, 2), [L.Conv2D(3, 3), L.Flatten(), L.Dense(2)])
    capfd.readouterr()
    with caplog.at_level(logging.INFO):
        assert estimate_flops(model, (6, 6, 2)) > 0
    assert [r.getMessage() for r in caplog.records] == []
    captured = capfd.readouterr()
    assert captured.out == ""
    assert captured.err == ""
    assert not tf.config.functions_run_eagerly()


def test_rejects_unknown_dimensions():
    model = _sequential((4,), [L.Dense(2)])
    with pytest.raises(ValueError, match="input_shape"):
        estimate_flops(model, (None,))


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (999, "999"),
        (1234, "1.2K"),
        (12_345_678, "12.3M"),
        (123_456_789, "123M"),
        (999_960, "1.0M"),
        (1_234_567_890, "1.2G"),
        (2.5e12, "2.5T"),
    ],
)
def test_format_flops(n, text):
    assert format_flops(n) == text
