"""FLOPs of one forward pass of a Keras model, counted from its traced graph.

`estimate_flops` traces `model(x, training=False)` for a batch of one example
in a `tf.function` and adds up, op by op, the FLOP statistics TensorFlow
registers for its graph ops: exactly the numbers `tf.compat.v1.profiler`
reports with `ProfileOptionBuilder.float_operation()` (the profiler collects
them with the same `get_stats_for_node_def` calls). Walking the graph here
rather than through the profiler keeps it quiet and lets us fill the
profiler's gaps:

* layers that are `tf.function`s are inlined while tracing (with their
  batch-of-one shapes), remaining function calls, `If`/`Case` (the costliest
  branch) and `While` bodies (counted once: exact for `map_fn` over the
  batch of one) are entered; the profiler skips them all;
* `Einsum` (`MultiHeadAttention`, `EinsumDense` variants), `FusedBatchNorm*`,
  `Max`/`Min`/`Prod` reductions and 3-D transposed convolutions, which have
  no registered statistic, are counted here;
* `BatchMatMul*` honours `adj_x` (TensorFlow's statistic reads a
  `transpose_a` attribute these ops do not have), and transposed convolutions
  count the multiply-adds actually performed (input elements x kernel x
  output channels) instead of TensorFlow's stride-blind output-based count.

Conventions (TensorFlow's): a multiply-add is 2 FLOPs; additions,
multiplications, divisions, square roots, means and poolings count one per
element; activations (ReLU, sigmoid, ...), resizes, copies and pure shape
manipulation count nothing. Ops with no floating point input or output
(index arithmetic, loop counters) are ignored.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
from collections.abc import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import function_def_to_graph
from tensorflow.python.framework import ops as tf_ops
from tensorflow.python.profiler.internal import flops_registry  # noqa: F401  (registers stats)
from tensorflow.python.util import deprecation

from metasearch import graphs

_CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
_IF_OPS = frozenset({"If", "StatelessIf"})
_CASE_OPS = frozenset({"Case", "StatelessCase"})
_WHILE_OPS = frozenset({"While", "StatelessWhile"})
_REDUCTIONS = frozenset({"Max", "Min", "Prod"})
_FUSED_BN = frozenset({"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"})
_BATCH_MATMUL = frozenset({"BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"})
_TRANSPOSED_CONV = frozenset({"Conv2DBackpropInput", "Conv3DBackpropInputV2"})


def estimate_flops(
    model: keras.Model, input_shape: tuple[int, ...] | Sequence[tuple[int, ...]]
) -> int:
    """FLOPs (a multiply-add is 2) of one inference forward pass on ONE example.

    `input_shape` is the example's shape without the batch dimension, e.g.
    `(28, 28, 1)`; for a model with several inputs, a sequence with one shape
    per input. Nested models, layers that are `tf.function`s and control flow
    are included (see the module docstring for the counting conventions).
    """
    return sum(flop_breakdown(model, input_shape).values())


def flop_breakdown(
    model: keras.Model, input_shape: tuple[int, ...] | Sequence[tuple[int, ...]]
) -> dict[str, int]:
    """FLOPs of one inference forward pass on one example, by TensorFlow op type.

    Same count as `estimate_flops`, split by op type (e.g. `Conv2D`,
    `DepthwiseConv2dNative`, `MatMul`); op types costing nothing are left out.
    """
    shapes = _normalize_shapes(input_shape)
    dtypes = _input_dtypes(model, len(shapes))
    specs = [tf.TensorSpec((1, *shape), dtype) for shape, dtype in zip(shapes, dtypes)]
    single = len(specs) == 1 and not _expects_list(model)
    if not model.built:
        # Build the variables eagerly: creating them while tracing would tie
        # them to this one throwaway function.
        dummy = [tf.zeros(spec.shape, spec.dtype) for spec in specs]
        model(dummy[0] if single else dummy, training=False)

    def forward(*inputs):
        return model(inputs[0] if single else list(inputs), training=False)

    with _quiet(), _inline_functions():
        graph = graphs.function(forward).get_concrete_function(*specs).graph
    with _quiet():
        counts = _count_graph(graph, depth=0)
    return {op_type: int(n) for op_type, n in sorted(counts.items()) if n}


def format_flops(n: float) -> str:
    """A short human-readable FLOP count: `950`, `12.3K`, `12.3M`, `1.2G`, `3.4T`."""
    value = float(n)
    if value < 0:
        return "-" + format_flops(-value)
    if value < 999.5:
        return f"{value:.0f}"
    units = ((1e3, "K"), (1e6, "M"), (1e9, "G"), (1e12, "T"))
    index = max(i for i, (threshold, _) in enumerate(units) if value >= threshold or i == 0)
    scaled = value / units[index][0]
    if scaled >= 999.5 and index + 1 < len(units):
        # Rounds up to 1000 of this unit: say 1.0 of the next one instead.
        index += 1
        scaled = value / units[index][0]
    # Three significant digits where it fits: 1.2G, 12.3M, 123M.
    text = f"{scaled:.1f}" if scaled < 99.95 else f"{scaled:.0f}"
    return text + units[index][1]


def _normalize_shapes(input_shape) -> list[tuple[int, ...]]:
    """One shape per model input, every dimension a positive int."""
    if len(input_shape) > 0 and all(isinstance(s, (tuple, list)) for s in input_shape):
        shapes = [tuple(s) for s in input_shape]
    else:
        shapes = [tuple(input_shape)]
    for shape in shapes:
        if not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
            raise ValueError(
                f"input_shape must be fully known positive ints without the batch "
                f"dimension, got {shape}"
            )
    return [tuple(int(d) for d in shape) for shape in shapes]


def _input_dtypes(model: keras.Model, count: int) -> list[tf.dtypes.DType]:
    """The dtypes a functional model declares for its inputs, float32 otherwise."""
    try:
        declared = [tf.as_dtype(t.dtype) for t in model.inputs]
    except (AttributeError, TypeError, ValueError):
        declared = []
    if len(declared) != count:
        declared = [tf.float32] * count
    return declared


def _expects_list(model: keras.Model) -> bool:
    """Whether a single-input functional model was declared with a list of inputs."""
    structure = getattr(model, "_inputs_struct", None)
    return isinstance(structure, (list, tuple))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences TensorFlow's deprecation notices and Python-side logging meanwhile."""
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        with deprecation.silence():
            yield
    finally:
        tf_logger.setLevel(level)


@contextlib.contextmanager
def _inline_functions() -> Iterator[None]:
    """Makes `tf.function`s inside the model trace inline into our graph meanwhile.

    A layer whose `call` is a `tf.function` was first traced symbolically with
    an unknown batch size and would reuse that trace, whose shapes are too
    vague to count. Running functions "eagerly" while we trace puts their ops
    straight into our batch-of-one graph instead. The setting is global, so
    it is restored at once.
    """
    previous = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(previous)


def _count_graph(graph: tf.Graph, depth: int) -> collections.Counter:
    """FLOPs by op type of every op in `graph`, entering called functions."""
    if depth > 32:
        raise RecursionError("estimate_flops: function calls nested more than 32 deep")
    counts: collections.Counter = collections.Counter()
    for op in graph.get_operations():
        if op.type in _CALL_OPS:
            counts.update(_count_function(graph, op, "f", depth))
        elif op.type in _IF_OPS:
            counts.update(
                _costliest(
                    [_count_function(graph, op, a, depth) for a in ("then_branch", "else_branch")]
                )
            )
        elif op.type in _CASE_OPS:
            names = [f.name for f in op.node_def.attr["branches"].list.func]
            counts.update(_costliest([_count_named(graph, op, n, depth) for n in names]))
        elif op.type in _WHILE_OPS:
            counts.update(_count_function(graph, op, "cond", depth))
            counts.update(_count_function(graph, op, "body", depth))
        elif _is_floating(op):
            flops = _op_flops(graph, op)
            if flops:
                counts[op.type] += flops
    return counts


def _costliest(options: list[collections.Counter]) -> collections.Counter:
    """The branch with the most FLOPs (what an `If`/`Case` costs at worst)."""
    return max(options, key=lambda c: sum(c.values()), default=collections.Counter())


def _count_function(graph: tf.Graph, op: tf.Operation, attr: str, depth: int):
    """FLOPs of the function named by `op`'s attribute `attr`."""
    return _count_named(graph, op, op.node_def.attr[attr].func.name, depth)


def _count_named(graph: tf.Graph, op: tf.Operation, name: str, depth: int):
    """FLOPs of the function `name` called by `op`, found in `graph` or an outer graph."""
    body = _function_graph(graph, op, name)
    return collections.Counter() if body is None else _count_graph(body, depth + 1)


def _function_graph(graph: tf.Graph, op: tf.Operation, name: str) -> tf.Graph | None:
    """The body graph of function `name`; rebuilt from its definition if needed."""
    current = graph
    while current is not None:
        function = current._get_function(name)
        if function is not None:
            body = getattr(function, "graph", None)
            if body is not None:
                return body
            definition = getattr(function, "definition", None)
            if definition is None:
                return None
            # A function loaded from a SavedModel has no Python graph: rebuild
            # it with the call site's input shapes so shapes are known inside.
            input_shapes = [t.shape for t in op.inputs]
            if op.type in _WHILE_OPS or len(input_shapes) != len(definition.signature.input_arg):
                input_shapes = None
            return function_def_to_graph.function_def_to_graph(
                definition, input_shapes=input_shapes
            )
        current = getattr(current, "outer_graph", None)
    return None


def _is_floating(op: tf.Operation) -> bool:
    """Whether any input or output of `op` is a floating point tensor."""
    tensors = list(op.inputs) + list(op.outputs)
    return any(t.dtype.is_floating or t.dtype.is_complex for t in tensors)


def _op_flops(graph: tf.Graph, op: tf.Operation) -> int:
    """FLOPs of one op: ours where TensorFlow has none or a wrong one, else TensorFlow's."""
    try:
        if op.type == "Einsum":
            return _einsum_flops(op)
        if op.type in _BATCH_MATMUL:
            return _batch_matmul_flops(op)
        if op.type in _TRANSPOSED_CONV:
            return _transposed_conv_flops(op)
        if op.type in _FUSED_BN:
            # Inference: a scale and a shift per element.
            return 2 * _num_elements(op.outputs[0].shape)
        if op.type in _REDUCTIONS:
            return _num_elements(op.inputs[0].shape)
        stats = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops")
    except ValueError:
        # Shapes not fully known (data-dependent sizes): nothing to count on.
        return 0
    return int(stats.value or 0)


def _num_elements(shape: tf.TensorShape) -> int:
    """Element count of a fully known shape; ValueError otherwise."""
    shape = tf.TensorShape(shape)
    shape.assert_is_fully_defined()
    return int(np.prod(shape.as_list(), dtype=np.int64))


def _batch_matmul_flops(op: tf.Operation) -> int:
    """2 x output elements x contracted size, for `[..., m, k] @ [..., k, n]`."""
    a_shape = tf.TensorShape(op.inputs[0].shape)
    a_shape.assert_is_fully_defined()
    adjoint = op.node_def.attr["adj_x"].b
    k = int(a_shape[-2] if adjoint else a_shape[-1])
    return 2 * k * _num_elements(op.outputs[0].shape)


def _transposed_conv_flops(op: tf.Operation) -> int:
    """2 x input elements x kernel volume x output channels of a transposed conv.

    The op's inputs are `(output_sizes, filter, layer_input)`; the filter is
    `[*kernel, out_channels, in_channels]`. Each input element is scattered
    through the kernel into every output channel.
    """
    kernel = tf.TensorShape(op.inputs[1].shape)
    kernel.assert_is_fully_defined()
    kernel_volume = int(np.prod(kernel.as_list()[:-2], dtype=np.int64))
    out_channels = int(kernel[-2])
    return 2 * _num_elements(op.inputs[2].shape) * kernel_volume * out_channels


def _einsum_flops(op: tf.Operation) -> int:
    """FLOPs of an `Einsum`: one multiply (and one add if summing) per index tuple.

    With two operands every combination of index values costs a multiply, and
    an add too when some index is summed away: 2 x product of all index sizes
    for a contraction (a matmul's 2mnk), 1 x for an outer/elementwise product.
    One operand: a sum over the dropped indices costs one add per input
    element; a transpose or diagonal costs nothing.
    """
    equation = op.node_def.attr["equation"].s.decode().replace(" ", "")
    shapes = [tf.TensorShape(t.shape) for t in op.inputs]
    for shape in shapes:
        shape.assert_is_fully_defined()
    out_shape = tf.TensorShape(op.outputs[0].shape)
    out_shape.assert_is_fully_defined()
    if "->" in equation:
        lhs, rhs = equation.split("->")
    else:
        lhs, rhs = equation, None
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum equation {equation!r} does not match {len(shapes)} inputs")
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        labels = re.findall(r"\.\.\.|[A-Za-z]", term)
        dims = shape.as_list()
        if "..." in labels:
            at = labels.index("...")
            n_ellipsis = len(dims) - (len(labels) - 1)
            ellipsis = int(np.prod(dims[at : at + n_ellipsis], dtype=np.int64))
            sizes["..."] = max(sizes.get("...", 1), ellipsis)
            dims = dims[:at] + [ellipsis] + dims[at + n_ellipsis :]
        for label, dim in zip(labels, dims):
            sizes[label] = max(sizes.get(label, 1), int(dim))
    if rhs is None:
        counted = collections.Counter(c for t in terms for c in re.findall(r"[A-Za-z]", t))
        output_labels = {c for c, n in counted.items() if n == 1} | (
            {"..."} if "..." in sizes else set()
        )
    else:
        output_labels = set(re.findall(r"\.\.\.|[A-Za-z]", rhs))
    summed = set(sizes) - output_labels
    volume = int(np.prod(list(sizes.values()), dtype=np.int64))
    if len(terms) == 1:
        return volume if summed else 0
    return (2 if summed else 1) * volume * (len(terms) - 1)
