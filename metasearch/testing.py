"""The conformance kit: checks every plugin and search space passes, and pytest suites that run them.

A plugin or search space package (built-in or third-party) gets the whole
kit from one class in its test suite:

    from metasearch.testing import MetaLearnerConformance, SearchSpaceConformance

    class TestMyLearner(MetaLearnerConformance):
        plugin = MyLearner

    class TestMySpace(SearchSpaceConformance):
        search_space = MySpace

The base classes are not collected themselves (no `Test` prefix and
`__test__ = False`); a subclass is collected again automatically. Class
attributes tune a suite (see each class); a check that does not apply is
switched off by setting its method to None in the subclass (e.g.
`test_compiles_with_xla = None`). `tests/test_conformance.py` runs the same
suites over every registered name.

The checks are plain functions that work on a tiny episode (28x28 grey,
3-way 1-shot 2-query; for learners that support regression also a 5-shot
sine task, `tiny_task(kind="regression")`) and raise `ConformanceError`
(an `AssertionError`, so pytest reports it as a failure, with no bare
`assert` that `python -O` would drop) saying what failed and the numbers:
* `check_trains`: a few meta-training steps on one episode lower the loss.
* `check_runs`: one training step and one adaptation run (for sampled configs).
* `check_traces_with_variable_batch`: `embed` traced once with an unknown
  batch size serves several batch sizes.
* `check_compiles_with_xla`: the training and adaptation steps run with
  `jit_compile=True` and adapt as graph mode does.
* `check_pooled_evaluation`: learners that `EMBEDS_IMAGES_INDEPENDENTLY`
  score evaluation episodes from pooled embeddings as they do from images,
  in graph mode and under XLA.
* `check_export_round_trip`: the SavedModel reloads, in a fresh Python process
  that imports only TensorFlow, and gives the in-process logits (or
  regression predictions) and embeddings (max abs diff <= 1e-4), and its main
  signature refuses a NaN query with an `InvalidArgumentError` naming it.
* `check_genotype_round_trip`: a space's genotypes survive JSON and map back
  to the same configs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from metasearch import graphs, registry
from metasearch.api import (
    CLASSIFICATION,
    REGRESSION,
    Episode,
    MetaLearner,
    SearchSpace,
    TaskSpec,
)
from metasearch.data.preprocess import normalize
from metasearch.export import export_learner
from metasearch.precision import build_backbone
from metasearch.training import MetaTrainer

# Largest difference allowed between a reloaded SavedModel's outputs and the learner's.
TOLERANCE = 1e-4
# Absolute and relative tolerance between XLA and graph-mode adaptation.
XLA_TOLERANCE = 1e-3


class ConformanceError(AssertionError):
    """A conformance check failed; the message says which and gives the numbers."""


def task_normalization(task: TaskSpec) -> tuple[float, float]:
    """The `(mean, std)` the core normalises with: image statistics, none for regression."""
    return (0.0, 1.0) if task.is_regression else (0.5, 0.3)


def tiny_task(image_size: int = 28, channels: int = 1, kind: str = CLASSIFICATION) -> TaskSpec:
    """3-way 1-shot 2-query images, or (regression) a 5-shot 5-query task on 1-d inputs."""
    if kind == REGRESSION:
        return TaskSpec(n_way=1, k_shot=5, n_query=5, image_shape=(1,), kind=REGRESSION)
    return TaskSpec(n_way=3, k_shot=1, n_query=2, image_shape=(image_size, image_size, channels))


def tiny_episode(task: TaskSpec, seed: int = 0) -> Episode:
    """A learnable episode: each class is a distinct blob pattern plus noise
    (regression: points of one sine wave)."""
    rng = np.random.default_rng(seed)
    if task.is_regression:
        amplitude, phase = rng.uniform(1.0, 3.0), rng.uniform(0.0, np.pi)

        def points(count):
            x = rng.uniform(-5.0, 5.0, size=(count, *task.image_shape)).astype(np.float32)
            y = amplitude * np.sin(x.reshape(count, -1)[:, :1] - phase)
            return tf.constant(x), tf.constant(np.repeat(y, task.target_dim, 1), tf.float32)

        return Episode(*points(task.k_shot), *points(task.n_query))
    h, w, c = task.image_shape
    patterns = rng.uniform(0.0, 1.0, size=(task.n_way, h, w, c))

    def draw(count):
        labels = np.repeat(np.arange(task.n_way), count)
        images = patterns[labels] * 0.7 + rng.uniform(0.0, 0.3, size=(len(labels), h, w, c))
        return images.astype(np.float32), labels.astype(np.int32)

    support_images, support_labels = draw(task.k_shot)
    query_images, query_labels = draw(task.n_query)
    return Episode(
        tf.constant(support_images),
        tf.constant(support_labels),
        tf.constant(query_images),
        tf.constant(query_labels),
    )


def sample_configs(component, count: int, seed: int = 0) -> list[dict]:
    """Default values, then `count - 1` random samples of a component's space."""
    hp = keras_tuner.HyperParameters()
    configs = [component.sample_config(hp)]
    rng = np.random.default_rng(seed)
    for _ in range(count - 1):
        for parameter in hp.space:
            hp.values[parameter.name] = parameter.random_sample(int(rng.integers(1 << 30)))
        configs.append(component.sample_config(hp))
    return configs


def build_learner(
    plugin: type[MetaLearner] | str,
    space: SearchSpace | type[SearchSpace] | str,
    task: TaskSpec,
    plugin_config: Mapping[str, Any] | None = None,
    space_config: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    precision: str = "float32",
) -> MetaLearner:
    """A learner of `plugin` on a backbone of `space`, from seed 0.

    Either may be a registered name. A space class (or name) gets its
    `test_options`; missing configs are the defaults; `options` are the
    plugin's (None: its defaults); the backbone is built at `precision`
    (`metasearch.precision`).
    """
    keras.utils.set_random_seed(0)
    if isinstance(plugin, str):
        plugin = registry.load("plugin", plugin)
    if isinstance(space, str):
        space = registry.load("search_space", space)
    if isinstance(space, type):
        space = space(space.test_options())
    space_config = space_config or sample_configs(space, 1)[0]
    plugin_config = plugin_config or plugin.default_config()
    extra = {} if options is None else {"options": options}
    backbone = build_backbone(space, space_config, task.image_shape, precision)
    return plugin(backbone, plugin_config, task, **extra)


def _finite(name: str, value: float) -> None:
    if not np.isfinite(value):
        raise ConformanceError(f"{name} is {value}")


def _expected_outputs_shape(task: TaskSpec) -> tuple[int, int]:
    if task.is_regression:
        return (task.n_query, task.target_dim)
    return (task.n_way * task.n_query, task.n_way)


def check_trains(learner: MetaLearner, task: TaskSpec, steps: int = 12) -> tuple[float, float]:
    """`steps` meta-training steps on one episode lower its loss; returns the first and last."""
    episode = tiny_episode(task)
    trainer = MetaTrainer(learner, task_normalization(task), 3e-3, steps, jit_compile=False)
    trainer.build(episode)
    first, _ = trainer.train_step(episode)
    last = first
    for _ in range(steps - 1):
        last, _ = trainer.train_step(episode)
    first, last = float(first), float(last)
    _finite(f"the meta-training loss after {steps} steps", last)
    if first < 1e-3:
        # Wide features under a squared distance can solve the tiny episode at
        # initialisation; then training must keep it solved.
        if not last < 1e-2:
            raise ConformanceError(
                f"meta-training lost a solved episode in {steps} steps: "
                f"loss {first:.4f} -> {last:.4f} (must stay below 0.01)"
            )
    elif not last < first:
        raise ConformanceError(
            f"meta-training loss did not decrease in {steps} steps: {first:.4f} -> {last:.4f}"
        )
    return first, last


def _pipeline_images(task: TaskSpec, seed: int = 0, extra_classes: int = 1):
    """Uneven classes of flat colours plus noise, as `EpisodeImages` (see `pipeline_episode`)."""
    from metasearch.api import ClassSet
    from metasearch.data.pipeline import EpisodeImages

    rng = np.random.default_rng(seed)
    needs = task.k_shot + task.n_query
    arrays = [
        np.clip(
            rng.uniform(0.0, 1.0, size=(1, 1, 1, task.image_shape[-1]))
            + rng.normal(0.0, 0.1, size=(needs + c % 2, *task.image_shape)),
            0.0,
            1.0,
        ).astype(np.float32)
        for c in range(task.n_way + extra_classes)
    ]
    size, channels = task.image_shape[0], task.image_shape[-1]
    return EpisodeImages(
        ClassSet(arrays, [f"c{c}" for c in range(len(arrays))]), size, channels, needs, 0
    )


def pipeline_episode(task: TaskSpec, seed: int = 0) -> Episode:
    """An episode of `task`'s shape drawn by the core's episode pipeline (colour or grey).

    The classes are uneven (some with one image more than an episode needs),
    their images flat colours plus noise: what a data set of real images
    gives, through `metasearch.data.pipeline` and `episode_dataset`.
    """
    from metasearch.data.episodes import episode_dataset

    images = _pipeline_images(task, seed)
    stream = episode_dataset(images, task.n_way, task.k_shot, task.n_query, seed, 1, count=1)
    return next(iter(stream))


def check_runs(learner: MetaLearner, task: TaskSpec, episode: Episode | None = None) -> None:
    """One graph-mode training step is finite and adaptation gives outputs of the right shape.

    The light check for every sampled config (and, with an `episode` from
    `pipeline_episode`, on 84x84 colour episodes); `check_compiles_with_xla`
    and `check_trains` cover the defaults.
    """
    episode = tiny_episode(task) if episode is None else episode
    _train_step_and_adapt(learner, task, episode, jit_compile=False)


def _train_step_and_adapt(
    learner: MetaLearner, task: TaskSpec, episode: Episode, jit_compile: bool
) -> tf.Tensor:
    """One training step (finite loss) and an adaptation (outputs of the task's shape)."""
    mode = "XLA " if jit_compile else ""
    trainer = MetaTrainer(learner, task_normalization(task), 1e-3, 4, jit_compile=jit_compile)
    trainer.build(episode)
    loss, _ = trainer.train_step(episode)
    _finite(f"the {mode}meta-training loss", float(loss))
    outputs = trainer.adapt_step(
        episode.support_images, episode.support_labels, episode.query_images, task.n_way
    )
    expected = _expected_outputs_shape(task)
    if tuple(outputs.shape) != expected:
        raise ConformanceError(
            f"{mode}adaptation gave outputs of shape {tuple(outputs.shape)}; expected {expected}"
        )
    bad = int(np.sum(~np.isfinite(outputs.numpy())))
    if bad:
        raise ConformanceError(f"{mode}adaptation gave {bad} non-finite outputs of {outputs.shape}")
    return outputs


def check_traces_with_variable_batch(learner: MetaLearner, task: TaskSpec) -> None:
    """`embed`, traced once for an unknown batch size, serves batches of 1, 3 and 7."""
    spec = tf.TensorSpec([None, *task.image_shape], tf.float32)
    embed = graphs.function(lambda images: learner.embed(images), input_signature=[spec])
    sizes = [1, 3, 7]
    outputs = [embed(tf.zeros([n, *task.image_shape])) for n in sizes]
    for n, output in zip(sizes, outputs):
        if len(output.shape) != 2 or output.shape[0] != n:
            raise ConformanceError(
                f"embed gave shape {tuple(output.shape)} for a batch of {n}; expected ({n}, d)"
            )
    traces = embed.experimental_get_tracing_count()
    if traces != 1:
        raise ConformanceError(
            f"embed with an unknown batch size was traced {traces} times for batches {sizes}; "
            "expected once"
        )


def _max_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    if actual.shape != expected.shape:
        raise ConformanceError(f"shapes differ: {actual.shape} vs {expected.shape}")
    return float(np.max(np.abs(actual - expected))) if actual.size else 0.0


def check_compiles_with_xla(learner: MetaLearner, task: TaskSpec) -> None:
    """Training and adaptation compile with XLA, and XLA adapts as graph mode does."""
    episode = tiny_episode(task)
    normalization = task_normalization(task)
    # eval_step is adapt_step plus a metric; compiling it again would only repeat this.
    logits = _train_step_and_adapt(learner, task, episode, jit_compile=True)
    # Graph-mode and XLA adaptation agree.
    graph = MetaTrainer(learner, normalization, 1e-3, 4, jit_compile=False).adapt_step(
        episode.support_images, episode.support_labels, episode.query_images, task.n_way
    )
    xla, reference = logits.numpy(), graph.numpy()
    within = np.abs(xla - reference) <= XLA_TOLERANCE + XLA_TOLERANCE * np.abs(reference)
    if not np.all(within):
        raise ConformanceError(
            f"XLA and graph-mode adaptation differ by up to {_max_difference(xla, reference):.3g} "
            f"at {int(np.sum(~within))} of {within.size} outputs "
            f"(tolerance {XLA_TOLERANCE} absolute plus {XLA_TOLERANCE} relative)"
        )


def check_pooled_evaluation(learner: MetaLearner, task: TaskSpec, episodes: int = 6) -> None:
    """Pooled evaluation scores the episodes as evaluating them image by image does.

    For learners that declare `EMBEDS_IMAGES_INDEPENDENTLY`: each episode's
    logits from `adapt_embeddings` and `predict_embeddings` on the embeddings of
    all the episodes' distinct images, embedded in one batch, match
    `predict(adapt(support), query)` (within `XLA_TOLERANCE`), and
    `MetaTrainer.evaluate` gives the same per-episode metrics on
    `EvaluationEpisodes` (pooled) as on their dataset (image by image), in
    graph mode and under XLA.
    """
    from metasearch.data.episodes import EvaluationEpisodes

    if not learner.EMBEDS_IMAGES_INDEPENDENTLY:
        raise ConformanceError(f"{type(learner).__name__} does not embed images independently")
    stream = EvaluationEpisodes(
        _pipeline_images(task, extra_classes=3),
        task.n_way,
        task.k_shot,
        task.n_query,
        seed=0,
        stream=2,
        count=episodes,
    )
    normalization = task_normalization(task)
    trainer = MetaTrainer(learner, normalization, 1e-3, 4, jit_compile=False)
    episode = next(iter(stream))
    trainer.build(episode)
    trainer.train_step(episode)  # moves batch norm's statistics off their initial values
    # Logits from embeddings of all the episodes' distinct images in one batch (as
    # `evaluate` embeds them) against those of each episode's own images.
    support_rows, query_rows = stream.indices()
    distinct, rows = np.unique(np.concatenate([support_rows, query_rows], 1), return_inverse=True)
    rows = rows.reshape(episodes, -1)
    pool = learner.embed(normalize(stream.pool.images(tf.constant(distinct)), *normalization))
    width = support_rows.shape[1]
    for index, episode in enumerate(stream):
        support = normalize(episode.support_images, *normalization)
        query = normalize(episode.query_images, *normalization)
        direct = learner.predict(learner.adapt(support, episode.support_labels, task.n_way), query)
        state = learner.adapt_embeddings(
            tf.gather(pool, rows[index, :width]), episode.support_labels, task.n_way
        )
        pooled = learner.predict_embeddings(state, tf.gather(pool, rows[index, width:]))
        direct, pooled = direct.numpy(), pooled.numpy()
        within = np.abs(pooled - direct) <= XLA_TOLERANCE + XLA_TOLERANCE * np.abs(direct)
        if not np.all(within):
            raise ConformanceError(
                f"episode {index}: logits from pooled embeddings (adapt_embeddings, "
                "predict_embeddings) and from its images (adapt, predict) differ by up to "
                f"{_max_difference(pooled, direct):.3g} at {int(np.sum(~within))} of "
                f"{within.size} outputs"
            )
    expected = trainer.evaluate(stream.dataset, task.n_way)
    for jit_compile in (False, True):
        mode = "XLA " if jit_compile else ""
        evaluator = MetaTrainer(learner, normalization, 1e-3, 4, jit_compile=jit_compile)
        actual = evaluator.evaluate(stream, task.n_way)
        # Two logits within rounding of each other may swap: one query per episode at most.
        one_query = 1.0 / (task.n_way * task.n_query) + 1e-6
        if actual.shape != expected.shape or not np.allclose(actual, expected, atol=one_query):
            raise ConformanceError(
                f"{mode}pooled evaluation scored the episodes {np.round(actual, 4).tolist()}; "
                f"image by image: {np.round(expected, 4).tolist()}"
            )


def check_export_round_trip(
    learner: MetaLearner, task: TaskSpec, directory: str | None = None, fresh_process: bool = True
) -> float:
    """Exports, reloads and compares; returns the largest difference of the main outputs.

    With `fresh_process` the SavedModel is run by a new Python process that
    imports TensorFlow only (and checks that neither metasearch nor keras-tuner
    got imported), as a user without metasearch would.
    """
    episode = tiny_episode(task, seed=1)
    normalization = task_normalization(task)
    trainer = MetaTrainer(learner, normalization, 1e-3, 2, jit_compile=False)
    trainer.build(episode)
    trainer.train_step(episode)
    expected = trainer.adapt_step(
        episode.support_images, episode.support_labels, episode.query_images, task.n_way
    ).numpy()
    reference = learner.embed(normalize(episode.query_images, *normalization)).numpy()
    signature, names = (
        ("adapt_and_predict", ("support_x", "support_y", "query_x", "predictions"))
        if task.is_regression
        else ("few_shot", ("support_images", "support_labels", "query_images", "logits"))
    )
    inputs = dict(
        zip(names[:3], (episode.support_images, episode.support_labels, episode.query_images))
    )
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = export_learner(
            learner,
            os.path.join(tmp, "learner"),
            image_size=task.image_shape[0],
            channels=task.image_shape[-1],
            normalization=normalization,
            metadata={"check": "conformance"},
        )
        if fresh_process:
            outputs, embeddings = run_in_fresh_process(
                path, signature, names[3], {k: v.numpy() for k, v in inputs.items()}, tmp
            )
        else:
            loaded = tf.saved_model.load(path)
            outputs = loaded.signatures[signature](**inputs)[names[3]].numpy()
            embeddings = loaded.embed(episode.query_images)["embeddings"].numpy()
            try:
                loaded.signatures[signature](**{**inputs, names[2]: inputs[names[2]] * np.nan})
                refused = ""
            except tf.errors.InvalidArgumentError as error:
                refused = str(error)
            check_refuses_bad_input(f"{names[2]}: {refused}", "in process")
    where = "in a fresh TensorFlow-only process" if fresh_process else "in process"
    diff = _max_difference(outputs, expected)
    if not diff <= TOLERANCE:
        raise ConformanceError(
            f"the SavedModel's {signature} {names[3]}, reloaded {where}, differ from the "
            f"learner's by {diff:.3g} (tolerance {TOLERANCE})"
        )
    embed_diff = _max_difference(embeddings, reference)
    if not embed_diff <= TOLERANCE:
        raise ConformanceError(
            f"the SavedModel's embed, reloaded {where}, differs from the learner's by "
            f"{embed_diff:.3g} (tolerance {TOLERANCE})"
        )
    return diff


_FRESH_PROCESS_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
path, signature, output, data = sys.argv[1:5]
inputs = dict(np.load(data))
loaded = tf.saved_model.load(path)
result = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
query = inputs["query_x" if "query_x" in inputs else "query_images"]
embeddings = loaded.embed(tf.constant(query))["embeddings"]
np.savez(data + ".out.npz", outputs=result[output].numpy(), embeddings=embeddings.numpy())
# The signature checks its inputs: a NaN query must be refused, naming the input.
name = "query_x" if "query_x" in inputs else "query_images"
bad = {k: tf.constant(v * np.nan if k == name else v) for k, v in inputs.items()}
try:
    loaded.signatures[signature](**bad)
    refused = ""
except tf.errors.InvalidArgumentError as error:
    refused = str(error)
imported = sorted(m for m in ("metasearch", "keras_tuner") if m in sys.modules)
print(json.dumps({"imported": imported, "refused": f"{name}: {refused}"[:3000]}))
"""


def check_refuses_bad_input(refused: str, where: str) -> None:
    """`refused` (`NAME: error message`) must name the bad input; else ConformanceError."""
    name, _, message = refused.partition(": ")
    if name not in message or "non-finite" not in message:
        raise ConformanceError(
            f"the SavedModel's main signature, reloaded {where}, did not refuse a NaN {name} "
            f"with an InvalidArgumentError naming it (got: {message[:300] or 'no error'})"
        )


def run_in_fresh_process(
    path: str, signature: str, output: str, inputs: dict[str, np.ndarray], directory: str
) -> tuple[np.ndarray, np.ndarray]:
    """Runs `signature` and `embed` of the SavedModel at `path` in a TensorFlow-only process."""
    data = os.path.join(directory, "inputs.npz")
    np.savez(data, **inputs)
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS_SCRIPT, path, signature, output, data],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        cwd=directory,
    )
    if result.returncode != 0:
        raise ConformanceError(
            f"reloading the SavedModel in a fresh process failed (exit status "
            f"{result.returncode}):\n{result.stderr[-3000:]}"
        )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if report["imported"]:
        raise ConformanceError(f"loading the SavedModel imported {', '.join(report['imported'])}")
    check_refuses_bad_input(report["refused"], "in a fresh TensorFlow-only process")
    with np.load(data + ".out.npz") as stored:
        return stored["outputs"], stored["embeddings"]


def check_genotype_round_trip(space: SearchSpace, configs: Iterable[Mapping[str, Any]]) -> None:
    """Each config's genotype survives JSON and `config_from_genotype` gives the config back."""
    for index, config in enumerate(configs):
        text = json.dumps(space.genotype(config))
        back = space.config_from_genotype(json.loads(text))
        if back != config:
            changed = sorted(k for k in set(config) | set(back) if config.get(k) != back.get(k))
            raise ConformanceError(
                f"config {index}: config_from_genotype(genotype(config)) differs in {changed}"
            )
        again = json.dumps(space.genotype(back))
        if again != text:
            raise ConformanceError(f"config {index}: the genotype changed in a round trip")


# --- pytest suites ------------------------------------------------------------------


def _skip(reason: str) -> None:
    import pytest  # only the suites need pytest, and only when they run

    pytest.skip(reason)


class _Suite:
    """Not collected itself; every subclass is, unless it sets `__test__` itself."""

    __test__ = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__test__" not in cls.__dict__:
            cls.__test__ = True


class MetaLearnerConformance(_Suite):
    """The conformance suite of a meta-learner: `class TestMine(MetaLearnerConformance): plugin = Mine`.

    Class attributes:
    * `plugin`: the `MetaLearner` class (or its registered name).
    * `options`: its `OPTIONS` values (None: the defaults).
    * `config`: the config of the default checks (None: `default_config()`).
    * `task_kinds`: the task kinds to check (None: the plugin's `TASK_KINDS`).
    * `search_space`, `space_config`: the backbone of the classification
      checks (a class or registered name, and its config, None for the
      defaults); one small conv block by default. Set them together.
    * `sampled_space_config`: the backbone of the sampled-config check.
    * `regression_space`, `regression_space_config`: the backbone of the
      regression check (the MLP by default).
    * `sampled_configs`: how many random configs `test_sampled_configs_run` tries.
    * `train_steps`: the meta-training steps of `test_trains`.
    * `fresh_process`: whether the export is reloaded in a TensorFlow-only
      process (the regression export reloads in process when classification
      is checked too: the same loader, a TensorFlow start saved).
    """

    __test__ = False
    plugin: type[MetaLearner] | str | None = None
    options: Mapping[str, Any] | None = None
    config: Mapping[str, Any] | None = None
    task_kinds: tuple[str, ...] | None = None
    search_space: type[SearchSpace] | str = "conv_blocks"
    # One conv-BN-ReLU-pool block keeps XLA compiles short; plugins are what vary here.
    space_config: Mapping[str, Any] | None = {
        "depth": 1,
        "filters": 16,
        "growth": 1.0,
        "conv_bias": False,
    }
    sampled_space_config: Mapping[str, Any] | None = {
        "depth": 1,
        "filters": 8,
        "growth": 1.0,
        "conv_bias": False,
    }
    regression_space: type[SearchSpace] | str = "mlp"
    regression_space_config: Mapping[str, Any] | None = None
    sampled_configs = 1
    train_steps = 12
    fresh_process = True

    # --- helpers -----------------------------------------------------------

    def plugin_class(self) -> type[MetaLearner]:
        if self.plugin is None:
            raise ConformanceError(
                f"{type(self).__name__}: set `plugin` to the MetaLearner class to check"
            )
        if isinstance(self.plugin, str):
            return registry.load("plugin", self.plugin)
        return self.plugin

    def kinds(self) -> tuple[str, ...]:
        if self.task_kinds is not None:
            return tuple(self.task_kinds)
        return tuple(self.plugin_class().TASK_KINDS)

    def require(self, kind: str) -> None:
        """Skips the test unless the plugin is checked on `kind` tasks."""
        if kind not in self.kinds():
            _skip(f"{self.plugin_class().__name__} is not checked on {kind} tasks")

    def learner(
        self, kind: str = CLASSIFICATION, config=None, space_config=None
    ) -> tuple[MetaLearner, TaskSpec]:
        """A learner and its tiny task: the suite's config and backbone unless given."""
        task = tiny_task(kind=kind)
        if kind == REGRESSION:
            space, space_config = self.regression_space, self.regression_space_config
        else:
            space, space_config = self.search_space, space_config or self.space_config
        learner = build_learner(
            self.plugin_class(),
            space,
            task,
            config or self.config,
            space_config,
            self.options,
        )
        return learner, task

    # --- the checks --------------------------------------------------------------

    def test_trains(self):
        self.require(CLASSIFICATION)
        check_trains(*self.learner(), steps=self.train_steps)

    def test_traces_with_variable_batch(self):
        self.require(CLASSIFICATION)
        check_traces_with_variable_batch(*self.learner())

    def test_compiles_with_xla(self):
        self.require(CLASSIFICATION)
        check_compiles_with_xla(*self.learner())

    def test_pooled_evaluation(self):
        self.require(CLASSIFICATION)
        if not self.plugin_class().EMBEDS_IMAGES_INDEPENDENTLY:
            _skip(f"{self.plugin_class().__name__} does not embed images independently")
        check_pooled_evaluation(*self.learner())

    def test_export_round_trip(self, tmp_path):
        self.require(CLASSIFICATION)
        learner, task = self.learner()
        check_export_round_trip(learner, task, str(tmp_path), fresh_process=self.fresh_process)

    def test_sampled_configs_run(self):
        # Index 0 holds the defaults, which the other checks cover (XLA included);
        # random configs get the light check, in graph mode, to keep the suite short.
        self.require(CLASSIFICATION)
        plugin = self.plugin_class()
        for config in sample_configs(plugin, 1 + self.sampled_configs, seed=1)[1:]:
            check_runs(*self.learner(config=config, space_config=self.sampled_space_config))

    def test_colour_episodes(self):
        """One training step and an adaptation on 84x84 colour episodes from the pipeline."""
        self.require(CLASSIFICATION)
        task = tiny_task(image_size=84, channels=3)
        learner = build_learner(
            self.plugin_class(),
            self.search_space,
            task,
            self.config,
            self.sampled_space_config,
            self.options,
        )
        check_runs(learner, task, pipeline_episode(task))

    def test_regression(self, tmp_path):
        """Trains, traces, compiles with XLA and exports on a sine task: one learner for all."""
        self.require(REGRESSION)
        learner, task = self.learner(REGRESSION)
        check_trains(learner, task, steps=self.train_steps)
        check_traces_with_variable_batch(learner, task)
        check_compiles_with_xla(learner, task)
        fresh = self.fresh_process and CLASSIFICATION not in self.kinds()
        check_export_round_trip(learner, task, str(tmp_path), fresh_process=fresh)


class SearchSpaceConformance(_Suite):
    """The conformance suite of a search space: `class TestMine(SearchSpaceConformance): search_space = Mine`.

    Class attributes:
    * `search_space`: the `SearchSpace` class (or its registered name).
    * `options`: its options (None: its `test_options()`).
    * `plugin`: the learner on top (a class or registered name; ProtoNet).
    * `input_settings`: `(image_size, channels)` pairs every sample must
      serve; `test_sample_builds_trains_traces_compiles_exports` runs once
      per pair, on a random sample (not only the defaults), reloading the
      export in a TensorFlow-only process for the first pair (with
      `fresh_process`) and in process for the others.
    * `train_steps`: the meta-training steps of that test.
    * `genotype_samples`: configs whose genotypes must round-trip through JSON.
    """

    __test__ = False
    search_space: type[SearchSpace] | str | None = None
    options: Mapping[str, Any] | None = None
    plugin: type[MetaLearner] | str = "protonet"
    input_settings: tuple[tuple[int, int], ...] = ((28, 1), (84, 3))
    train_steps = 3
    genotype_samples = 200
    fresh_process = True

    def pytest_generate_tests(self, metafunc):
        """Parametrises the tests that take `image_size` and `channels` over `input_settings`."""
        if {"image_size", "channels"} <= set(metafunc.fixturenames):
            settings = [tuple(setting) for setting in metafunc.cls.input_settings]
            metafunc.parametrize(("image_size", "channels"), settings)

    def space(self) -> SearchSpace:
        if self.search_space is None:
            raise ConformanceError(
                f"{type(self).__name__}: set `search_space` to the SearchSpace class to check"
            )
        space_class = self.search_space
        if isinstance(space_class, str):
            space_class = registry.load("search_space", space_class)
        options = space_class.test_options() if self.options is None else self.options
        return space_class(options)

    def test_sample_builds_trains_traces_compiles_exports(self, image_size, channels, tmp_path):
        space = self.space()
        # A random sample (index 1; index 0 is the defaults), not only the defaults.
        config = sample_configs(space, 2, seed=image_size)[1]
        task = tiny_task(image_size, channels)
        learner = build_learner(self.plugin, space, task, space_config=config)
        check_traces_with_variable_batch(learner, task)
        check_trains(learner, task, steps=self.train_steps)
        check_compiles_with_xla(learner, task)
        # The TensorFlow-only process reloads the first setting; the others reload
        # in process, which checks the same graph and saves a TensorFlow start.
        first = (image_size, channels) == tuple(self.input_settings[0])
        check_export_round_trip(
            learner, task, str(tmp_path), fresh_process=self.fresh_process and first
        )

    def test_genotype_json_round_trips(self):
        space = self.space()
        configs = sample_configs(space, self.genotype_samples, seed=3)
        if space.genotype(configs[0]) is None:
            _skip(f"{type(space).__name__} has no genotype")
        check_genotype_round_trip(space, configs)
