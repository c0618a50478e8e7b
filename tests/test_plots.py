"""Tests for metasearch.plots: cell pictures and search-progress plots."""

from __future__ import annotations

import os
import random
import sys

import pytest
from PIL import Image

from metasearch import plots
from metasearch.api import CellGraph

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path, min_size=(200, 100)) -> tuple[int, int]:
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        colors = image.convert("L").getextrema()
    assert min_size[0] <= width <= 8000 and min_size[1] <= height <= 8000
    assert colors[0] < colors[1]  # something was drawn on the white page
    # The atomic write leaves no temporary files behind.
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp-")]
    return width, height


def _nasnet_cell() -> CellGraph:
    inputs = ("h[i-2]", "h[i-1]")
    nodes = tuple(f"block{b}" for b in range(5))
    names = inputs + nodes
    blocks = [
        (1, "sep_conv_3x3", 0, "identity"),
        (1, "sep_conv_5x5", 0, "sep_conv_3x3"),
        (1, "avg_pool_3x3", 0, "identity"),
        (0, "avg_pool_3x3", 0, "avg_pool_3x3"),
        (1, "sep_conv_3x3", 3, "identity"),  # reads block1: a second column
    ]
    edges = []
    for b, (i0, op0, i1, op1) in enumerate(blocks):
        edges += [(names[i0], nodes[b], op0), (names[i1], nodes[b], op1)]
    edges += [(n, "output", "concat") for n in ("h[i-1]", "block0", "block2", "block3", "block4")]
    return CellGraph("normal", inputs, nodes, "output", tuple(edges))


def _fabric(layers: int = 6, scales: int = 4) -> CellGraph:
    ops = {0: "conv3x3", 1: "conv3x3_stride2", -1: "conv3x3_upsample2"}
    edges = [(f"L0S{s - 1}", f"L0S{s}", ops[1]) for s in range(1, scales)]
    for layer in range(1, layers):
        for scale in range(scales):
            for step in (-1, 0, 1):
                if 0 <= scale - step < scales:
                    edges.append((f"L{layer - 1}S{scale - step}", f"L{layer}S{scale}", ops[step]))
    output = f"L{layers - 1}S{scales - 1}"
    nodes = tuple(
        f"L{layer}S{scale}"
        for layer in range(layers)
        for scale in range(scales)
        if (layer, scale) not in ((0, 0), (layers - 1, scales - 1))
    )
    grid = {
        f"L{layer}S{scale}": (layer, scale) for layer in range(layers) for scale in range(scales)
    }
    return CellGraph("fabric", ("L0S0",), nodes, output, tuple(edges), grid=grid)


def test_draw_nasnet_cell(tmp_path):
    path = str(tmp_path / "cells" / "normal.png")
    assert plots.draw_cell(_nasnet_cell(), path, title="normal cell") == path
    width, height = _check_png(path)
    assert width > 400 and height > 300


def test_column_layout_is_topological():
    positions = plots._column_layout(_nasnet_cell())
    xs = {name: x for name, (x, _) in positions.items()}
    assert xs["h[i-2]"] == xs["h[i-1]"] < xs["block0"]
    assert xs["block0"] == xs["block1"] == xs["block2"] == xs["block3"]
    # block4 reads block1, so it sits one column further; the output is last.
    assert xs["block4"] > xs["block1"]
    assert xs["output"] > xs["block4"]
    assert len(set(positions.values())) == len(positions)


def test_draw_fabric_grid(tmp_path):
    graph = _fabric()
    positions = plots._grid_layout(graph)
    assert positions is not None and len(positions) == 24
    assert positions["L2S1"][0] == positions["L2S3"][0] < positions["L3S1"][0]
    assert positions["L2S1"][1] == positions["L4S1"][1] > positions["L4S2"][1]
    path = str(tmp_path / "fabric.png")
    width, height = _check_png(plots.draw_cell(graph, path))
    assert width > height  # six layers across, four scales down


def test_draw_smallest_cell(tmp_path):
    graph = CellGraph("tiny", ("x",), (), "y", (("x", "y", "conv_3x3"),))
    _check_png(plots.draw_cell(graph, str(tmp_path / "tiny.png")), min_size=(100, 50))


def test_draw_cell_does_not_touch_pyplot(tmp_path):
    plots.draw_cell(_nasnet_cell(), str(tmp_path / "cell.png"))
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or not pyplot.get_fignums()


@pytest.mark.parametrize(
    "edge",
    [("h[i-3]", "block0", "identity"), ("h[i-1]", "block9", "identity")],
)
def test_undeclared_states_are_rejected(tmp_path, edge):
    graph = _nasnet_cell()
    bad = CellGraph(graph.name, graph.inputs, graph.nodes, graph.output, (*graph.edges, edge))
    path = tmp_path / "bad.png"
    with pytest.raises(ValueError, match="not a declared"):
        plots.draw_cell(bad, str(path))
    assert not path.exists()


def test_cycles_are_rejected(tmp_path):
    edges = (("x", "a", "conv"), ("a", "b", "conv"), ("b", "a", "conv"), ("b", "y", "sum"))
    with pytest.raises(ValueError, match="cycle"):
        plots.draw_cell(CellGraph("loop", ("x",), ("a", "b"), "y", edges), str(tmp_path / "c.png"))


def test_short_labels():
    assert plots._short_label("sep_conv_3x3") == "sep 3x3"
    assert plots._short_label("max_pool_3x3") == "max 3x3"
    assert plots._short_label("skip_connect") == "skip"
    assert plots._short_label("conv3x3_stride2") == "conv3x3 /2"
    assert len(plots._short_label("a_very_long_operation_name_indeed")) <= 14


def test_progress_one_trial(tmp_path):
    trials = [{"trial_id": "00", "status": "COMPLETED", "val_accuracy": 0.8, "val_ci95": 0.03}]
    path = str(tmp_path / "progress.png")
    assert plots.plot_search_progress(trials, path, title="one") == path
    _check_png(path)


def test_progress_many_trials_with_failures(tmp_path):
    rng = random.Random(0)
    trials = []
    for i in range(200):
        if i % 9 == 4:
            trials.append({"trial_id": f"{i:03d}", "status": "FAILED"})
        else:
            accuracy = 0.4 + 0.4 * rng.random()
            trials.append(
                {"trial_id": f"{i:03d}", "status": "COMPLETED", "val_accuracy": accuracy}
                | ({"val_ci95": 0.02} if i % 2 else {})
            )
    rng.shuffle(trials)  # plotted in trial order whatever the list order
    trials.append({"trial_id": "200", "status": "RUNNING"})
    width, _ = _check_png(plots.plot_search_progress(trials, str(tmp_path / "p.png")))
    assert width > 800


def test_progress_no_trials(tmp_path):
    _check_png(plots.plot_search_progress([], str(tmp_path / "empty.png")))


def test_trial_order_and_scores():
    records = [{"trial_id": "10"}, {"trial_id": "2"}, {"trial_id": "07"}]
    assert [r["trial_id"] for r in plots._trial_order(records)] == ["2", "07", "10"]
    named = [{"trial_id": "b"}, {"trial_id": "a"}]
    assert plots._trial_order(named) == named
    assert plots._score({"val_accuracy": float("nan")}) is None
    assert plots._score({"status": "FAILED"}) is None
    assert plots._score({"val_accuracy": 0.5}) == 0.5
