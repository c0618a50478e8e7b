"""The measured latency of a trained learner: adapting to one new task and predicting it.

`measure(learner, ...)` builds the exported learner's module
(`metasearch.export.FewShotModule`) around the learner in memory, so the
timed graph is exactly what the SavedModel's main signature runs (`few_shot`:
in-graph resizing and normalisation, adaptation, prediction; regression
learners: `adapt_and_predict`). It warms the function up (tracing and a first
call) and returns the median of a few calls in milliseconds.

The task is fixed so that trials compare: 5-way 1-shot with one query per
class (5 support and 5 query images at the run's image size; fewer classes
when the learner was meta-trained on fewer), or for regression 5 support and
5 query points. Latency does not depend on pixel values, so the inputs are
fixed random numbers.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from metasearch.api import REGRESSION, MetaLearner

WAYS = 5
SHOTS = 1
QUERIES_PER_CLASS = 1
REPEATS = 5


def task_description(learner: MetaLearner) -> str:
    """The timed task in words, e.g. `5-way 1-shot, 1 query per class`."""
    task = learner.task
    if task.kind == REGRESSION:
        return f"{WAYS} support and {WAYS} query points"
    ways = min(WAYS, int(task.n_way))
    return f"{ways}-way {SHOTS}-shot, {QUERIES_PER_CLASS} query per class"


def _inputs(learner: MetaLearner, image_size: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    task = learner.task
    rng = np.random.default_rng(0)
    if task.kind == REGRESSION:
        shape = tuple(task.image_shape)
        support = rng.uniform(-1.0, 1.0, (WAYS, *shape)).astype(np.float32)
        targets = rng.normal(size=(WAYS, int(task.target_dim))).astype(np.float32)
        query = rng.uniform(-1.0, 1.0, (WAYS, *shape)).astype(np.float32)
        return tf.constant(support), tf.constant(targets), tf.constant(query)
    ways = min(WAYS, int(task.n_way))
    channels = int(task.image_shape[-1])
    shape = (image_size, image_size, channels)
    support = rng.uniform(size=(ways * SHOTS, *shape)).astype(np.float32)
    labels = np.repeat(np.arange(ways), SHOTS).astype(np.int32)
    query = rng.uniform(size=(ways * QUERIES_PER_CLASS, *shape)).astype(np.float32)
    return tf.constant(support), tf.constant(labels), tf.constant(query)


def measure(
    learner: MetaLearner,
    image_size: int,
    normalization: tuple[float, float],
    repeats: int = REPEATS,
) -> float:
    """Median milliseconds of the exported main signature on the fixed task (after warm-up)."""
    from metasearch.export import FewShotModule

    channels = int(learner.task.image_shape[-1])
    with tempfile.TemporaryDirectory() as scratch:
        # The module reads its metadata file once; nothing is exported here.
        metadata = os.path.join(scratch, "metasearch.json")
        with open(metadata, "w", encoding="utf-8") as handle:
            handle.write("{}")
        module = FewShotModule(learner, image_size, channels, normalization, metadata)
    signature = getattr(module, module.main_signature)
    inputs = _inputs(learner, image_size)

    def call() -> None:
        outputs = signature(*inputs)
        for value in outputs.values():
            value.numpy()  # waits for the device

    call()  # traces and runs once
    call()
    times = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(1000.0 * np.median(times))
