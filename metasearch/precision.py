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

`auto` resolves, once per run (`resolve_precision`, recorded in the run's
configuration so a rerun repeats it), to bfloat16 for image classification
on a CPU that multiplies bfloat16 natively (AMX-BF16, `native_bfloat16_cpu`)
and no GPU, and to float32 everywhere else: regression (small MLPs, where
bfloat16 saves nothing and costs precision), GPUs (not measured yet) and
CPUs without AMX (not measured). Speed and accuracy are measured by
benchmarks/throughput.py, benchmarks/omniglot_small.py and
benchmarks/sinusoid.py; runs recorded before `auto` could mean bfloat16
keep float32 (`LEGACY_AUTO`).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from metasearch.api import CLASSIFICATION
from metasearch.config import PRECISIONS

_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
_MAX_POOLING = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D)


# What `auto` meant in runs recorded before it could resolve to bfloat16.
LEGACY_AUTO = "float32"


def native_bfloat16_cpu(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively: AMX-BF16 in its flags (Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def resolve_precision(
    setting: str, task_kind: str = CLASSIFICATION, gpus: int | None = None
) -> str:
    """`float32` or `bfloat16` for a `--precision` setting (ValueError names the choices).

    `auto` is bfloat16 for `task_kind` classification (image backbones) on a
    CPU with AMX-BF16 when there are no `gpus` (None: this machine's),
    float32 otherwise.
    """
    value = str(setting).lower()
    if value not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {setting!r}")
    if value != "auto":
        return value
    if gpus is None:
        gpus = len(tf.config.list_physical_devices("GPU"))
    fast = task_kind == CLASSIFICATION and not gpus and native_bfloat16_cpu()
    return "bfloat16" if fast else "float32"


def recorded_precision(config) -> str:
    """The precision a run's recorded configuration (`config.json`'s) trained at.

    A run records its resolved precision; runs written before `--precision`
    existed, or while `auto` always meant float32, trained in float32.
    """
    value = str(config.get("precision", LEGACY_AUTO)).lower()
    return LEGACY_AUTO if value == "auto" else value


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
