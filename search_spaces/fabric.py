"""`fabric`: Convolutional Neural Fabrics (Saxena and Verbeek, NeurIPS 2016).

A fabric is a trellis of L layers by S scales of feature maps with C channels
each; scale s is `ceil(size / 2^s)` pixels on a side. A stem (3x3 conv, BN,
ReLU) maps the image to C channels: node `L0S0`. The other layer-0 nodes come
from stride-2 convolutions of the next finer layer-0 node, as in the paper.
A node `LlSs` of a later layer sums 3x3 convolutions of up to three nodes of
layer l-1: the same scale ("same", stride 1), the finer scale ("down",
stride 2) and the coarser scale ("up": conv, then 2x nearest upsampling,
cropped when the finer size is odd); then BN and ReLU. The convolutions have
no bias (BN follows).

The search samples the trellis size (`layers`, `scales`) and a binary mask of
edges, the "embedded architecture": one `Boolean` per edge of the largest
trellis, declared every trial; edges outside the sampled trellis are ignored.
An edge is named by the node it feeds and its kind, e.g. `(3, 1, "down")`
is `L2S0 -> L3S1`.

Turning a mask into an architecture (`active_edges`):
* The output is the coarsest node of the last layer reachable from `L0S0`.
* If no last-layer node is reachable, the mask is repaired by switching on
  the fewest extra edges that connect `L0S0` to the last layer's coarsest
  node (a shortest path where active edges cost 0 and inactive ones 1; among
  equally cheap predecessors of a node, "same" beats "down" beats "up").
* Edges not on a path from `L0S0` to the output are dropped, and with them
  every node they alone fed; the built model holds only what remains.

The config is that pruned architecture, `{"layers", "scales", "channels",
"edges": [[layer, scale, kind], ...]}` in canonical order (layer, scale,
then same/down/up), which is also the genotype. Features are the global
average of the output node: `[batch, channels]`. `build` refuses more scales
than the input supports (scale S-2 must still be wider than 1 pixel): the
default choices (up to 5 scales) need inputs of at least 16 pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras
import keras_tuner

from metasearch.api import CellGraph, Config, SearchSpace
from metasearch.layers import FusedBatchNormalization
from metasearch.options import Option

KINDS = ("same", "down", "up")
# Source offsets (layer, scale) of each edge kind relative to the node it feeds.
_SOURCE = {"same": (-1, 0), "down": (-1, -1), "up": (-1, 1)}
OPERATIONS = {"same": "conv3x3", "down": "conv3x3_stride2", "up": "conv3x3_upsample2"}

Edge = tuple[int, int, str]
Node = tuple[int, int]


def node_name(node: Node) -> str:
    """`LlSs`, e.g. `L2S1`."""
    return f"L{node[0]}S{node[1]}"


def edge_source(edge: Edge) -> Node:
    """The node an edge reads from (layer-0 "down" edges read the finer layer-0 node)."""
    layer, scale, kind = edge
    if layer == 0:
        return (0, scale - 1)
    d_layer, d_scale = _SOURCE[kind]
    return (layer + d_layer, scale + d_scale)


def trellis_edges(layers: int, scales: int) -> list[Edge]:
    """Every edge of an L x S trellis, in canonical order."""
    edges: list[Edge] = [(0, s, "down") for s in range(1, scales)]
    for layer in range(1, layers):
        for scale in range(scales):
            for kind in KINDS:
                if kind == "down" and scale == 0 or kind == "up" and scale == scales - 1:
                    continue
                edges.append((layer, scale, kind))
    return edges


def _incoming(layers: int, scales: int) -> dict[Node, list[Edge]]:
    incoming: dict[Node, list[Edge]] = {
        (layer, scale): [] for layer in range(layers) for scale in range(scales)
    }
    for edge in trellis_edges(layers, scales):
        incoming[edge[:2]].append(edge)
    return incoming


def _reachable(layers: int, scales: int, edges: set[Edge]) -> set[Node]:
    """Nodes reachable from `L0S0`; nodes are visited in topological (canonical) order."""
    reached = {(0, 0)}
    incoming = _incoming(layers, scales)
    for node, into in incoming.items():
        if any(edge in edges and edge_source(edge) in reached for edge in into):
            reached.add(node)
    return reached


def _repair_path(layers: int, scales: int, edges: set[Edge]) -> list[Edge]:
    """The fewest inactive edges that connect `L0S0` to the last layer's coarsest node."""
    incoming = _incoming(layers, scales)
    cost: dict[Node, float] = {(0, 0): 0}
    best: dict[Node, Edge] = {}
    for node, into in incoming.items():
        if node == (0, 0):
            continue
        cost[node] = math.inf
        # `into` is in KINDS order; strict `<` keeps the first of equal costs.
        for edge in into:
            candidate = cost[edge_source(edge)] + (0 if edge in edges else 1)
            if candidate < cost[node]:
                cost[node], best[node] = candidate, edge
    path, node = [], (layers - 1, scales - 1)
    while node != (0, 0):
        path.append(best[node])
        node = edge_source(best[node])
    return [edge for edge in path if edge not in edges]


def active_edges(layers: int, scales: int, mask: Iterable[Sequence]) -> tuple[list[Edge], Node]:
    """The pruned (and if need be repaired) architecture of a mask: `(edges, output node)`.

    `mask` lists the switched-on edges; those outside the L x S trellis are
    ignored. See the module docstring for the rules.
    """
    if layers < 2 or scales < 1:
        raise ValueError(f"fabric: need layers >= 2 and scales >= 1, got {layers}, {scales}")
    valid = set(trellis_edges(layers, scales))
    edges = {(int(e[0]), int(e[1]), str(e[2])) for e in mask} & valid
    reached = _reachable(layers, scales, edges)
    if not any((layers - 1, s) in reached for s in range(scales)):
        edges |= set(_repair_path(layers, scales, edges))
        reached = _reachable(layers, scales, edges)
    output = max((node for node in reached if node[0] == layers - 1), key=lambda n: n[1])
    # Walking edges backwards from the output in reverse canonical order
    # visits every target before its sources.
    needed = {output}
    kept = []
    for edge in reversed(trellis_edges(layers, scales)):
        if edge in edges and edge[:2] in needed and edge_source(edge) in reached:
            needed.add(edge_source(edge))
            kept.append(edge)
    return kept[::-1], output


def output_node(config: Config) -> Node:
    """The node whose map is pooled into the features."""
    return active_edges(config["layers"], config["scales"], config["edges"])[1]


def active_nodes(config: Config) -> list[Node]:
    """`L0S0` and every node fed by an active edge, in topological order."""
    targets = {tuple(edge[:2]) for edge in config["edges"]}
    return [(0, 0)] + sorted(targets)


def max_scales(size: int) -> int:
    """Scales an input side of `size` supports: halving (rounding up) until 1 pixel."""
    return 1 + math.ceil(math.log2(size)) if size > 1 else 1


def _scale_sizes(height: int, width: int, scales: int) -> list[tuple[int, int]]:
    sizes = [(height, width)]
    for _ in range(1, scales):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def build_trellis(config: Config, input_shape: tuple[int, int, int]) -> keras.Model:
    """The active trellis as a functional model named `fabric`: `L0S0`'s map to the output's."""
    edges = [tuple(edge) for edge in config["edges"]]
    channels = int(config["channels"])
    height, width, _ = input_shape
    sizes = _scale_sizes(height, width, config["scales"])
    inputs = keras.Input((height, width, channels), name="L0S0")
    maps = {(0, 0): inputs}
    for node in active_nodes(config)[1:]:
        name = node_name(node)
        terms = []
        for edge in (e for e in edges if e[:2] == node):
            source = maps[edge_source(edge)]
            kind = edge[2]
            label = f"{node_name(edge_source(edge))}_{name}"
            strides = 2 if kind == "down" else 1
            x = keras.layers.Conv2D(
                channels, 3, strides=strides, padding="same", use_bias=False, name=f"{label}_conv"
            )(source)
            if kind == "up":
                x = keras.layers.UpSampling2D(2, name=f"{label}_upsample")(x)
                extra_h = 2 * sizes[node[1] + 1][0] - sizes[node[1]][0]
                extra_w = 2 * sizes[node[1] + 1][1] - sizes[node[1]][1]
                if extra_h or extra_w:
                    x = keras.layers.Cropping2D(((0, extra_h), (0, extra_w)), name=f"{label}_crop")(
                        x
                    )
            terms.append(x)
        x = terms[0] if len(terms) == 1 else keras.layers.Add(name=f"{name}_sum")(terms)
        # Momentum 0.9: a trial sees only hundreds of episodes (as in conv_blocks).
        x = FusedBatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        maps[node] = keras.layers.ReLU(name=f"{name}_relu")(x)
    return keras.Model(inputs, maps[output_node(config)], name="fabric")


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"fabric genotype: {what} must be an integer, got {value!r}")
    return value


class NeuralFabric(SearchSpace):
    """Convolutional neural fabrics: trellis size and embedded-architecture edge mask.

    Options: `channels` (C of every node), `layers` and `scales` (the values
    the search chooses from).
    """

    OPTIONS = (
        Option("channels", int, 16, "channels of every trellis node", lower_bound=1),
        Option(
            "layers",
            list,
            [4, 6, 8],
            "trellis depths the search chooses from",
            item_type=int,
            lower_bound=2,
        ),
        Option(
            "scales",
            list,
            [3, 4, 5],
            "trellis scales the search chooses from",
            item_type=int,
            lower_bound=1,
        ),
    )

    @classmethod
    def test_options(cls) -> dict[str, Any]:
        return {"channels": 4, "layers": [2, 3], "scales": [2, 3]}

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        for name in ("layers", "scales"):
            if not self.options[name]:
                raise ValueError(f"fabric: {name} must not be empty")

    def sample_config(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        layer_values, scale_values = self.options["layers"], self.options["scales"]
        layers = hp.Choice(
            "fabric/layers", list(layer_values), default=layer_values[len(layer_values) // 2]
        )
        scales = hp.Choice(
            "fabric/scales", list(scale_values), default=scale_values[len(scale_values) // 2]
        )
        # Every edge of the largest trellis, every time: strategies mutate the
        # mask through these alone, and a smaller trellis ignores the rest.
        mask = [
            edge
            for edge in trellis_edges(max(layer_values), max(scale_values))
            if hp.Boolean(f"fabric/edge_L{edge[0]}_S{edge[1]}_{edge[2]}", default=True)
        ]
        edges, _ = active_edges(layers, scales, mask)
        return {
            "layers": int(layers),
            "scales": int(scales),
            "channels": self.options["channels"],
            "edges": [list(edge) for edge in edges],
        }

    def build(self, config: Config, input_shape: tuple[int, int, int]) -> keras.Model:
        config = self.config_from_genotype(config)
        height, width, _ = input_shape
        limit = max_scales(min(height, width))
        if config["scales"] > limit:
            raise ValueError(
                f"fabric: {config['scales']} scales need a larger input than "
                f"{height}x{width} (at most {limit} scales)"
            )
        channels = config["channels"]
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name="stem_conv")(
            inputs
        )
        x = FusedBatchNormalization(momentum=0.9, name="stem_bn")(x)
        x = keras.layers.ReLU(name="stem_relu")(x)
        x = build_trellis(config, (height, width, channels))(x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        return keras.Model(inputs, x, name="neural_fabric")

    def describe(self, config: Config) -> str:
        total = len(trellis_edges(config["layers"], config["scales"]))
        return (
            f"fabric L{config['layers']} S{config['scales']} C{config['channels']} "
            f"{len(config['edges'])}/{total} edges"
        )

    def genotype(self, config: Config) -> dict[str, Any]:
        return {
            "layers": int(config["layers"]),
            "scales": int(config["scales"]),
            "channels": int(config["channels"]),
            "edges": [[int(e[0]), int(e[1]), str(e[2])] for e in config["edges"]],
        }

    def config_from_genotype(self, genotype: Mapping[str, Any]) -> dict[str, Any]:
        """Checks a pruned architecture; raises ValueError unless it is exactly one."""
        if not isinstance(genotype, Mapping) or set(genotype) != {
            "layers",
            "scales",
            "channels",
            "edges",
        }:
            raise ValueError(
                "fabric genotype: expected a mapping with keys channels, edges, layers, scales"
            )
        layers = _as_int(genotype["layers"], "layers")
        scales = _as_int(genotype["scales"], "scales")
        channels = _as_int(genotype["channels"], "channels")
        if layers < 2 or scales < 1 or channels < 1:
            raise ValueError(f"fabric genotype: bad sizes L{layers} S{scales} C{channels}")
        valid = set(trellis_edges(layers, scales))
        edges = []
        for edge in genotype["edges"]:
            if (
                not isinstance(edge, (list, tuple))
                or len(edge) != 3
                or not isinstance(edge[2], str)
            ):
                raise ValueError(f"fabric genotype: an edge is [layer, scale, kind], got {edge!r}")
            edge = (_as_int(edge[0], "edge layer"), _as_int(edge[1], "edge scale"), edge[2])
            if edge not in valid:
                raise ValueError(
                    f"fabric genotype: {list(edge)} is not an edge of L{layers} S{scales}"
                )
            edges.append(edge)
        pruned, _ = active_edges(layers, scales, edges)
        if pruned != edges:
            raise ValueError(
                "fabric genotype: edges must be in canonical order, without duplicates, "
                "each on a path from L0S0 to the output"
            )
        return {
            "layers": layers,
            "scales": scales,
            "channels": channels,
            "edges": [list(edge) for edge in edges],
        }

    def cells(self, config: Config, backbone: keras.Model) -> dict[str, keras.Model]:
        return {"fabric": backbone.get_layer("fabric")}

    def cell_graphs(self, config: Config) -> list[CellGraph]:
        output = output_node(config)
        nodes = tuple(node_name(n) for n in active_nodes(config)[1:] if n != output)
        edges = tuple(
            (node_name(edge_source(tuple(e))), node_name(tuple(e[:2])), OPERATIONS[e[2]])
            for e in config["edges"]
        )
        grid = {node_name(node): node for node in active_nodes(config)}
        return [CellGraph("fabric", ("L0S0",), nodes, node_name(output), edges, grid=grid)]
