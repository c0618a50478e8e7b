"""Tests for the `nasnet` search space."""

from __future__ import annotations

import json
import re

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from metasearch import testing
from metasearch.search_spaces.nasnet import (
    OPS,
    PRESETS,
    NASNet,
    concat_states,
    preset_genotype,
)

# keras.applications.NASNetMobile(weights=None).count_params(), Keras 3.
NASNET_MOBILE_PARAMS = 5_326_716
TINY = {"blocks": 5, "cells_per_stage": 1, "filters": 4, "stages": 2}
# All ten operations in both cells; the reduction cell also applies identity
# to a strided cell input and leaves h[i-2] unused (concatenated, reduced).
ALL_OPS = {
    "normal": [
        [0, "identity", 1, "sep_conv_3x3"],
        [1, "sep_conv_5x5", 2, "sep_conv_7x7"],
        [0, "dil_conv_3x3", 3, "conv_1x7_7x1"],
        [2, "avg_pool_3x3", 4, "max_pool_3x3"],
        [5, "conv_1x1", 3, "conv_3x3"],
    ],
    "reduction": [
        [1, "identity", 1, "conv_3x3"],
        [1, "sep_conv_5x5", 2, "sep_conv_7x7"],
        [1, "dil_conv_3x3", 3, "conv_1x7_7x1"],
        [2, "avg_pool_3x3", 4, "max_pool_3x3"],
        [5, "sep_conv_3x3", 1, "conv_1x1"],
    ],
}


def _sample(space, hp=None):
    return space.sample_config(hp or keras_tuner.HyperParameters())


def test_nasnet_a_in_the_mobile_configuration_has_nasnet_mobiles_parameter_count():
    space = NASNet(
        {"cell": "nasnet_a", "stem": "imagenet", "cells_per_stage": 4, "penultimate_filters": 1056}
    )
    config = _sample(space)
    backbone = space.build(config, (224, 224, 3))
    assert tuple(backbone.output.shape) == (None, 1056)
    classifier = keras.Model(backbone.input, keras.layers.Dense(1000)(backbone.output))
    # The same layers as keras' NASNetMobile, so the count matches exactly.
    assert classifier.count_params() == NASNET_MOBILE_PARAMS
    cells = space.cells(config, backbone)
    assert cells["normal"].name == "normal_cell_0"
    assert cells["reduction"].name == "reduction_cell_0"
    assert backbone.get_layer("stem_cell_1").output.shape[1:] == (28, 28, 88)
    assert space.describe(config) == "nasnet-a N4 F44"


def test_hyperparameters_are_choices_in_controller_order():
    hp = keras_tuner.HyperParameters()
    NASNet({"blocks": 2}).sample_config(hp)
    names = [p.name for p in hp.space]
    expected = []
    for cell in ("normal", "reduction"):
        for b in range(2):
            expected += [
                f"nasnet/{cell}/block{b}/{token}" for token in ("input0", "input1", "op0", "op1")
            ]
    assert names == expected
    for parameter in hp.space:
        assert isinstance(parameter, keras_tuner.engine.hyperparameters.Choice)
        block = int(re.search(r"block(\d)", parameter.name).group(1))
        if "input" in parameter.name:
            assert list(parameter.values) == list(range(2 + block))
        else:
            assert list(parameter.values) == list(OPS)
    assert OPS == (
        "identity",
        "sep_conv_3x3",
        "sep_conv_5x5",
        "sep_conv_7x7",
        "dil_conv_3x3",
        "conv_1x7_7x1",
        "avg_pool_3x3",
        "max_pool_3x3",
        "conv_1x1",
        "conv_3x3",
    )


def test_preset_fixes_both_cells_and_fixed_values_still_override():
    space = NASNet({"cell": "nasnet_a"})
    hp = keras_tuner.HyperParameters()
    config = space.sample_config(hp)
    assert space.genotype(config) == PRESETS["nasnet_a"] == preset_genotype("nasnet_a")
    assert all(isinstance(p, keras_tuner.engine.hyperparameters.Fixed) for p in hp.space)
    assert len(hp.space) == 2 * 5 * 4
    assert space.describe(config) == "nasnet-a N1 F8"
    # --fix_hparams declares Fixed values before the space samples.
    fixed = keras_tuner.HyperParameters()
    fixed.Fixed("nasnet/normal/block0/op0", "conv_3x3")
    changed = space.sample_config(fixed)
    assert changed["normal"][0] == [1, "conv_3x3", 0, "sep_conv_3x3"]
    # A changed cell loses the preset's concat; the untouched one keeps it.
    assert "normal_concat" not in changed
    assert changed["reduction_concat"] == PRESETS["nasnet_a"]["reduction_concat"]
    assert space.describe(changed).startswith("nasnet B5 N1 F8 #")
    bad = keras_tuner.HyperParameters()
    bad.Fixed("nasnet/normal/block0/op0", "conv_9x9")
    with pytest.raises(ValueError, match="conv_9x9"):
        space.sample_config(bad)


def test_searched_space_defaults_to_nasnet_a_and_fixed_tokens_steer_it():
    space = NASNet()
    assert space.genotype(_sample(space)) == PRESETS["nasnet_a"]
    fixed = keras_tuner.HyperParameters()
    fixed.Fixed("nasnet/reduction/block4/input1", 5)
    config = space.sample_config(fixed)
    assert config["reduction"][4][2] == 5
    assert "reduction_concat" not in config


def test_options_are_validated():
    with pytest.raises(ValueError, match="unknown cell preset 'nasnet_z'.*nasnet_a"):
        NASNet({"cell": "nasnet_z"})
    with pytest.raises(ValueError, match="5 blocks"):
        NASNet({"cell": "nasnet_a", "blocks": 3})
    with pytest.raises(ValueError, match="unknown stem"):
        NASNet({"stem": "huge"})
    with pytest.raises(ValueError, match="multiple of 96"):
        NASNet({"penultimate_filters": 1000})
    with pytest.raises(ValueError, match="unknown options"):
        NASNet({"width": 3})
    assert NASNet({"penultimate_filters": 1056}).filters == 44


def test_genotype_json_round_trips_for_200_random_samples():
    space = NASNet()
    configs = testing.sample_configs(space, 200, seed=7)
    assert len({json.dumps(c, sort_keys=True) for c in configs}) > 190
    for config in configs:
        text = json.dumps(space.genotype(config))
        again = space.config_from_genotype(json.loads(text))
        assert again == config
        assert json.dumps(space.genotype(again)) == text


@pytest.mark.parametrize(
    "change,message",
    [
        (
            lambda g: g["normal"][1].__setitem__(1, "sep_conv_9x9"),
            "unknown operation 'sep_conv_9x9'",
        ),
        (lambda g: g["normal"][0].__setitem__(0, 2), r"normal block 0: input 2 is out of range"),
        (lambda g: g["reduction"][3].__setitem__(2, -1), "input -1 is out of range"),
        (lambda g: g["reduction"][2].__setitem__(0, True), "input True is out of range"),
        (lambda g: g["normal"].pop(), "normal cell has 4 blocks, expected 5"),
        (lambda g: g["reduction"].append([0, "identity", 1, "identity"]), "has 6 blocks"),
        (lambda g: g["normal"][2].pop(), r"expected \[input0, op0, input1, op1\]"),
        (lambda g: g.pop("reduction"), "missing the 'reduction' cell"),
        (lambda g: g.__setitem__("extra", 1), "unknown keys"),
        (lambda g: g.__setitem__("normal_concat", [0, 9]), "normal_concat state 9 is out of range"),
        (lambda g: g.__setitem__("normal_concat", [2, 2]), "repeats a state"),
        (lambda g: g.__setitem__("reduction_concat", []), "non-empty list"),
        (
            lambda g: g.__setitem__("normal_concat", [6]),
            r"normal blocks \[0, 1, 2, 3\] are neither",
        ),
    ],
)
def test_bad_genotypes_raise_value_error(change, message):
    genotype = preset_genotype("nasnet_a")
    change(genotype)
    with pytest.raises(ValueError, match=message):
        NASNet().config_from_genotype(genotype)


@pytest.mark.slow  # seconds of processes or XLA: in CI, not the quick loop
def test_every_operation_builds_in_both_cells_and_compiles_with_xla():
    keras.utils.set_random_seed(0)
    space = NASNet(TINY)
    config = space.config_from_genotype(ALL_OPS)
    for cell in ("normal", "reduction"):
        assert {op for block in config[cell] for op in block[1::2]} == set(OPS)
    backbone = space.build(config, (28, 28, 1))
    normal = backbone.get_layer("normal_cell_0")
    reduction = backbone.get_layer("reduction_cell_0")
    # Identity on a strided input became a 1x1 conv; unused h[i-2] was reduced.
    layer_names = [layer.name for layer in reduction.layers]
    assert "b0_left_identity_conv" in layer_names
    assert "concat0_reduce_conv1" in layer_names
    assert reduction.output.shape[1:] == (14, 14, 2 * 8)
    # The two cells as the backbone chains them, compiled alone: XLA on CPU
    # compiles slowly, and the stem and later cells add nothing here.
    stem = tf.random.normal([3, *normal.inputs[0].shape[1:]])
    variables = normal.trainable_variables + reduction.trainable_variables

    def step(h):
        with tf.GradientTape() as tape:
            x = normal([h, h], training=True)
            y = reduction([h, x], training=True)
            loss = tf.reduce_mean(tf.square(y))
        return y, tape.gradient(loss, variables)

    xla_output, xla_gradients = tf.function(step, jit_compile=True)(stem)
    # Plain graph mode too: it runs TensorFlow's own CPU kernels, not XLA's.
    graph_output, graph_gradients = tf.function(step)(stem)
    assert xla_output.shape == (3, 14, 14, 16)
    np.testing.assert_allclose(xla_output.numpy(), graph_output.numpy(), atol=1e-3, rtol=1e-3)
    for xla_gradient, graph_gradient in zip(xla_gradients, graph_gradients):
        assert np.all(np.isfinite(xla_gradient.numpy()))
        np.testing.assert_allclose(
            xla_gradient.numpy(), graph_gradient.numpy(), atol=1e-3, rtol=1e-2
        )


def test_random_genotypes_fit_at_odd_resolutions_and_both_stems():
    # 28 -> 14 -> 7 -> 4 and 84 -> 21 -> 11 -> 6: every reduction meets an odd side.
    space = NASNet({"blocks": 3, "cells_per_stage": 1, "filters": 2, "stages": 4})
    for index, config in enumerate(testing.sample_configs(space, 4, seed=5)[1:]):
        shape = (28, 28, 1) if index % 2 else (84, 84, 3)
        backbone = space.build(config, shape)
        assert space.stem_for(shape) == ("small" if shape[0] == 28 else "strided")
        assert backbone(tf.zeros([2, *shape])).shape == (2, backbone.output.shape[-1])


def _two_input_call(cell):
    return lambda h_prev_prev, h_prev: cell([h_prev_prev, h_prev])


def test_cells_export_as_saved_models_with_the_trained_weights(tmp_path):
    keras.utils.set_random_seed(1)
    space = NASNet({**TINY, "blocks": 3, "cells_per_stage": 2})
    config = testing.sample_configs(space, 2, seed=11)[1]
    backbone = space.build(config, (28, 28, 1))
    optimizer = keras.optimizers.SGD(0.1)
    images = tf.random.normal([4, 28, 28, 1])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(backbone(images, training=True) - 1.0))
    optimizer.apply_gradients(
        zip(tape.gradient(loss, backbone.trainable_variables), backbone.trainable_variables)
    )
    cells = space.cells(config, backbone)
    assert set(cells) == {"normal", "reduction"}
    backbone_weights = {id(v) for v in backbone.weights}
    rng = np.random.default_rng(0)
    for name, cell in cells.items():
        assert cell is backbone.get_layer(f"{name}_cell_0")
        assert {id(v) for v in cell.weights} <= backbone_weights
        specs = [tf.TensorSpec([None, *tensor.shape[1:]], tf.float32) for tensor in cell.inputs]
        module = tf.Module()
        module.cell = cell
        module.call = tf.function(_two_input_call(cell), input_signature=specs)
        path = str(tmp_path / name)
        tf.saved_model.save(module, path)
        loaded = tf.saved_model.load(path)
        for batch in (1, 3):
            inputs = [
                tf.constant(rng.normal(size=[batch, *s.shape[1:]]).astype("float32")) for s in specs
            ]
            np.testing.assert_allclose(
                loaded.call(*inputs).numpy(), cell(inputs).numpy(), atol=1e-5, rtol=1e-5
            )


def test_cell_graphs_list_blocks_and_concatenated_states():
    space = NASNet()
    normal, reduction = space.cell_graphs(space.config_from_genotype(PRESETS["nasnet_a"]))
    assert normal.name == "normal" and reduction.name == "reduction"
    assert normal.inputs == ("h[i-2]", "h[i-1]")
    assert normal.nodes == tuple(f"block{b}" for b in range(5))
    assert normal.edges[:2] == (
        ("h[i-1]", "block0", "sep_conv_5x5"),
        ("h[i-2]", "block0", "sep_conv_3x3"),
    )
    assert [e[0] for e in normal.edges if e[1] == "output"] == ["h[i-2]"] + list(normal.nodes)
    assert [e[0] for e in reduction.edges if e[1] == "output"] == [
        "block1",
        "block2",
        "block3",
        "block4",
    ]
    # Searched cells concatenate exactly their unused states.
    blocks = ALL_OPS["reduction"]
    assert concat_states(blocks) == [0, 6]
    _, graph = space.cell_graphs(space.config_from_genotype(ALL_OPS))
    assert [e for e in graph.edges if e[2] == "concat"] == [
        ("h[i-2]", "output", "concat"),
        ("block4", "output", "concat"),
    ]


def test_describe_is_short_and_stable():
    space = NASNet({"cells_per_stage": 2, "filters": 16})
    config = space.config_from_genotype(ALL_OPS)
    text = space.describe(config)
    assert re.fullmatch(r"nasnet B5 N2 F16 #[0-9a-f]{6}", text)
    assert space.describe(json.loads(json.dumps(config))) == text
    other = json.loads(json.dumps(ALL_OPS))
    other["normal"][0][1] = "conv_1x1"
    assert space.describe(space.config_from_genotype(other)) != text
