"""Tests for the `nasbench201` search space."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pytest

from metasearch import testing
from metasearch.plugins.protonet import PrototypicalNetworks
from metasearch.search_spaces.nasbench201 import (
    EDGE_KEYS,
    NASBench201,
    arch_string,
    config_from_arch_string,
    table_key,
)
from metasearch.training import MetaTrainer

TABLE = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "nasbench201"
).resolve() / "nb201_val_accuracy.csv"
BEST = "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
# Node 1: conv3x3(node0); node 2: conv1x1(node0) (+ none from node1);
# node 3: node0 + avgpool(node1) + conv3x3(node2).
KNOWN = "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|"


@pytest.fixture(scope="module")
def table_rows():
    if not TABLE.exists():
        pytest.skip(f"shared NAS-Bench-201 table not found at {TABLE}")
    with open(TABLE, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_hyperparameters_exact_names_values_and_order():
    hp = keras_tuner.HyperParameters()
    NASBench201().sample_config(hp)
    assert [p.name for p in hp.space] == [
        "nasbench201/edge_1_2",
        "nasbench201/edge_1_3",
        "nasbench201/edge_1_4",
        "nasbench201/edge_2_3",
        "nasbench201/edge_2_4",
        "nasbench201/edge_3_4",
    ]
    for parameter in hp.space:
        assert isinstance(parameter, keras_tuner.engine.hyperparameters.Choice)
        assert list(parameter.values) == [
            "skip_connect",
            "none",
            "nor_conv_3x3",
            "nor_conv_1x1",
            "avg_pool_3x3",
        ]


def test_arch_string_and_table_key():
    config = config_from_arch_string(BEST)
    assert arch_string(config) == BEST
    # Edge order (1,2),(1,3),(1,4),(2,3),(2,4),(3,4): 3x3, 1x1, skip, 3x3, 1x1, 3x3.
    assert table_key(config) == "230232"
    only_last = dict.fromkeys(EDGE_KEYS, "skip_connect") | {"edge_3_4": "nor_conv_3x3"}
    assert table_key(only_last) == "000002"
    assert arch_string(only_last).endswith("|skip_connect~0|skip_connect~1|nor_conv_3x3~2|")
    assert NASBench201().table_key(config) == "230232"
    assert NASBench201.TABLE_KEY_COLUMN == "op_indices"


def test_table_key_finds_the_row_with_our_arch_string(table_rows):
    by_key = {row["op_indices"]: row["arch"] for row in table_rows}
    assert len(by_key) == 5**6
    space = NASBench201()
    configs = testing.sample_configs(space, 25, seed=5)
    configs.append(dict.fromkeys(EDGE_KEYS, "none"))
    for config in configs:
        assert by_key[table_key(config)] == arch_string(config)


def test_every_table_arch_string_parses_back(table_rows):
    for row in table_rows:
        config = config_from_arch_string(row["arch"])
        assert arch_string(config) == row["arch"]
        assert table_key(config) == row["op_indices"]


@pytest.mark.parametrize(
    "arch",
    [
        "",
        BEST.replace("+", "|"),
        BEST.replace("~1", "~0"),
        BEST.replace("nor_conv_1x1", "conv_1x1"),
        "|none~0|+|none~0|+|none~0|none~1|none~2|",
        "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|none~3|",
        "none~0+none~0|none~1+none~0|none~1|none~2",
        None,
    ],
)
def test_bad_arch_strings_raise(arch):
    with pytest.raises(ValueError):
        config_from_arch_string(arch)


def test_genotype_round_trip_and_bad_input():
    space = NASBench201()
    for config in testing.sample_configs(space, 30, seed=6):
        genotype = json.loads(json.dumps(space.genotype(config)))
        assert set(genotype) == {"arch"}
        assert space.config_from_genotype(genotype) == config
    for bad in [{}, {"arch": BEST, "extra": 1}, {"arch": "|x~0|"}, [BEST]]:
        with pytest.raises(ValueError):
            space.config_from_genotype(bad)


def test_known_cell_parameter_count_matches_hand_computation():
    c = 4
    space = NASBench201({"channels": c, "cells_per_stage": 1})
    config = config_from_arch_string(KNOWN)
    backbone = space.build(config, (28, 28, 1))

    def bn(ch):
        return 4 * ch  # gamma, beta, moving mean, moving variance

    def cell(ch):
        # conv3x3 twice, conv1x1 once, each followed by BN; pool, skip, none: nothing.
        return 2 * (9 * ch * ch + bn(ch)) + (ch * ch + bn(ch))

    def reduction(cin, cout):
        # 3x3 stride-2 conv + BN, 3x3 conv + BN, 1x1 shortcut conv (no BN).
        return 9 * cin * cout + bn(cout) + 9 * cout * cout + bn(cout) + cin * cout

    assert space.cells(config, backbone)["cell"].count_params() == cell(c) == 352
    stem = 9 * 1 * c + bn(c)
    total = stem + cell(c) + reduction(c, 2 * c) + cell(2 * c)
    total += reduction(2 * c, 4 * c) + cell(4 * c) + bn(4 * c)
    assert backbone.count_params() == total
    convs = [layer for layer in space.cells(config, backbone)["cell"].layers]
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in convs) == 3
    assert sum(isinstance(layer, keras.layers.AveragePooling2D) for layer in convs) == 1


def test_features_shape_and_cells_per_stage():
    space = NASBench201({"channels": 4, "cells_per_stage": 2})
    config = config_from_arch_string(BEST)
    backbone = space.build(config, (9, 9, 3))
    features = backbone(np.zeros((3, 9, 9, 3), np.float32))
    assert features.shape == (3, 16) and features.dtype == "float32"
    cells = [layer.name for layer in backbone.layers if layer.name.startswith("cell_")]
    assert cells == [f"cell_{s}_{i}" for s in range(3) for i in range(2)]
    two_stages = NASBench201({"channels": 4, "stages": 2}).build(config, (9, 9, 3))
    assert two_stages(np.zeros((3, 9, 9, 3), np.float32)).shape == (3, 8)


def test_cells_is_first_trained_cell_single_input():
    space = NASBench201({"channels": 4})
    config = config_from_arch_string(BEST)
    backbone = space.build(config, (12, 12, 1))
    cell = space.cells(config, backbone)["cell"]
    assert cell is backbone.get_layer("cell_0_0")
    assert len(cell.inputs) == 1 and cell.input.shape[1:] == (12, 12, 4)
    stem = keras.Model(backbone.input, backbone.get_layer("stem_bn").output)
    images = np.random.default_rng(0).normal(size=(2, 12, 12, 1)).astype(np.float32)
    assert cell(stem(images)).shape == (2, 12, 12, 4)


def test_cell_graph_omits_none_and_describe():
    space = NASBench201()
    config = config_from_arch_string(KNOWN)
    (graph,) = space.cell_graphs(config)
    assert (graph.name, graph.inputs, graph.nodes, graph.output) == (
        "cell",
        ("node0",),
        ("node1", "node2"),
        "node3",
    )
    assert graph.edges == (
        ("node0", "node1", "nor_conv_3x3"),
        ("node0", "node2", "nor_conv_1x1"),
        ("node0", "node3", "skip_connect"),
        ("node1", "node3", "avg_pool_3x3"),
        ("node2", "node3", "nor_conv_3x3"),
    )
    assert space.describe(config) == "nb201 230142 N2 C16"


@pytest.mark.parametrize(
    "arch",
    [
        # No path to node 3 at all: the cell outputs zeros.
        "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|none~1|none~2|",
        # Node 3 only reads node 1, which is itself zeros.
        "|none~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|",
        # A lone skip into node 3: the cell is the identity.
        "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
    ],
)
def test_degenerate_cells_build_and_train_without_nan(arch):
    space = NASBench201({"channels": 4, "cells_per_stage": 1})  # all three stages
    config = config_from_arch_string(arch)
    task = testing.tiny_task()
    learner = testing.build_learner(PrototypicalNetworks, space, task, space_config=config)
    cell = space.cells(config, learner.backbone)["cell"]
    probe = np.random.default_rng(1).normal(size=(2, 28, 28, 4)).astype(np.float32)
    if "skip_connect~0|none~1|none~2" in arch:
        np.testing.assert_allclose(cell(probe), probe)
    else:
        assert not np.any(cell(probe))
    episode = testing.tiny_episode(task)
    trainer = MetaTrainer(learner, (0.5, 0.3), 3e-3, 3, jit_compile=False)
    trainer.build(episode)
    for _ in range(3):
        loss, _ = trainer.train_step(episode)
        assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(v.numpy())) for v in learner.weights)


def test_bad_configs_and_options_raise():
    space = NASBench201()
    with pytest.raises(ValueError):
        space.build({"edge_1_2": "skip_connect"}, (8, 8, 1))
    with pytest.raises(ValueError):
        table_key(dict.fromkeys(EDGE_KEYS, "conv"))
    with pytest.raises(ValueError):
        NASBench201({"cells_per_stage": 0})
    with pytest.raises(ValueError):
        NASBench201({"stages": 0})


# --------------------------------------------------------------------------- other tables

TRANSNAS_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3"]


def test_use_table_restricts_each_edge_and_numbers_keys_as_the_table():
    space = NASBench201()
    keys = ["".join(cell) for cell in itertools.product("0123", repeat=6)]
    assert space.use_table(keys, TRANSNAS_OPS) == 4**6
    hp = keras_tuner.HyperParameters()
    config = space.sample_config(hp)
    for parameter in hp.space:
        # In the space's own order (avg_pool_3x3 is gone), whatever the table's numbering.
        assert list(parameter.values) == ["skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1"]
    assert config == {
        "edge_1_2": "nor_conv_3x3",
        "edge_1_3": "nor_conv_1x1",
        "edge_1_4": "skip_connect",
        "edge_2_3": "nor_conv_3x3",
        "edge_2_4": "nor_conv_1x1",
        "edge_3_4": "nor_conv_3x3",
    }
    # The table's digits: 0 none, 1 skip, 2 1x1, 3 3x3 (describe keeps NAS-Bench-201's).
    assert space.table_key(config) == "321323"
    assert space.describe(config).startswith("nb201 230232 ")
    with pytest.raises(ValueError, match="avg_pool_3x3 is not among the table's operations"):
        space.table_key(dict(config, edge_1_2="avg_pool_3x3"))


def test_use_table_offers_per_edge_what_the_keys_have_with_a_valid_default():
    space = NASBench201()
    # Edge (1,2) only ever avg_pool_3x3 (digit 4); the others skip_connect or none.
    keys = ["4" + "".join(rest) for rest in itertools.product("01", repeat=5)][:-1]
    assert space.use_table(keys) == 2**5  # one cell of the product is missing
    hp = keras_tuner.HyperParameters()
    config = space.sample_config(hp)
    assert [list(p.values) for p in hp.space] == [["avg_pool_3x3"]] + [["skip_connect", "none"]] * 5
    assert config["edge_1_2"] == "avg_pool_3x3" and config["edge_1_4"] == "skip_connect"
    assert config["edge_1_3"] == "skip_connect"  # the default cell's 1x1 is not offered


@pytest.mark.parametrize(
    "keys, ops, message",
    [
        (["000000"], ["none", "conv5"], "must be distinct names among"),
        (["000000"], ["none", "none"], "must be distinct names among"),
        (["00000"], None, "table key '00000' is not 6 digits 0-4"),
        (["000004"], TRANSNAS_OPS, "table key '000004' is not 6 digits 0-3"),
        (["00000a"], None, "is not 6 digits"),
        ([], None, "the table has no cells"),
    ],
)
def test_use_table_refuses_what_it_cannot_read(keys, ops, message):
    space = NASBench201()
    with pytest.raises(ValueError, match=message):
        space.use_table(keys, ops)
    assert space.table_key(config_from_arch_string(BEST)) == "230232"  # left as it was


def test_use_table_with_the_full_table_changes_nothing(table_rows):
    space = NASBench201()
    assert space.use_table([row["op_indices"] for row in table_rows]) == len(table_rows)
    declared, plain = keras_tuner.HyperParameters(), keras_tuner.HyperParameters()
    space.sample_config(declared)
    NASBench201().sample_config(plain)
    assert declared.get_config() == plain.get_config()
