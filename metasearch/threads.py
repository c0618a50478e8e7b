"""`--intra_op_threads`: how TensorFlow spreads a meta-training step over the CPU's cores.

TensorFlow runs independent ops side by side (its inter-op pool, one thread
per core) and may also split each op across the cores (its intra-op pool).
Which pays depends on what a step is made of:

* A metric learner's step (ProtoNet, Matching networks) is a short chain of
  large ops on the whole episode: splitting each op across the cores wins.
  conv4-64 ProtoNet, 5-way 1-shot 15-query, 2 cores: 59-65 episodes/s split
  against 55-56 with one thread per op (bfloat16), 37.5 against 28.3
  (float32).
* A gradient-based learner's step (the MAML family) is mostly its inner
  loop: a long chain of small ops on a few support images, with independent
  branches (each layer's input and weight gradients; second order, the
  backward pass through every inner step). Splitting such small ops costs
  more in hand-offs between threads than it saves, while one thread per op
  lets the branches run side by side. conv4-64, 5 inner steps, same episodes,
  2 cores: second-order MAML 18.3 against 13.1 tasks/s, first-order 34.9
  against 28.2 (bfloat16); MAML 12.8 against 11.2 (float32). On large
  episodes the query pass dominates and splitting wins again (20-way 1-shot
  15-query first-order MAML: 9.8 one thread per op against 12.0 split).

So a learner declares what its step is made of (`MetaLearner.STEP_OPS`),
and `auto` (0) runs one thread per op for a learner of `small` ops whose
meta-training episodes are small (at most `SMALL_EPISODE_IMAGES` images in
a pass), on a CPU without GPUs; otherwise TensorFlow's default, every core
per op. `--intra_op_threads=N` sets it for every op.

TensorFlow fixes its thread pools when it starts (before any op runs), so a
search calls `configure` first thing (`controller.search`, as
`metasearch.devices`); from Python, call it before anything else runs a
TensorFlow op. Too late, `auto` keeps what TensorFlow started with, and an
explicit count is a one-line `UsageError` naming `--intra_op_threads`.
Thread counts change only speed and float rounding, so they are not part
of a run's identity.
"""

from __future__ import annotations

import tensorflow as tf

from metasearch import registry
from metasearch.api import REGRESSION
from metasearch.errors import UsageError

# The most images (or regression points) a pass of a meta-training episode may hold
# for one thread per op to pay (see the module docstring's measurements).
SMALL_EPISODE_IMAGES = 100
STEP_OPS = ("small", "large")


def episode_images(config, regression: bool) -> int:
    """The most examples one pass of a meta-training episode of `config` holds.

    Classification: ways x shots or ways x queries, at the largest searched
    way and query count; regression: its support or query points.
    """
    if regression:
        return max(int(config.k_shot), int(config.n_query))
    ways = max([int(config.train_n_way), *(int(w) for w in config.train_n_ways)])
    queries = max([int(config.n_query), *(int(q) for q in config.train_n_queries)])
    return ways * max(int(config.k_shot), queries)


def configure_run(config) -> int:
    """Resolves and sets `config.intra_op_threads` for a search of `config` (a `RunConfig`).

    Reads only the plugin's and data set's classes (no TensorFlow op runs).
    Returns the intra-op thread count in use (0: TensorFlow's default).
    """
    if config.evaluator != "train":  # a table-scored search trains nothing
        return tf.config.threading.get_intra_op_parallelism_threads()
    plugin = registry.load("plugin", config.plugin, "plugin")
    dataset = registry.load("dataset", config.dataset, "dataset")
    images = episode_images(config, dataset.kind == REGRESSION)
    try:
        return configure_for(config.intra_op_threads, plugin.STEP_OPS, images)
    except ValueError as error:  # the plugin's declaration
        raise UsageError(f"--plugin={config.plugin}: {error}") from None


def configure_for(setting: int, step_ops: str, images: int) -> int:
    """Resolves `setting` for a step of `step_ops` on `images`-example passes, here, and sets it.

    `configure` with this machine's GPUs counted; returns the count in use.
    A nonzero `setting` is explicit.
    """
    gpus = len(tf.config.list_physical_devices("GPU"))
    threads = resolve_intra_op_threads(setting, step_ops, images, gpus)
    return configure(threads, explicit=bool(setting))


def resolve_intra_op_threads(setting: int, step_ops: str, images: int, gpus: int) -> int:
    """The intra-op thread count for `--intra_op_threads=setting` (0: TensorFlow's default).

    `setting` 0 is `auto`: 1 for a learner of small ops (`step_ops`) on
    episodes of at most `SMALL_EPISODE_IMAGES` examples per pass on a
    machine without GPUs, else 0.
    """
    setting = int(setting)
    if setting < 0:
        raise UsageError(f"--intra_op_threads={setting}: must be 0 (auto) or a thread count")
    if step_ops not in STEP_OPS:
        raise ValueError(f"STEP_OPS must be one of {STEP_OPS}, got {step_ops!r}")
    if setting:
        return setting
    small = step_ops == "small" and images <= SMALL_EPISODE_IMAGES
    return 1 if small and not gpus else 0


def configure(threads: int, explicit: bool) -> int:
    """Sets TensorFlow's intra-op thread count (0: its default); returns the count in use.

    Before TensorFlow starts this always takes. Afterwards a count equal to
    the one in use is fine; another is kept as it is when it came from
    `auto` (`explicit` False) and refused with `UsageError` when the user
    asked for it.
    """
    current = tf.config.threading.get_intra_op_parallelism_threads()
    if threads == current:
        return current
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        if not explicit:
            return current
        raise UsageError(
            f"--intra_op_threads={threads}: TensorFlow has already started with "
            f"{current or 'its default'} intra-op threads; the count can only be set before "
            "any TensorFlow op runs (from Python: call "
            f"metasearch.threads.configure({threads}, True) first)"
        ) from None
    return threads
