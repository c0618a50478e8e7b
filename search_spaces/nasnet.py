"""`nasnet`: the NASNet cell search space (Zoph et al. 2018).

Two cell types are searched, a normal cell (keeps the resolution) and a
reduction cell (halves it). A cell starts from its two input states,
`h[i-2]` and `h[i-1]` (the outputs of the two previous cells), and has B
blocks; block `b` picks two inputs among the cell inputs and earlier blocks,
applies one operation of `OPS` to each, and adds the results. The states no
block uses, cell inputs included (as in TF-Slim), are concatenated into the
cell output. The network is a stem, then `stages` stages of `cells_per_stage`
normal cells, a reduction cell before every stage but the first, filters
doubling at each reduction, and a final ReLU and global average pooling.

The rest follows TF-Slim's `nasnet_utils` and `keras.applications.NASNet`:

* A cell first brings its inputs to its width F: `h[i-1]` through
  ReLU-1x1 conv-BN, `h[i-2]` through a factorized reduction (two offset
  strided 1x1 convs) when its resolution is higher, or ReLU-1x1 conv-BN when
  only its width differs. The first cell after the stem receives the stem
  output as both inputs and uses `h[i-2]` raw (Keras' `p=None`); operations
  on a state that is not F wide end with a 1x1 projection.
* In a reduction cell, operations on the cell inputs use stride 2 and
  operations on blocks stride 1; `identity` on a strided or mismatched input
  becomes ReLU-1x1 conv-BN (TF-Slim's `none`), and concatenated cell inputs
  are brought to the output resolution by factorized reduction.
* `sep_conv_kxk` is ReLU-SepConv-BN twice (stride on the first); the other
  convolutions are ReLU-Conv-BN (`dil_conv_3x3` a full 3x3 conv with
  dilation 2, as in the NASNet paper; `conv_1x7_7x1` a 1x7 then a 7x1
  conv); pooling uses SAME padding, as TF-Slim. Batch norm uses
  momentum 0.9 (a trial runs only hundreds of steps) and epsilon 1e-3.

Stems: "small" (one 3x3 conv) for inputs up to 64 px, "strided" (two
stride-2 3x3 convs, so 84x84 cells run at 21x21) above, and "imagenet"
(NASNet-Mobile's unpadded stride-2 conv with 32 filters and two stem
reduction cells of width F/4 and F/2). Every cell is its own functional
`keras.Model`, `[h_prev_prev, h_prev] -> output`, named `stem_cell_i`,
`normal_cell_i` or `reduction_cell_i`; `cells()` returns `normal_cell_0`
and `reduction_cell_0`.

Genotype (what `genotype` returns, also the config itself)::

    {"normal": [[input0, op0, input1, op1], ...],     # B blocks
     "reduction": [[input0, op0, input1, op1], ...],
     "normal_concat": [state, ...],                   # optional
     "reduction_concat": [state, ...]}                # optional

States are numbered 0 = `h[i-2]`, 1 = `h[i-1]`, 2 + k = block k. Without a
`*_concat` entry the cell output concatenates its unused states. A preset
cell may name its concatenated states explicitly: NASNet-A's, as released,
concatenates `h[i-2]` in the normal cell and a used block in the reduction
cell. Whenever a sampled cell's blocks equal a preset cell's blocks, the
config carries that preset's concat, so searching, fixing hyperparameters
and `cell="nasnet_a"` all give the same architecture for the same tokens.
"""

from __future__ import annotations

import copy
import hashlib
import json
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import keras_tuner

from metasearch.api import CellGraph, Config, SearchSpace
from metasearch.layers import FusedBatchNormalization, MaxPooling2D
from metasearch.options import Option

OPS = (
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
CELL_TYPES = ("normal", "reduction")
INPUT_NAMES = ("h[i-2]", "h[i-1]")
STEMS = ("auto", "small", "strided", "imagenet")
# Largest input side that "auto" gives the unstrided stem.
SMALL_INPUT_MAX = 64
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-3
# Keras' NASNet: penultimate filters = 6 concatenated states x 2**2 doublings x F.
PENULTIMATE_DIVISOR = 24
FILTER_MULTIPLIER = 2
IMAGENET_STEM_FILTERS = 32

PRESETS: dict[str, dict[str, list]] = {
    # TF-Slim's NasNetANormalCell / NasNetAReductionCell (keras' _normal_a_cell
    # and _reduction_a_cell), with TF-Slim's state numbering (0 = h[i-1],
    # 1 = h[i-2]) swapped to ours.
    "nasnet_a": {
        "normal": [
            [1, "sep_conv_5x5", 0, "sep_conv_3x3"],
            [0, "sep_conv_5x5", 0, "sep_conv_3x3"],
            [1, "avg_pool_3x3", 0, "identity"],
            [0, "avg_pool_3x3", 0, "avg_pool_3x3"],
            [1, "sep_conv_3x3", 1, "identity"],
        ],
        "reduction": [
            [1, "sep_conv_5x5", 0, "sep_conv_7x7"],
            [1, "max_pool_3x3", 0, "sep_conv_7x7"],
            [1, "avg_pool_3x3", 0, "sep_conv_5x5"],
            [3, "identity", 2, "avg_pool_3x3"],
            [2, "sep_conv_3x3", 1, "max_pool_3x3"],
        ],
        "normal_concat": [0, 2, 3, 4, 5, 6],
        "reduction_concat": [3, 4, 5, 6],
    },
}


def preset_genotype(name: str) -> dict[str, list]:
    """A copy of the genotype of preset `name` (see `PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"nasnet: unknown cell preset {name!r}; known: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def _is_int(value: Any) -> bool:
    # numbers.Integral admits NumPy integers (as some oracles hand back), not bools.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def validate_genotype(genotype: Mapping[str, Any], blocks: int) -> dict[str, list]:
    """A canonical plain copy of `genotype`; raises ValueError saying what is wrong."""
    if not isinstance(genotype, Mapping):
        raise ValueError(f"nasnet genotype: expected a mapping, got {type(genotype).__name__}")
    allowed = {*CELL_TYPES, *(f"{cell}_concat" for cell in CELL_TYPES)}
    unknown = sorted(set(genotype) - allowed)
    if unknown:
        raise ValueError(
            f"nasnet genotype: unknown keys {unknown}; known: {', '.join(sorted(allowed))}"
        )
    result: dict[str, list] = {}
    for cell in CELL_TYPES:
        if cell not in genotype:
            raise ValueError(f"nasnet genotype: missing the {cell!r} cell")
        cell_blocks = genotype[cell]
        if not isinstance(cell_blocks, Sequence) or isinstance(cell_blocks, str):
            raise ValueError(f"nasnet genotype: {cell} must be a list of blocks")
        if len(cell_blocks) != blocks:
            raise ValueError(
                f"nasnet genotype: the {cell} cell has {len(cell_blocks)} blocks, expected {blocks}"
            )
        result[cell] = [_validate_block(cell, b, block) for b, block in enumerate(cell_blocks)]
    for cell in CELL_TYPES:
        key = f"{cell}_concat"
        if key in genotype:
            result[key] = _validate_concat(key, genotype[key], blocks)
    for cell in CELL_TYPES:
        used = {state for block in result[cell] for state in (block[0], block[2])}
        concat = set(concat_states(result[cell], result.get(f"{cell}_concat")))
        dead = [b for b in range(blocks) if 2 + b not in used | concat]
        if dead:
            raise ValueError(
                f"nasnet genotype: {cell} blocks {dead} are neither inputs of later blocks "
                f"nor in {cell}_concat"
            )
    return result


def _validate_block(cell: str, b: int, block: Any) -> list:
    where = f"nasnet genotype: {cell} block {b}"
    if not isinstance(block, Sequence) or isinstance(block, str) or len(block) != 4:
        raise ValueError(f"{where}: expected [input0, op0, input1, op1], got {block!r}")
    for position in (0, 2):
        state = block[position]
        if not _is_int(state) or not 0 <= state < 2 + b:
            raise ValueError(
                f"{where}: input {state!r} is out of range; choose from {list(range(2 + b))} "
                "(0 = h[i-2], 1 = h[i-1], 2+k = block k)"
            )
    for position in (1, 3):
        if block[position] not in OPS:
            raise ValueError(
                f"{where}: unknown operation {block[position]!r}; known: {', '.join(OPS)}"
            )
    return [int(block[0]), str(block[1]), int(block[2]), str(block[3])]


def _validate_concat(key: str, concat: Any, blocks: int) -> list[int]:
    if not isinstance(concat, Sequence) or isinstance(concat, str) or not concat:
        raise ValueError(f"nasnet genotype: {key} must be a non-empty list of states")
    for state in concat:
        if not _is_int(state) or not 0 <= state < 2 + blocks:
            raise ValueError(
                f"nasnet genotype: {key} state {state!r} is out of range 0..{1 + blocks}"
            )
    if len(set(concat)) != len(concat):
        raise ValueError(f"nasnet genotype: {key} repeats a state: {list(concat)}")
    return [int(state) for state in concat]


def concat_states(
    blocks: Sequence[Sequence[Any]], concat: Sequence[int] | None = None
) -> list[int]:
    """The states a cell concatenates: `concat` if given, else those no block uses."""
    if concat is not None:
        return list(concat)
    used = {state for block in blocks for state in (block[0], block[2])}
    return [state for state in range(2 + len(blocks)) if state not in used]


def _preset_concat(cell: str, blocks: list[list]) -> list[int] | None:
    """The concat of the first preset whose `cell` has exactly these blocks, if any."""
    for preset in PRESETS.values():
        key = f"{cell}_concat"
        if preset[cell] == blocks and key in preset:
            return list(preset[key])
    return None


# --- layers ------------------------------------------------------------------


class _Namer:
    """Unique, readable layer names inside one cell model."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def __call__(self, stem: str) -> str:
        count = self.counts.get(stem, 0)
        self.counts[stem] = count + 1
        return stem if count == 0 else f"{stem}_{count}"


def _bn(name: str) -> keras.layers.BatchNormalization:
    return FusedBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _conv(filters: int, kernel, strides, name: str, dilation: int = 1) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        dilation_rate=dilation,
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def _relu_conv_bn(x, filters: int, kernel: int, stride: int, name: str):
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    if kernel == 1 and stride > 1:
        # The same function as a strided 1x1 conv, whose gradient corrupts memory
        # under TensorFlow's oneDNN CPU kernels (TF 2.21, even input sizes).
        x = _subsample(x, f"{name}_stride")
        stride = 1
    x = _conv(filters, kernel, stride, f"{name}_conv")(x)
    return _bn(f"{name}_bn")(x)


def _separable(x, filters: int, kernel: int, stride: int, name: str):
    # keras' _separable_conv_block: [ReLU, SepConv, BN] twice, stride on the first.
    for index, strides in ((1, stride), (2, 1)):
        x = keras.layers.ReLU(name=f"{name}_relu{index}")(x)
        x = keras.layers.SeparableConv2D(
            filters,
            kernel,
            strides=strides,
            padding="same",
            use_bias=False,
            name=f"{name}_sep{index}",
        )(x)
        x = _bn(f"{name}_bn{index}")(x)
    return x


def _subsample(x, name: str):
    # A 1x1 average pool with stride 2: every other pixel, output ceil(n / 2).
    return keras.layers.AveragePooling2D(1, strides=2, padding="valid", name=name)(x)


def _factorized_reduction(x, filters: int, stride: int, name: str):
    """TF-Slim's `factorized_reduction`: halves the resolution without dropping pixels."""
    if stride == 1:
        x = _conv(filters, 1, 1, f"{name}_conv")(x)
        return _bn(f"{name}_bn")(x)
    first = _subsample(x, f"{name}_pool1")
    first = _conv(filters // 2, 1, 1, f"{name}_conv1")(first)
    # The second path sees the grid shifted by one pixel.
    second = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(x)
    second = keras.layers.Cropping2D(((1, 0), (1, 0)), name=f"{name}_crop")(second)
    second = _subsample(second, f"{name}_pool2")
    second = _conv(filters - filters // 2, 1, 1, f"{name}_conv2")(second)
    x = keras.layers.Concatenate(name=f"{name}_concat")([first, second])
    return _bn(f"{name}_bn")(x)


def _apply_op(x, op: str, filters: int, stride: int, name: str):
    """Operation `op` on state `x`, giving `filters` channels at 1/stride resolution."""
    channels = x.shape[-1]
    if op == "identity":
        if stride == 1 and channels == filters:
            return x
        # TF-Slim's `none` on a strided or mismatched input.
        return _relu_conv_bn(x, filters, 1, stride, name)
    if op.startswith("sep_conv_"):
        return _separable(x, filters, int(op[-1]), stride, name)
    if op == "dil_conv_3x3":
        # Keras refuses stride > 1 with dilation > 1: convolve, then subsample.
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
        x = _conv(filters, 3, 1, f"{name}_conv", dilation=2)(x)
        if stride > 1:
            x = _subsample(x, f"{name}_stride")
        return _bn(f"{name}_bn")(x)
    if op == "conv_1x7_7x1":
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
        x = _conv(filters, (1, 7), (1, stride), f"{name}_conv1x7")(x)
        x = _conv(filters, (7, 1), (stride, 1), f"{name}_conv7x1")(x)
        return _bn(f"{name}_bn")(x)
    if op in ("avg_pool_3x3", "max_pool_3x3"):
        pool = keras.layers.AveragePooling2D if op.startswith("avg") else MaxPooling2D
        x = pool(3, strides=stride, padding="same", name=f"{name}_pool")(x)
        if channels != filters:
            x = _conv(filters, 1, 1, f"{name}_conv")(x)
            x = _bn(f"{name}_bn")(x)
        return x
    if op == "conv_1x1":
        return _relu_conv_bn(x, filters, 1, stride, name)
    if op == "conv_3x3":
        return _relu_conv_bn(x, filters, 3, stride, name)
    raise ValueError(f"nasnet: unknown operation {op!r}; known: {', '.join(OPS)}")


def build_cell(
    name: str,
    blocks: Sequence[Sequence[Any]],
    concat: Sequence[int] | None,
    filters: int,
    reduction: bool,
    prev_prev_shape: Sequence[int],
    prev_shape: Sequence[int],
    raw_prev_prev: bool = False,
) -> keras.Model:
    """One cell as a functional model `[h_prev_prev, h_prev] -> output`.

    Shapes are `(height, width, channels)` of the raw previous states; the
    cell does its own input adjustment. `raw_prev_prev` uses `h_prev_prev`
    unadjusted (the first cell, whose two inputs are both the stem output).
    """
    namer = _Namer()
    prev_prev_in = keras.Input(tuple(prev_prev_shape), name="h_prev_prev")
    prev_in = keras.Input(tuple(prev_shape), name="h_prev")
    prev_prev = prev_prev_in
    if raw_prev_prev:
        pass
    elif prev_prev_shape[0] != prev_shape[0]:
        prev_prev = keras.layers.ReLU(name="adjust_relu")(prev_prev)
        prev_prev = _factorized_reduction(prev_prev, filters, 2, "adjust_reduce")
    elif prev_prev_shape[-1] != filters:
        prev_prev = _relu_conv_bn(prev_prev, filters, 1, 1, "adjust_project")
    prev = _relu_conv_bn(prev_in, filters, 1, 1, "prev")
    states = [prev_prev, prev]
    for b, (input0, op0, input1, op1) in enumerate(blocks):
        outputs = []
        for side, state, op in (("left", input0, op0), ("right", input1, op1)):
            stride = 2 if reduction and state < 2 else 1
            outputs.append(
                _apply_op(states[state], op, filters, stride, namer(f"b{b}_{side}_{op}"))
            )
        states.append(keras.layers.Add(name=f"b{b}_add")(outputs))
    final = states[-1]
    chosen = []
    for state in concat_states(blocks, concat):
        x = states[state]
        if x.shape[1] != final.shape[1]:
            x = _factorized_reduction(x, filters, 2, f"concat{state}_reduce")
        elif x.shape[-1] != filters:
            x = _factorized_reduction(x, filters, 1, f"concat{state}_project")
        chosen.append(x)
    output = chosen[0] if len(chosen) == 1 else keras.layers.Concatenate(name="concat")(chosen)
    return keras.Model([prev_prev_in, prev_in], output, name=name)


# --- the search space ----------------------------------------------------------


def _default_block(cell: str, b: int) -> list:
    """Default tokens: NASNet-A's, so that the untouched space is NASNet-A.

    Blocks beyond NASNet-A's five chain a separable conv on the previous block.
    """
    preset = PRESETS["nasnet_a"][cell]
    if b < len(preset):
        return list(preset[b])
    return [b + 1, "sep_conv_3x3", b, "identity"]


class NASNet(SearchSpace):
    """NASNet normal and reduction cells of B blocks, stacked N per stage.

    The defaults (B=5, N=1, F=8, three stages) suit few-shot search on a
    small CPU: a 5-way 1-shot 15-query ProtoNet training step (80 images)
    took 0.27-0.32 s at 28x28 and 0.27-0.30 s at 84x84 on two CPU cores
    shared with other jobs. With `cell="nasnet_a"`,
    `stem="imagenet"`, `cells_per_stage=4` and `penultimate_filters=1056`
    the backbone is NASNet-Mobile's (a 1000-way dense layer on top gives
    keras' 5,326,716 parameters exactly).

    Options: `blocks` (B), `cells_per_stage` (N), `filters` (width F of the
    first stage, doubled at each reduction), `penultimate_filters` (if set,
    F = penultimate_filters // 24 as in keras' NASNet), `stages`, `stem`
    ("auto": "small", one unstrided 3x3 conv, up to 64 px and "strided", two
    stride-2 3x3 convs, above; "imagenet": NASNet-Mobile's stride-2 conv and
    two stem reduction cells), `stem_filters` (default 3F, or 32 for
    "imagenet"), and `cell` (None to search both cells, or a name in
    `PRESETS` to fix them).
    """

    OPTIONS = (
        Option("blocks", int, 5, "blocks per cell (B)", lower_bound=1),
        Option("cells_per_stage", int, 1, "normal cells per stage (N)", lower_bound=1),
        Option("filters", int, 8, "filters of the first stage", lower_bound=2),
        Option(
            "penultimate_filters",
            int,
            None,
            "if set, filters = this // 24 as in keras' NASNet",
            lower_bound=1,
        ),
        Option("stages", int, 3, "stages (a reduction cell between two)", lower_bound=1),
        Option("stem", str, "auto", f"the stem before the cells: {', '.join(STEMS)}"),
        Option(
            "stem_filters", int, None, "stem width (default 3F, 32 for imagenet)", lower_bound=1
        ),
        Option(
            "cell",
            str,
            None,
            "a named preset (e.g. nasnet_a) fixing both cells instead of searching them",
        ),
    )

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        opts = self.options
        if opts["stem"] not in STEMS:
            raise ValueError(f"nasnet: unknown stem {opts['stem']!r}; known: {', '.join(STEMS)}")
        penultimate = opts["penultimate_filters"]
        if penultimate is not None:
            divisor = PENULTIMATE_DIVISOR * FILTER_MULTIPLIER**2
            if not _is_int(penultimate) or penultimate <= 0 or penultimate % divisor:
                raise ValueError(
                    f"nasnet: penultimate_filters must be a positive multiple of {divisor} "
                    f"(as in keras' NASNet), got {penultimate!r}"
                )
        if opts["cell"] is not None:
            preset = preset_genotype(opts["cell"])
            if len(preset["normal"]) != opts["blocks"]:
                raise ValueError(
                    f"nasnet: preset {opts['cell']!r} has {len(preset['normal'])} blocks, "
                    f"but option blocks is {opts['blocks']}"
                )

    @classmethod
    def test_options(cls) -> dict[str, Any]:
        return {"blocks": 1, "cells_per_stage": 1, "filters": 4, "stages": 1}

    @property
    def filters(self) -> int:
        """Width F of the first stage (after any stem cells)."""
        penultimate = self.options["penultimate_filters"]
        if penultimate is not None:
            return penultimate // PENULTIMATE_DIVISOR
        return self.options["filters"]

    def stem_for(self, input_shape: Sequence[int]) -> str:
        """The stem used for `input_shape` ("auto" resolved)."""
        stem = self.options["stem"]
        if stem == "auto":
            return "small" if max(input_shape[0], input_shape[1]) <= SMALL_INPUT_MAX else "strided"
        return stem

    def sample_config(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        preset = preset_genotype(self.options["cell"]) if self.options["cell"] else None
        config: dict[str, Any] = {}
        for cell in CELL_TYPES:
            blocks = []
            for b in range(self.options["blocks"]):
                prefix = f"nasnet/{cell}/block{b}"
                tokens = preset[cell][b] if preset else _default_block(cell, b)
                inputs = list(range(2 + b))

                def declare(name, values, value):
                    if preset:
                        return hp.Fixed(name, value)
                    return hp.Choice(name, values, default=value)

                input0 = declare(f"{prefix}/input0", inputs, tokens[0])
                input1 = declare(f"{prefix}/input1", inputs, tokens[2])
                op0 = declare(f"{prefix}/op0", list(OPS), tokens[1])
                op1 = declare(f"{prefix}/op1", list(OPS), tokens[3])
                blocks.append([input0, op0, input1, op1])
            config[cell] = blocks
        for cell in CELL_TYPES:
            concat = _preset_concat(cell, config[cell])
            if concat is not None:
                config[f"{cell}_concat"] = concat
        # Values fixed from outside (--fix_hparams) may be anything: check them.
        return validate_genotype(config, self.options["blocks"])

    def genotype(self, config: Config) -> dict[str, Any]:
        return validate_genotype(config, self.options["blocks"])

    def config_from_genotype(self, genotype: Mapping[str, Any]) -> dict[str, Any]:
        return validate_genotype(genotype, self.options["blocks"])

    def preset_name(self, config: Config) -> str | None:
        """The name of the preset `config` is, or None."""
        genotype = self.genotype(config)
        for name, preset in PRESETS.items():
            if preset == genotype:
                return name
        return None

    def build(self, config: Config, input_shape: tuple[int, int, int]) -> keras.Model:
        genotype = self.genotype(config)
        filters = self.filters
        stem = self.stem_for(input_shape)
        inputs = keras.Input(tuple(input_shape), name="images")
        stem_filters = self.options["stem_filters"] or (
            IMAGENET_STEM_FILTERS if stem == "imagenet" else 3 * filters
        )
        if stem == "small":
            x = _conv(stem_filters, 3, 1, "stem_conv")(inputs)
            x = _bn("stem_bn")(x)
        elif stem == "strided":
            # Two stride-2 convs: 84x84 images reach the cells at 21x21, costing
            # about what 28x28 images do with the small stem.
            x = _conv(stem_filters, 3, 2, "stem_conv1")(inputs)
            x = _bn("stem_bn1")(x)
            x = keras.layers.ReLU(name="stem_relu1")(x)
            x = _conv(stem_filters, 3, 2, "stem_conv2")(x)
            x = _bn("stem_bn2")(x)
        else:
            # keras' NASNet: an unpadded stride-2 conv, then two stem cells.
            x = keras.layers.Conv2D(
                stem_filters,
                3,
                strides=2,
                padding="valid",
                use_bias=False,
                kernel_initializer="he_normal",
                name="stem_conv",
            )(inputs)
            x = _bn("stem_bn")(x)

        states = [x, x]
        counts = {"normal": 0, "reduction": 0, "stem": 0}

        def add_cell(kind: str, width: int, stem_cell: bool = False) -> None:
            cell_type = "reduction" if stem_cell else kind
            if stem_cell:
                name = f"stem_cell_{counts['stem']}"
                counts["stem"] += 1
            else:
                name = f"{kind}_cell_{counts[kind]}"
                counts[kind] += 1
            cell = build_cell(
                name,
                genotype[cell_type],
                genotype.get(f"{cell_type}_concat"),
                width,
                reduction=cell_type == "reduction",
                prev_prev_shape=states[0].shape[1:],
                prev_shape=states[1].shape[1:],
                raw_prev_prev=states[0] is states[1],
            )
            states[:] = [states[1], cell([states[0], states[1]])]

        if stem == "imagenet":
            for divisor in (FILTER_MULTIPLIER**2, FILTER_MULTIPLIER):
                add_cell("reduction", max(2, filters // divisor), stem_cell=True)
        for stage in range(self.options["stages"]):
            width = filters * FILTER_MULTIPLIER**stage
            if stage > 0:
                add_cell("reduction", width)
            for _ in range(self.options["cells_per_stage"]):
                add_cell("normal", width)
        x = keras.layers.ReLU(name="final_relu")(states[1])
        x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
        return keras.Model(inputs, x, name="nasnet")

    def cells(self, config: Config, backbone: keras.Model) -> dict[str, keras.Model]:
        """The first normal cell and the first non-stem reduction cell of `backbone`."""
        found = {}
        for kind in CELL_TYPES:
            try:
                found[kind] = backbone.get_layer(f"{kind}_cell_0")
            except ValueError:
                continue
        return found

    def cell_graphs(self, config: Config) -> list[CellGraph]:
        genotype = self.genotype(config)
        graphs = []
        for cell in CELL_TYPES:
            blocks = genotype[cell]
            nodes = tuple(f"block{b}" for b in range(len(blocks)))
            names = INPUT_NAMES + nodes
            edges = []
            for b, (input0, op0, input1, op1) in enumerate(blocks):
                edges.append((names[input0], nodes[b], op0))
                edges.append((names[input1], nodes[b], op1))
            for state in concat_states(blocks, genotype.get(f"{cell}_concat")):
                edges.append((names[state], "output", "concat"))
            graphs.append(CellGraph(cell, INPUT_NAMES, nodes, "output", tuple(edges)))
        return graphs

    def describe(self, config: Config) -> str:
        sizes = f"N{self.options['cells_per_stage']} F{self.filters}"
        preset = self.preset_name(config)
        if preset:
            return f"{preset.replace('_', '-')} {sizes}"
        text = json.dumps(self.genotype(config), sort_keys=True)
        digest = hashlib.sha1(text.encode()).hexdigest()[:6]
        return f"nasnet B{self.options['blocks']} {sizes} #{digest}"
