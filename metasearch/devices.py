"""`--devices`: the devices a meta-batch is split across (`tf.distribute.MirroredStrategy`).

`--devices=1` (the default) trains on TensorFlow's default device, as always.
`--devices=N` mirrors each meta-training step over N devices: the first N
GPUs when the machine has GPUs, else N logical CPU devices made by splitting
the CPU (`tf.config.set_logical_device_configuration`; they share its cores,
so this mostly serves to test the multi-device path without GPUs).

Logical devices can only be made before TensorFlow initialises its devices
(before any op runs), so a search calls `configure` first thing
(`controller.search`); from Python, call `configure(N)` before anything else
touches TensorFlow. Too late, or more GPUs than the machine has, is a
one-line `UsageError` naming `--devices`.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from metasearch.errors import UsageError


def configure(count: int) -> list[str]:
    """Makes `count` devices available to meta-training; returns their names.

    Nothing to do for one device. With GPUs, the first `count` GPUs; without,
    the CPU split into `count` logical devices (or more, when an earlier call
    already split it further).
    """
    count = int(count)
    if count < 1:
        raise UsageError(f"--devices={count}: must be at least 1")
    if count == 1:
        return []
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if len(gpus) < count:
            raise UsageError(
                f"--devices={count}: this machine has {len(gpus)} GPU"
                f"{'s' if len(gpus) != 1 else ''}"
            )
        return [f"/gpu:{index}" for index in range(count)]
    cpu = tf.config.list_physical_devices("CPU")[0]
    split = tf.config.get_logical_device_configuration(cpu) or []
    if len(split) < count:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
            )
        except RuntimeError:
            raise UsageError(
                f"--devices={count}: TensorFlow has already started on "
                f"{max(1, len(split))} CPU device{'s' if len(split) > 1 else ''}; the CPU can "
                "only be split before any TensorFlow op runs (from Python: call "
                f"metasearch.devices.configure({count}) first)"
            ) from None
    return [f"/cpu:{index}" for index in range(count)]


@functools.cache
def strategy(count: int) -> tf.distribute.MirroredStrategy:
    """The `MirroredStrategy` over the `count` devices `configure` makes available."""
    return tf.distribute.MirroredStrategy(configure(count))
