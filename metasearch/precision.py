"""Numeric precision of backbones: float32, or bfloat16 compute with float32 weights.

`--precision=bfloat16` builds a search space's backbone under Keras's
`mixed_bfloat16` policy: its convolutions and matrix products run in
bfloat16 (on a CPU with AMX-BF16 oneDNN runs them on the AMX tiles: a
conv4-64 ProtoNet step measured 1.7x as fast as float32 side by side on a
2-core one; GPUs are not measured yet), while its weights, their
gradients, Adam's state and batch norm's statistics stay float32. The
backbone's output is cast back to float32, so everything a plugin computes
on it (distances, softmaxes, inner-loop heads, losses) runs in float32, and
plugins stay unaware of the precision. bfloat16 keeps float32's exponent
range, so no loss scaling is needed.

`auto` resolves to float32 (bfloat16 is an opt-in; its speed and accuracy
are measured by benchmarks/throughput.py and benchmarks/omniglot_small.py).
"""

from __future__ import annotations

from typing import Any

import keras

from metasearch.config import PRECISIONS

_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
_MAX_POOLING = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D)


def resolve_precision(setting: str) -> str:
    """`float32` or `bfloat16` for a `--precision` setting (ValueError names the choices).

    `auto` is float32 for now: bfloat16 is an opt-in until its accuracy is
    measured for every plugin (the MAML family's inner loops, regression).
    """
    value = str(setting).lower()
    if value not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {setting!r}")
    return "float32" if value == "auto" else value


def build_backbone(space, config: Any, input_shape, precision: str = "float32") -> keras.Model:
    """`space.build(config, input_shape)` at `precision` (resolved), with float32 outputs."""
    precision = resolve_precision(precision)
    if precision == "float32":
        return space.build(config, input_shape)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(_POLICIES[precision])
    try:
        backbone = space.build(config, input_shape)
    finally:
        keras.config.set_dtype_policy(previous)
    for layer in backbone._flatten_layers(include_self=False, recursive=True):
        if type(layer) in _MAX_POOLING:
            # XLA has no bfloat16 second derivative of max pooling (second-order MAML).
            # Keras's own pooling layers pool in float32 (two casts, compiles everywhere);
            # `metasearch.layers.MaxPooling2D` does so only under XLA.
            layer.dtype_policy = "float32"
    if not hasattr(backbone, "outputs") or len(backbone.outputs) != 1:
        raise ValueError(
            f"--precision={precision}: the {type(space).__name__} backbone is not a "
            "one-output functional Keras model"
        )
    # The same layers and variables (so the same weight names), one cast layer more.
    outputs = keras.layers.Activation("linear", dtype="float32", name="float32_outputs")(
        backbone.outputs[0]
    )
    return keras.Model(backbone.inputs, outputs, name=backbone.name)
