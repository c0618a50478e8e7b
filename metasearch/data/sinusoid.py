"""`sinusoid`: the few-shot sine-wave regression benchmark of MAML.

Each task is a sine wave `y = A * sin(x - phi)` with amplitude
`A ~ U[0.1, 5.0]` and phase `phi ~ U[0, pi]`; its points have inputs
`x ~ U[-5, 5]`. An episode draws one task, then `k_shot` support points and
`n_query` query points independently from it. This is the setup of Finn,
Abbeel and Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks" (ICML 2017), section 5.1.

Tasks are generated, never read: episode `i` of a stream is a pure function of
`(split, seed, stream, i)` through stateless random ops, like the image
episodes of `metasearch.data.episodes`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from metasearch.api import Episode, RegressionDataset
from metasearch.data import episodes as episodes_lib
from metasearch.errors import UsageError
from metasearch.options import Option

DEFAULT_AMPLITUDE = (0.1, 5.0)
DEFAULT_PHASE = (0.0, math.pi)
DEFAULT_X_RANGE = (-5.0, 5.0)
DEFAULTS = {"amplitude": DEFAULT_AMPLITUDE, "phase": DEFAULT_PHASE, "x_range": DEFAULT_X_RANGE}

# Each split takes its own branch of the episode key, so "train", "val" and
# "test" never share tasks even when they use the same seed and stream id.
SPLITS = ("train", "val", "test")


def _pair(name: str, value: Any) -> tuple[float, float]:
    """`value` as a `(low, high)` pair of floats; "a,b" strings come from list flags."""
    if isinstance(value, str):
        value = value.split(",")
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UsageError(
            f"--sinusoid_{name}={value!r}: expected two numbers, low and high"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise UsageError(f"--sinusoid_{name}={low},{high}: needs finite low < high")
    return low, high


def parse_ranges(options: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """The `amplitude`, `phase` and `x_range` ranges from data set options, checked.

    Raises `UsageError` naming the option for a malformed or empty range, a
    negative amplitude or an unknown option.
    """
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise UsageError(
            f"sinusoid: unknown options {', '.join(unknown)}; known: {', '.join(DEFAULTS)}"
        )
    # None means "not set" (a flag left at its default).
    ranges = {
        name: _pair(name, default if options.get(name) is None else options[name])
        for name, default in DEFAULTS.items()
    }
    if ranges["amplitude"][0] < 0:
        low, high = ranges["amplitude"]
        raise UsageError(f"--sinusoid_amplitude={low},{high}: amplitudes must be >= 0")
    return ranges


def task_key(split: str, seed, stream, index) -> tf.Tensor:
    """The stateless random key of episode `index` of `(split, seed, stream)`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    key = episodes_lib.episode_key(seed, stream, index)
    return tf.random.experimental.stateless_split(key, num=len(SPLITS))[SPLITS.index(split)]


def _subkeys(key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Task, support and query keys: support points never depend on `n_query`."""
    return tuple(tf.unstack(tf.random.experimental.stateless_split(key, num=3), axis=0))


def sinusoid_task_parameters(
    key: tf.Tensor,
    amplitude: tuple[float, float] = DEFAULT_AMPLITUDE,
    phase: tuple[float, float] = DEFAULT_PHASE,
) -> tuple[tf.Tensor, tf.Tensor]:
    """`(A, phi)`, float32 scalars, of the task of episode key `key` (see `task_key`)."""
    parameter_key = _subkeys(key)[0]
    uniform = tf.random.stateless_uniform([2], parameter_key, dtype=tf.float32)
    low = tf.constant([amplitude[0], phase[0]], tf.float32)
    high = tf.constant([amplitude[1], phase[1]], tf.float32)
    values = low + (high - low) * uniform
    return values[0], values[1]


def sinusoid_episode(
    key: tf.Tensor,
    k_shot: int,
    n_query: int,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> Episode:
    """The episode of key `key`: `k_shot` support and `n_query` query points of one sine."""
    ranges = {**DEFAULTS, **(ranges or {})}
    amplitude, phase = sinusoid_task_parameters(key, ranges["amplitude"], ranges["phase"])
    _, support_key, query_key = _subkeys(key)
    x_low, x_high = ranges["x_range"]

    def points(point_key, count):
        x = tf.random.stateless_uniform([count, 1], point_key, x_low, x_high, dtype=tf.float32)
        return x, amplitude * tf.sin(x - phase)

    support_x, support_y = points(support_key, k_shot)
    query_x, query_y = points(query_key, n_query)
    return Episode(
        support_images=support_x,
        support_labels=support_y,
        query_images=query_x,
        query_labels=query_y,
    )


class Sinusoid(RegressionDataset):
    """Sine-wave regression tasks (MAML, Finn et al. 2017), generated from the seed.

    Options (all optional `(low, high)` pairs): `amplitude` (default
    `(0.1, 5.0)`), `phase` (default `(0, pi)`) and `x_range` (default
    `(-5, 5)`). Inputs are float32 `[n, 1]`, targets float32 `[n, 1]`.
    """

    channels = 1
    input_shape = (1,)
    target_dim = 1
    OPTIONS = (
        Option(
            "amplitude",
            list,
            list(DEFAULT_AMPLITUDE),
            "amplitude range LOW,HIGH (Finn et al.).",
            item_type=float,
        ),
        Option("phase", list, list(DEFAULT_PHASE), "phase range LOW,HIGH.", item_type=float),
        Option("x_range", list, list(DEFAULT_X_RANGE), "input range LOW,HIGH.", item_type=float),
    )

    def load(self) -> None:
        """Checks the options (raising `UsageError` naming the option); returns None."""
        parse_ranges(self.options.options)
        return None

    def task_parameters(
        self, split: str, seed: int, stream: int, index: int
    ) -> tuple[float, float]:
        """`(A, phi)` of episode `index` of a stream, as Python floats."""
        ranges = parse_ranges(self.options.options)
        amplitude, phase = sinusoid_task_parameters(
            task_key(split, seed, stream, index), ranges["amplitude"], ranges["phase"]
        )
        return float(amplitude), float(phase)

    def episodes(
        self,
        split: str,
        k_shot: int,
        n_query: int,
        seed: int,
        stream: int,
        count: int | None = None,
        start: int = 0,
    ) -> tf.data.Dataset:
        """A stream of `Episode`s: `count` of them from `start`, or endless if None."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if k_shot < 1 or n_query < 0:
            raise ValueError(f"need k_shot >= 1 and n_query >= 0, got {k_shot} and {n_query}")
        ranges = parse_ranges(self.options.options)

        def make(index):
            return sinusoid_episode(task_key(split, seed, stream, index), k_shot, n_query, ranges)

        return episodes_lib.indexed_stream(make, count, start)
