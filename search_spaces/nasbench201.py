"""`nasbench201`: the NAS-Bench-201 cell space (Dong and Yang, ICLR 2020).

A cell has four nodes; node 0 is the cell's input and every node j sums one
operation applied to each earlier node i (six edges). The cell's output is
node 3. Operations: `none` (zeros), `skip_connect` (identity),
`nor_conv_1x1` and `nor_conv_3x3` (ReLU, conv without bias, BN) and
`avg_pool_3x3` (stride 1, padding excluded from the average).

The macro skeleton is the benchmark's: a 3x3 conv stem (C channels) and BN;
three stages of N cells at C, 2C and 4C channels, separated by residual
reduction blocks (a ResNet basic block of stride 2 whose shortcut is 2x2
average pooling and a 1x1 conv); then BN, ReLU and global average pooling
into `[batch, 4C]` features. Every cell shares the searched architecture.
The `stages` option (3, the benchmark's) exists so that conformance tests
can compile a smaller instance; fewer stages give `[batch, 2^(stages-1) C]`.

Edges are numbered 1-based as in the benchmark's README: `edge_1_2` is node
0 -> node 1, ..., `edge_3_4` node 2 -> node 3. Operation values are in the
order whose index is NAS-Bench-201's `op_indices` digit, so `table_key`
gives the row of the shared table (`TABLE_KEY_COLUMN = "op_indices"`). The
default cell is the benchmark README's example,
`|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|`.

Other tables of this cell (a NAS-Bench-201 subset, a TransNAS-Bench-101-style
micro table without `avg_pool_3x3`) are used through `use_table`: the space
then offers on each edge only the operations the table has there, and writes
keys in the table's own numbering of the operations.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras
import keras_tuner

from metasearch.api import CellGraph, Config, SearchSpace
from metasearch.layers import FusedBatchNormalization
from metasearch.options import Option

OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
# (source, target) of each edge, 0-based, in the benchmark's edge order.
EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
EDGE_KEYS = tuple(f"edge_{i + 1}_{j + 1}" for i, j in EDGES)
DEFAULT_CELL = {
    "edge_1_2": "nor_conv_3x3",
    "edge_1_3": "nor_conv_1x1",
    "edge_1_4": "skip_connect",
    "edge_2_3": "nor_conv_3x3",
    "edge_2_4": "nor_conv_1x1",
    "edge_3_4": "nor_conv_3x3",
}
_NODE_PATTERN = re.compile(r"^\|(?:[a-z0-9_]+~\d+\|)+$")


def _check_config(config: Config) -> None:
    if set(config) != set(EDGE_KEYS):
        raise ValueError(f"nasbench201: a config maps exactly {', '.join(EDGE_KEYS)} to operations")
    for key in EDGE_KEYS:
        if config[key] not in OPS:
            raise ValueError(f"nasbench201: {key}={config[key]!r} is not one of {OPS}")


def arch_string(config: Config) -> str:
    """The cell in NAS-Bench-201's string form (node j lists `op~i` for each i < j)."""
    _check_config(config)
    nodes = []
    for target in (1, 2, 3):
        ops = [f"{config[key]}~{i}" for key, (i, j) in zip(EDGE_KEYS, EDGES) if j == target]
        nodes.append("|" + "|".join(ops) + "|")
    return "+".join(nodes)


def config_from_arch_string(arch: str) -> dict[str, str]:
    """The config of a NAS-Bench-201 arch string; ValueError unless it is well formed."""
    if not isinstance(arch, str):
        raise ValueError(f"nasbench201: an arch string is a str, got {arch!r}")
    parts = arch.split("+")
    if len(parts) != 3:
        raise ValueError(f"nasbench201: arch string needs 3 nodes joined by '+': {arch!r}")
    config = {}
    for target, part in enumerate(parts, start=1):
        if not _NODE_PATTERN.match(part):
            raise ValueError(f"nasbench201: malformed node {part!r} in {arch!r}")
        tokens = part.strip("|").split("|")
        if len(tokens) != target:
            raise ValueError(f"nasbench201: node {target} needs {target} inputs in {arch!r}")
        for source, token in enumerate(tokens):
            op, _, index = token.partition("~")
            if int(index) != source or op not in OPS:
                raise ValueError(f"nasbench201: bad operation {token!r} in {arch!r}")
            config[f"edge_{source + 1}_{target + 1}"] = op
    return {key: config[key] for key in EDGE_KEYS}


def table_key(config: Config) -> str:
    """The six `op_indices` digits of a config."""
    _check_config(config)
    return "".join(str(OPS.index(config[key])) for key in EDGE_KEYS)


class Zeros(keras.layers.Layer):
    """The `none` operation: zeros shaped like its input.

    Multiplying by zero (as the benchmark's code does) rather than making new
    zeros keeps the input in the graph, so a cell with no path to its output
    gives zero gradients instead of missing ones (which Keras warns about).
    """

    def call(self, inputs):
        return inputs * 0.0


def _relu_conv_bn(x, filters: int, kernel: int, strides: int, name: str):
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    x = keras.layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    # Momentum 0.9: a trial sees only hundreds of episodes (as in conv_blocks).
    return FusedBatchNormalization(momentum=0.9, name=f"{name}_bn")(x)


def build_cell(config: Config, input_shape: tuple[int, int, int], name: str) -> keras.Model:
    """One cell as a single-input functional model (same shape in and out)."""
    _check_config(config)
    channels = input_shape[-1]
    inputs = keras.Input(input_shape, name=f"{name}_node0")
    nodes = [inputs]
    for target in (1, 2, 3):
        terms = []
        for key, (source, j) in zip(EDGE_KEYS, EDGES):
            op = config[key]
            if j != target or op == "none":
                continue
            label = f"edge_{source}_{target}"
            x = nodes[source]
            if op == "nor_conv_3x3":
                x = _relu_conv_bn(x, channels, 3, 1, label)
            elif op == "nor_conv_1x1":
                x = _relu_conv_bn(x, channels, 1, 1, label)
            elif op == "avg_pool_3x3":
                # TF's SAME average pooling excludes the padding, like the
                # benchmark's count_include_pad=False.
                x = keras.layers.AveragePooling2D(3, 1, padding="same", name=f"{label}_pool")(x)
            terms.append(x)
        if not terms:
            nodes.append(Zeros(name=f"node{target}_zeros")(inputs))
        elif len(terms) == 1:
            nodes.append(terms[0])
        else:
            nodes.append(keras.layers.Add(name=f"node{target}")(terms))
    output = nodes[3]
    if output is inputs:
        # A lone skip_connect into node 3: a model needs a layer between.
        output = keras.layers.Identity(name="node3")(inputs)
    return keras.Model(inputs, output, name=name)


def _reduction(x, filters: int, name: str):
    """The benchmark's residual reduction block (ResNet basic block, stride 2)."""
    y = _relu_conv_bn(x, filters, 3, 2, f"{name}_a")
    y = _relu_conv_bn(y, filters, 3, 1, f"{name}_b")
    shortcut = keras.layers.AveragePooling2D(2, 2, padding="same", name=f"{name}_pool")(x)
    shortcut = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_shortcut")(shortcut)
    return keras.layers.Add(name=f"{name}_add")([shortcut, y])


class NASBench201(SearchSpace):
    """The NAS-Bench-201 cell (six edges, five operations) in its benchmark skeleton.

    Options: `channels` (C, the first stage's width; 16 in the benchmark),
    `cells_per_stage` (N; 5 in the benchmark, 2 by default here: a 5-way
    1-shot 15-query step at 28x28 on a 2-core CPU took about 0.3 s, 1.3-1.45x
    that of N=1 and 0.6x that of N=5, and the searched cell appears six
    times) and
    `stages` (3, as in the benchmark).
    """

    OPTIONS = (
        Option("channels", int, 16, "channels of the first stage", lower_bound=1),
        Option("cells_per_stage", int, 2, "cells per stage (N)", lower_bound=1),
        Option(
            "stages",
            int,
            3,
            "stages, each after the first starting with a reduction",
            lower_bound=1,
        ),
    )
    TABLE_KEY_COLUMN = "op_indices"
    # The operations a table's key digits may name (`use_table`).
    TABLE_OPS = OPS

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        # Digit i of a table key names `_key_ops[i]`; each edge offers `_edge_ops[edge]`.
        self._key_ops: tuple[str, ...] = OPS
        self._edge_ops: dict[str, tuple[str, ...]] = dict.fromkeys(EDGE_KEYS, OPS)

    def use_table(self, keys: Iterable[str], ops: Sequence[str] | None = None) -> int:
        """Restricts the space to a table's cells; returns how many cells it then holds.

        `ops` names the operation each digit of a key stands for, in digit
        order (None: NAS-Bench-201's `op_indices` numbering, `OPS`); e.g. a
        TransNAS-Bench-101 micro table numbers `none,skip_connect,nor_conv_1x1,
        nor_conv_3x3`. Each edge then offers only the operations some key has
        on it (in `OPS` order; its default is the default cell's operation when
        offered, else the first), so a strategy proposes nothing else, and
        `table_key` writes keys in the table's numbering. The count returned is
        the product of the edges' choices: the table lacks cells of the space
        when it has fewer distinct keys. Raises ValueError for an unknown or
        repeated operation, no keys, or a key that is not six such digits.
        """
        numbering = tuple(OPS if ops is None else ops)
        unknown = [op for op in numbering if op not in OPS]
        if unknown or not numbering or len(set(numbering)) != len(numbering):
            raise ValueError(
                f"nasbench201: table operations {', '.join(numbering) or '(none)'} must be "
                f"distinct names among {', '.join(OPS)}"
            )
        seen: list[set[str]] = [set() for _ in EDGE_KEYS]
        for key in keys:
            if len(key) != len(EDGE_KEYS) or not all(
                digit.isdigit() and int(digit) < len(numbering) for digit in key
            ):
                raise ValueError(
                    f"nasbench201: table key {key!r} is not {len(EDGE_KEYS)} digits 0-"
                    f"{len(numbering) - 1} (one per edge, numbering {', '.join(numbering)})"
                )
            for edge, digit in enumerate(key):
                seen[edge].add(numbering[int(digit)])
        if not seen[0]:
            raise ValueError("nasbench201: the table has no cells")
        self._key_ops = numbering
        self._edge_ops = {
            key: tuple(op for op in OPS if op in found) for key, found in zip(EDGE_KEYS, seen)
        }
        return math.prod(len(choices) for choices in self._edge_ops.values())

    @classmethod
    def test_options(cls) -> dict[str, Any]:
        # Two stages still hold every kind of block (cells, a reduction) but
        # roughly halve XLA compile time, which dominates the conformance test.
        return {"channels": 4, "cells_per_stage": 1, "stages": 2}

    def sample_config(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        config = {}
        for key in EDGE_KEYS:
            choices = self._edge_ops[key]
            default = DEFAULT_CELL[key] if DEFAULT_CELL[key] in choices else choices[0]
            config[key] = hp.Choice(f"nasbench201/{key}", list(choices), default=default)
        return config

    def build(self, config: Config, input_shape: tuple[int, int, int]) -> keras.Model:
        _check_config(config)
        channels = self.options["channels"]
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name="stem_conv")(
            inputs
        )
        x = FusedBatchNormalization(momentum=0.9, name="stem_bn")(x)
        for stage in range(self.options["stages"]):
            if stage:
                x = _reduction(x, channels * 2**stage, f"reduction{stage}")
            for index in range(self.options["cells_per_stage"]):
                cell = build_cell(config, tuple(x.shape[1:]), f"cell_{stage}_{index}")
                x = cell(x)
        x = FusedBatchNormalization(momentum=0.9, name="last_bn")(x)
        x = keras.layers.ReLU(name="last_relu")(x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        return keras.Model(inputs, x, name="nasbench201")

    def describe(self, config: Config) -> str:
        return (
            f"nb201 {table_key(config)} N{self.options['cells_per_stage']} "
            f"C{self.options['channels']}"
        )

    def genotype(self, config: Config) -> dict[str, Any]:
        return {"arch": arch_string(config)}

    def config_from_genotype(self, genotype: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(genotype, Mapping) or set(genotype) != {"arch"}:
            raise ValueError('nasbench201 genotype: expected {"arch": "<arch string>"}')
        return config_from_arch_string(genotype["arch"])

    def cells(self, config: Config, backbone: keras.Model) -> dict[str, keras.Model]:
        return {"cell": backbone.get_layer("cell_0_0")}

    def cell_graphs(self, config: Config) -> list[CellGraph]:
        _check_config(config)
        edges = tuple(
            (f"node{i}", f"node{j}", config[key])
            for key, (i, j) in zip(EDGE_KEYS, EDGES)
            if config[key] != "none"
        )
        return [CellGraph("cell", ("node0",), ("node1", "node2"), "node3", edges)]

    def table_key(self, config: Config) -> str:
        """The cell's key in the table's numbering (NAS-Bench-201's unless `use_table` said)."""
        _check_config(config)
        missing = [config[key] for key in EDGE_KEYS if config[key] not in self._key_ops]
        if missing:
            raise ValueError(
                f"nasbench201: {missing[0]} is not among the table's operations "
                f"({', '.join(self._key_ops)})"
            )
        return "".join(str(self._key_ops.index(config[key])) for key in EDGE_KEYS)
