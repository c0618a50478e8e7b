"""How the core turns Python into TensorFlow graphs: `tf.function` without AutoGraph.

Plugin, search-space and core code is pure tensor code (`metasearch.api`):
control flow on tensor values is written with `tf.cond`, `tf.while_loop` or
`keras.ops`, and Python `if`/`for` only ever see Python values (shapes, step
counts, options), which tracing unrolls. Such code needs no AutoGraph, and
AutoGraph costs: it rewrites the source of every Python function a trace
reaches, once per process, at about 20 ms each. In the main job's first trial
that was 62 functions and about 1.3 s of its 4.7 s outside training (the
episode pipeline's map, the training step, pooled evaluation, the latency
measure through the exported signature). Without it a trace is Python calling
TensorFlow ops, and a Python `if` on a tensor fails at once, naming the line,
instead of being quietly converted in one mode and not another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf


def function(python_function: Callable, **options: Any):
    """`tf.function(python_function, **options)`, traced without AutoGraph."""
    return tf.function(python_function, autograph=False, **options)


def dataset_function(python_function: Callable) -> Callable:
    """`python_function` marked for `tf.data.Dataset.map` to trace without AutoGraph."""
    return tf.autograph.experimental.do_not_convert(python_function)
