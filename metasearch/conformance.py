"""The shared conformance checks every registered plugin and search space must pass.

Run by `tests/test_conformance.py` over every name in the registry, so a new
plugin or search space (built-in or third-party) is checked for free. A
plugin author can also call these from their own tests.

Each check works on a tiny episode (28x28 grey, 3-way 1-shot 2-query; for
learners that support regression also a 5-shot sine task, `tiny_task(kind=
"regression")`):
* `check_trains`: a few meta-training steps on one episode lower the loss.
* `check_runs`: one training step and one adaptation run (for sampled configs).
* `check_traces_with_variable_batch`: `embed` traced once with an unknown
  batch size serves several batch sizes.
* `check_compiles_with_xla`: the training and adaptation steps run with
  `jit_compile=True`.
* `check_export_round_trip`: the SavedModel reloads, in a fresh Python process
  that imports only TensorFlow, and gives the in-process logits (or
  regression predictions) and embeddings (max abs diff <= 1e-4).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from metasearch.api import REGRESSION, Episode, MetaLearner, SearchSpace, TaskSpec
from metasearch.data.preprocess import normalize
from metasearch.export import export_learner
from metasearch.training import MetaTrainer

TOLERANCE = 1e-4


def _normalization(task: TaskSpec) -> tuple[float, float]:
    # What the core uses: image statistics for images, none for regression inputs.
    return (0.0, 1.0) if task.is_regression else (0.5, 0.3)


def tiny_task(image_size: int = 28, channels: int = 1, kind: str = "classification") -> TaskSpec:
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
    plugin: type[MetaLearner],
    space: SearchSpace | type[SearchSpace],
    task: TaskSpec,
    plugin_config: dict | None = None,
    space_config: dict | None = None,
) -> MetaLearner:
    """A learner of `plugin` on a backbone of `space` (a class gets its `test_options`)."""
    keras.utils.set_random_seed(0)
    if isinstance(space, type):
        space = space(space.test_options())
    space_config = space_config or sample_configs(space, 1)[0]
    plugin_config = plugin_config or sample_configs(plugin, 1)[0]
    return plugin(space.build(space_config, task.image_shape), plugin_config, task)


def check_trains(learner: MetaLearner, task: TaskSpec, steps: int = 12) -> tuple[float, float]:
    episode = tiny_episode(task)
    trainer = MetaTrainer(learner, _normalization(task), 3e-3, steps, jit_compile=False)
    trainer.build(episode)
    first, _ = trainer.train_step(episode)
    for _ in range(steps - 1):
        last, _ = trainer.train_step(episode)
    first, last = float(first), float(last)
    assert np.isfinite(last), f"loss is {last}"
    if first < 1e-3:
        # Wide features under a squared distance can solve the tiny episode at
        # initialisation; then training must keep it solved.
        assert last < 1e-2, f"meta-training lost a solved episode: {first:.4f} -> {last:.4f}"
    else:
        assert last < first, f"meta-training loss did not decrease: {first:.4f} -> {last:.4f}"
    return first, last


def check_runs(learner: MetaLearner, task: TaskSpec) -> None:
    """One graph-mode training step is finite and adaptation gives outputs of the right shape.

    The light check for every sampled config; `check_compiles_with_xla` and
    `check_trains` cover the defaults.
    """
    episode = tiny_episode(task)
    trainer = MetaTrainer(learner, _normalization(task), 1e-3, 2, jit_compile=False)
    trainer.build(episode)
    loss, _ = trainer.train_step(episode)
    assert np.isfinite(float(loss)), f"loss is {float(loss)}"
    outputs = trainer.adapt_step(
        episode.support_images, episode.support_labels, episode.query_images, task.n_way
    )
    expected = (
        (task.n_query, task.target_dim)
        if task.is_regression
        else (task.n_way * task.n_query, task.n_way)
    )
    assert tuple(outputs.shape) == expected and np.all(np.isfinite(outputs.numpy()))


def check_traces_with_variable_batch(learner: MetaLearner, task: TaskSpec) -> None:
    spec = tf.TensorSpec([None, *task.image_shape], tf.float32)
    embed = tf.function(lambda images: learner.embed(images), input_signature=[spec])
    sizes = [1, 3, 7]
    outputs = [embed(tf.zeros([n, *task.image_shape])) for n in sizes]
    for n, output in zip(sizes, outputs):
        assert output.shape[0] == n and len(output.shape) == 2
    assert embed.experimental_get_tracing_count() == 1


def check_compiles_with_xla(learner: MetaLearner, task: TaskSpec) -> None:
    episode = tiny_episode(task)
    trainer = MetaTrainer(learner, _normalization(task), 1e-3, 4, jit_compile=True)
    trainer.build(episode)
    loss, _ = trainer.train_step(episode)
    assert np.isfinite(float(loss))
    logits = trainer.adapt_step(
        episode.support_images, episode.support_labels, episode.query_images, task.n_way
    )
    # eval_step is adapt_step plus a metric; compiling it again would only repeat this.
    if task.is_regression:
        assert logits.shape == (task.n_query, task.target_dim)
    else:
        assert logits.shape == (task.n_way * task.n_query, task.n_way)
    # Graph-mode and XLA adaptation agree.
    graph = MetaTrainer(learner, _normalization(task), 1e-3, 4, jit_compile=False).adapt_step(
        episode.support_images, episode.support_labels, episode.query_images, task.n_way
    )
    np.testing.assert_allclose(logits.numpy(), graph.numpy(), atol=1e-3, rtol=1e-3)


def check_export_round_trip(
    learner: MetaLearner, task: TaskSpec, directory: str | None = None, fresh_process: bool = True
) -> float:
    """Exports, reloads and compares; returns the largest difference of the main outputs.

    With `fresh_process` the SavedModel is run by a new Python process that
    imports TensorFlow only (and checks that neither metasearch nor keras-tuner
    got imported), as a user without metasearch would.
    """
    episode = tiny_episode(task, seed=1)
    normalization = _normalization(task)
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
    diff = float(np.max(np.abs(outputs - expected)))
    assert diff <= TOLERANCE, f"reloaded {names[3]} differ by {diff}"
    assert float(np.max(np.abs(embeddings - reference))) <= TOLERANCE
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
imported = sorted(m for m in ("metasearch", "keras_tuner") if m in sys.modules)
print(json.dumps({"imported": imported}))
"""


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
    assert result.returncode == 0, f"reloading in a fresh process failed:\n{result.stderr[-3000:]}"
    imported = json.loads(result.stdout.strip().splitlines()[-1])["imported"]
    assert not imported, f"loading the SavedModel imported {imported}"
    with np.load(data + ".out.npz") as stored:
        return stored["outputs"], stored["embeddings"]
