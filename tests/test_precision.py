"""`--precision=bfloat16`: backbones compute in bfloat16 with float32 weights (`metasearch.precision`)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from cli_support import TINY, run_cli_in_process
from metasearch import precision, testing
from metasearch.components import Components
from metasearch.config import RunConfig
from metasearch.errors import UsageError
from metasearch.layers import FusedBatchNormalization
from metasearch.precision import build_backbone, recorded_precision, resolve_precision
from metasearch.search_spaces.conv_blocks import ConvBlocks

CONV3_16 = {"depth": 3, "filters": 16, "growth": 1.0, "conv_bias": False}


def _backbones():
    keras.utils.set_random_seed(0)
    full = build_backbone(ConvBlocks(), CONV3_16, (28, 28, 1), "float32")
    keras.utils.set_random_seed(0)
    mixed = build_backbone(ConvBlocks(), CONV3_16, (28, 28, 1), "bfloat16")
    return full, mixed


def test_auto_is_bfloat16_only_for_image_classification_on_an_amx_cpu_without_gpus(monkeypatch):
    monkeypatch.setattr(precision, "native_bfloat16_cpu", lambda: True)
    assert resolve_precision("auto", "classification", gpus=0) == "bfloat16"
    assert resolve_precision("AUTO", "classification", gpus=0) == "bfloat16"
    assert resolve_precision("auto", "regression", gpus=0) == "float32"
    assert resolve_precision("auto", "classification", gpus=1) == "float32"
    monkeypatch.setattr(precision, "native_bfloat16_cpu", lambda: False)
    assert resolve_precision("auto", "classification", gpus=0) == "float32"
    # Explicit settings are what they say, anywhere.
    assert resolve_precision("BFloat16", "regression", gpus=1) == "bfloat16"
    assert resolve_precision("float32", "classification", gpus=0) == "float32"
    with pytest.raises(ValueError, match="auto, float32, bfloat16"):
        resolve_precision("fp8")
    with pytest.raises(UsageError, match="--precision=fp16: must be one of"):
        RunConfig(precision="fp16")


def test_a_native_bfloat16_cpu_is_one_whose_flags_have_amx_bf16(tmp_path):
    amx, avx = tmp_path / "amx", tmp_path / "avx"
    amx.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n")
    avx.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    assert precision.native_bfloat16_cpu(str(amx))
    assert not precision.native_bfloat16_cpu(str(avx))
    assert not precision.native_bfloat16_cpu(str(tmp_path / "missing"))


def test_recorded_runs_rebuild_at_what_they_trained_at():
    assert recorded_precision({"precision": "bfloat16"}) == "bfloat16"
    assert recorded_precision({"precision": "float32"}) == "float32"
    # Before --precision existed, and while `auto` always meant float32.
    assert recorded_precision({}) == "float32"
    assert recorded_precision({"precision": "auto"}) == "float32"


def test_a_bfloat16_backbone_convolves_in_bfloat16_keeps_float32_weights_and_their_names():
    full, mixed = _backbones()
    # The same variables by name and dtype: weight files move between the two.
    assert [(v.path, v.dtype) for v in mixed.weights] == [(v.path, v.dtype) for v in full.weights]
    assert {v.dtype for v in mixed.weights} == {"float32"}
    mixed.set_weights(full.get_weights())
    images = tf.random.stateless_uniform([6, 28, 28, 1], [1, 2])
    got, want = mixed(images, training=False), full(images, training=False)
    assert got.dtype == tf.float32  # plugins see float32 features
    np.testing.assert_allclose(got, want, rtol=0.05, atol=0.05 * float(np.abs(want).max()))
    assert not np.array_equal(got, want), "bfloat16 arithmetic should round differently"

    graph = tf.function(lambda x: mixed(x, training=True)).get_concrete_function(images).graph
    convolutions = [op for op in graph.get_operations() if op.type == "Conv2D"]
    assert convolutions and all(op.get_attr("T") == tf.bfloat16 for op in convolutions)
    # Batch norm runs through the fused kernel on bfloat16 activations.
    assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_on_bfloat16_activations_matches_float32_keras(training):
    keras.utils.set_random_seed(3)
    x = tf.random.stateless_normal([8, 5, 5, 4], [3, 4]) * 2.0 + 0.5
    plain = keras.layers.BatchNormalization(momentum=0.5)
    fused = FusedBatchNormalization(momentum=0.5, dtype="mixed_bfloat16")
    for layer in (plain, fused):
        layer.build(x.shape)
        layer.gamma.assign(tf.linspace(0.5, 1.5, 4))
        layer.beta.assign(tf.linspace(-0.2, 0.2, 4))
        layer.moving_mean.assign(tf.fill([4], 0.3))
        layer.moving_variance.assign(tf.fill([4], 2.0))
    want = plain(x, training=training)
    got = fused(tf.cast(x, tf.bfloat16), training=training)
    assert got.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(got, tf.float32), want, rtol=0.02, atol=0.03)
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, rtol=0.01, atol=0.01)
    np.testing.assert_allclose(fused.moving_variance, plain.moving_variance, rtol=0.02)
    assert {v.dtype for v in fused.weights} == {"float32"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "plugin, space",
    [
        ("protonet", "conv_blocks"),
        ("maml", "conv_blocks"),
        # `auto` is bfloat16 for every image search on an AMX CPU: each image space too.
        ("protonet", "fabric"),
        ("protonet", "nasnet"),
        ("protonet", "nasbench201"),
    ],
)
def test_bfloat16_learners_train_compile_with_xla_and_export_exactly(plugin, space, tmp_path):
    task = testing.tiny_task()
    learner = testing.build_learner(plugin, space, task, precision="bfloat16")
    first, last = testing.check_trains(learner, task)
    assert last < first
    episode = testing.tiny_episode(task)
    testing._train_step_and_adapt(learner, task, episode, jit_compile=True)
    # The SavedModel runs the same bfloat16 graph: its outputs equal the learner's.
    assert testing.check_export_round_trip(learner, task, str(tmp_path), fresh_process=False) == 0


@pytest.mark.slow
def test_the_cli_records_the_precision_and_trials_rebuild_at_it(tmp_path):
    out = tmp_path / "run"
    result = run_cli_in_process(
        *TINY,
        "--max_trials=1",
        "--final_top_k=0",
        "--precision=bfloat16",
        "--noprogress",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["precision"] == "bfloat16"
    assert "--precision=bfloat16" in (out / "flags.txt").read_text()
    assert Components.from_config(config).precision == "bfloat16"
    # A run written before --precision existed trained in float32.
    del config["precision"]
    assert Components.from_config(config).precision == "float32"
    # A different precision is a different run: refused without --overwrite.
    again = run_cli_in_process(
        *TINY,
        "--max_trials=1",
        "--final_top_k=0",
        "--precision=float32",
        "--noprogress",
        f"--output_dir={out}",
    )
    assert again.returncode == 2 and "--precision" in again.stderr, again.stderr[-2000:]
    # A run recorded with `auto` (before it could mean bfloat16) goes on in float32 when
    # rerun with `auto`, and records that.
    recorded = json.loads((out / "config.json").read_text())
    recorded["identity"]["precision"] = recorded["config"]["precision"] = "auto"
    (out / "config.json").write_text(json.dumps(recorded))
    (out / "flags.txt").write_text(
        (out / "flags.txt").read_text().replace("--precision=bfloat16", "--precision=auto")
    )
    legacy = run_cli_in_process(
        *TINY, "--max_trials=1", "--final_top_k=0", "--noprogress", f"--output_dir={out}"
    )
    assert legacy.returncode == 0, legacy.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["identity"]["precision"] == "float32"


def test_a_bad_precision_flag_is_one_line(tmp_path):
    result = run_cli_in_process("--precision=fp16", f"--output_dir={tmp_path / 'run'}")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "--precision" in line and "bfloat16" in line
    assert not (tmp_path / "run").exists()


class _KerasPoolingSpace(ConvBlocks):
    """A third-party space built from Keras's own max pooling."""

    def build(self, config, input_shape):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
        x = FusedBatchNormalization()(x)
        x = keras.layers.MaxPooling2D(2)(x)
        return keras.Model(inputs, keras.layers.Flatten()(x))


def test_max_pooling_differentiates_twice_under_xla_in_bfloat16():
    """XLA has no bfloat16 MaxPoolGradGrad: both kinds of pooling layer avoid it."""
    images = tf.random.stateless_uniform([4, 8, 8, 1], [5, 6])
    for space in (ConvBlocks(), _KerasPoolingSpace()):
        backbone = build_backbone(space, CONV3_16, (8, 8, 1), "bfloat16")

        @tf.function(jit_compile=True)
        def second_order(x, backbone=backbone):
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    loss = tf.reduce_sum(backbone(x, training=True) ** 2)
                grads = inner.gradient(loss, backbone.trainable_variables)
                total = tf.add_n([tf.reduce_sum(g**2) for g in grads])
            return outer.gradient(total, backbone.trainable_variables)

        for grad in second_order(images):
            assert np.all(np.isfinite(grad.numpy()))
    # Keras's own pooling layers pool in float32 everywhere; metasearch's only under XLA.
    pools = [
        layer
        for layer in build_backbone(_KerasPoolingSpace(), None, (8, 8, 1), "bfloat16").layers
        if isinstance(layer, keras.layers.MaxPooling2D)
    ]
    assert [p.compute_dtype for p in pools] == ["float32"]
