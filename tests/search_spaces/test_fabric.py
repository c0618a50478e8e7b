"""Tests for the `fabric` search space (convolutional neural fabrics)."""

from __future__ import annotations

import json

import keras
import keras_tuner
import numpy as np
import pytest

from metasearch import testing
from metasearch.search_spaces.fabric import (
    NeuralFabric,
    active_edges,
    build_trellis,
    max_scales,
    trellis_edges,
)

C = 4
# L2 S2 by hand: L0S0 -down-> L0S1; L1S1 sums "same" from L0S1 and "down" from L0S0.
SMALL = {
    "layers": 2,
    "scales": 2,
    "channels": C,
    "edges": [[0, 1, "down"], [1, 1, "same"], [1, 1, "down"]],
}


def _space(**options):
    return NeuralFabric({"channels": C, "layers": (2, 3), "scales": (2, 3), **options})


def _layers(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


def _hp(space, layers, scales, on):
    """HyperParameters with the trellis size set and exactly the edges `on` switched on."""
    hp = keras_tuner.HyperParameters()
    space.sample_config(hp)
    hp.values["fabric/layers"] = layers
    hp.values["fabric/scales"] = scales
    for name in hp.values:
        if name.startswith("fabric/edge_"):
            hp.values[name] = False
    for layer, scale, kind in on:
        hp.values[f"fabric/edge_L{layer}_S{scale}_{kind}"] = True
    return hp


def test_trellis_edge_count_and_sources():
    for layers, scales in [(2, 1), (2, 2), (4, 3), (8, 5)]:
        edges = trellis_edges(layers, scales)
        # (S-1) layer-0 downs, then per later layer S same + (S-1) down + (S-1) up.
        assert len(edges) == (scales - 1) + (layers - 1) * (3 * scales - 2)
        assert len(set(edges)) == len(edges) and edges == sorted(
            edges, key=lambda e: (e[0], e[1], ("same", "down", "up").index(e[2]))
        )


def test_small_case_counts_match_hand_computation():
    space = _space()
    model = space.build(SMALL, (8, 8, 1))
    trellis = model.get_layer("fabric")
    # One Conv2D per active edge, one BN per node other than L0S0.
    assert len(_layers(trellis, keras.layers.Conv2D)) == 3
    assert len(_layers(trellis, keras.layers.BatchNormalization)) == 2
    # Edges 3 x 3*3*C*C (no bias); BN 4*C per node (gamma, beta, mean, variance).
    assert trellis.count_params() == 3 * 9 * C * C + 2 * 4 * C
    # Stem: 3x3 conv from 1 channel, BN.
    assert model.count_params() == trellis.count_params() + 9 * 1 * C + 4 * C
    features = model(np.zeros((5, 8, 8, 1), np.float32))
    assert features.shape == (5, C) and features.dtype == "float32"
    assert trellis.output.shape[1:] == (4, 4, C)


def test_dangling_edges_are_dropped_from_config_and_model():
    space = _space()
    # L1S0 is reachable (same, up) but the coarser L1S1 is the output, so both go.
    mask = [e for e in trellis_edges(2, 2)]
    config = space.sample_config(_hp(space, 2, 2, mask))
    assert config == SMALL
    trellis = space.build(config, (8, 8, 1)).get_layer("fabric")
    assert sorted(layer.name for layer in _layers(trellis, keras.layers.Conv2D)) == [
        "L0S0_L0S1_conv",
        "L0S0_L1S1_conv",
        "L0S1_L1S1_conv",
    ]
    assert not [layer for layer in trellis.layers if layer.name.startswith("L1S0")]


def test_edges_outside_the_sampled_trellis_are_ignored():
    space = _space()
    # Scale-2 and layer-2 edges exist in the largest trellis (L3 S3) only.
    on = [[0, 1, "down"], [1, 1, "same"], [1, 1, "down"], [0, 2, "down"], [2, 1, "same"]]
    assert space.sample_config(_hp(space, 2, 2, on)) == SMALL


def test_output_is_coarsest_reachable_node_of_last_layer():
    edges, output = active_edges(3, 3, [(1, 0, "same"), (2, 0, "same"), (2, 1, "down")])
    assert output == (2, 1)
    assert edges == [(1, 0, "same"), (2, 1, "down")]


def test_mask_without_path_is_repaired_deterministically():
    # All edges off: the cheapest path to L2S1 costs two edges; "same" wins the
    # tie at L2S1, so the path goes down early: L0S0 -down-> L1S1 -same-> L2S1.
    assert active_edges(3, 2, []) == ([(1, 1, "down"), (2, 1, "same")], (2, 1))
    # An active prefix is reused: only the missing last edge is added.
    edges, output = active_edges(3, 3, [(0, 1, "down"), (0, 2, "down"), (1, 2, "same")])
    assert output == (2, 2)
    assert edges == [(0, 1, "down"), (0, 2, "down"), (1, 2, "same"), (2, 2, "same")]
    # More scales than layers: layer-0 downs carry the rest of the way.
    assert active_edges(2, 3, [])[0] == [(0, 1, "down"), (1, 2, "down")]


def test_up_edges_crop_odd_sizes():
    config = {
        "layers": 2,
        "scales": 2,
        "channels": C,
        "edges": [[0, 1, "down"], [1, 0, "same"], [1, 0, "up"]],
    }
    trellis = build_trellis(config, (7, 5, C))
    # Scale 1 is 4x3; upsampled to 8x6 and cropped back to 7x5.
    crop = trellis.get_layer("L0S1_L1S0_crop")
    assert crop.cropping == ((0, 1), (0, 1))
    assert trellis(np.ones((2, 7, 5, C), np.float32)).shape == (2, 7, 5, C)


def test_same_hyperparameters_declared_for_every_sample():
    space = NeuralFabric()
    names = None
    for config in testing.sample_configs(space, 5, seed=4):
        hp = keras_tuner.HyperParameters()
        space.sample_config(hp)
        assert config["channels"] == 16
        current = [p.name for p in hp.space]
        assert names is None or current == names
        names = current
    assert names[:2] == ["fabric/layers", "fabric/scales"]
    assert len(names) == 2 + len(trellis_edges(8, 5))


def test_default_config_is_full_fabric_pruned_to_coarsest_output():
    config = testing.sample_configs(NeuralFabric(), 1)[0]
    assert (config["layers"], config["scales"]) == (6, 4)
    # Each layer moves at most one scale coarser, so a node LlSs feeds the
    # output L5S3 only if it can still get there: (3 - s) <= (5 - l).
    expected = [list(e) for e in trellis_edges(6, 4) if 3 - e[1] <= 5 - e[0]]
    assert config["edges"] == expected
    assert len(expected) < len(trellis_edges(6, 4))


def test_genotype_round_trip_and_bad_input():
    space = _space()
    for config in testing.sample_configs(space, 30, seed=2):
        genotype = json.loads(json.dumps(space.genotype(config)))
        assert space.config_from_genotype(genotype) == config
    bad = [
        {**SMALL, "edges": SMALL["edges"][::-1]},  # not canonical order
        {**SMALL, "edges": SMALL["edges"] + [[1, 0, "same"]]},  # dangling
        {**SMALL, "edges": SMALL["edges"][:1] + SMALL["edges"]},  # duplicate
        {**SMALL, "edges": [[0, 1, "down"], [1, 1, "sideways"]]},
        {**SMALL, "edges": [[0, 1, "down"], [1, 2, "same"]]},  # outside the trellis
        {**SMALL, "edges": []},  # no path
        {**SMALL, "layers": 1},
        {**SMALL, "layers": True},
        {k: v for k, v in SMALL.items() if k != "channels"},
        {**SMALL, "extra": 1},
        [],
    ]
    for genotype in bad:
        with pytest.raises(ValueError):
            space.config_from_genotype(genotype)


def test_cells_is_the_trained_nested_trellis():
    space = _space()
    model = space.build(SMALL, (8, 8, 1))
    cell = space.cells(SMALL, model)["fabric"]
    assert cell is model.get_layer("fabric")
    images = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype(np.float32)
    stem = keras.Model(model.input, model.get_layer("stem_relu").output)
    pooled = np.mean(cell(stem(images)), axis=(1, 2))
    np.testing.assert_allclose(pooled, model(images), atol=1e-5)


def test_cell_graph_and_describe():
    space = _space()
    (graph,) = space.cell_graphs(SMALL)
    assert graph.name == "fabric" and graph.inputs == ("L0S0",)
    assert graph.nodes == ("L0S1",) and graph.output == "L1S1"
    assert graph.edges == (
        ("L0S0", "L0S1", "conv3x3_stride2"),
        ("L0S1", "L1S1", "conv3x3"),
        ("L0S0", "L1S1", "conv3x3_stride2"),
    )
    assert space.describe(SMALL) == "fabric L2 S2 C4 3/5 edges"


def test_scales_limited_by_input_size():
    assert [max_scales(n) for n in (1, 2, 7, 8, 28, 84)] == [1, 2, 4, 4, 6, 8]
    space = _space()
    config = {**SMALL, "scales": 3, "edges": [[0, 1, "down"], [0, 2, "down"], [1, 2, "same"]]}
    space.build(config, (4, 4, 1))
    with pytest.raises(ValueError, match="scales"):
        space.build(config, (2, 2, 1))


def test_unknown_and_bad_options():
    with pytest.raises(ValueError):
        NeuralFabric({"depth": 3})
    with pytest.raises(ValueError):
        NeuralFabric({"layers": (1, 2)})
