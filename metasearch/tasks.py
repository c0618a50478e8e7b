"""The task kinds: classification and regression, each owning what differs between them.

A `TaskKind` answers every question whose answer depends on the kind of task
a run learns, so the rest of the core asks it instead of branching:

* its objective (`val_accuracy`, maximised; `val_mse`, minimised), the
  per-episode metric and the meta-training loss;
* the shape of its episodes (a placeholder episode to build variables, the
  number of classes an evaluation episode has);
* the data it needs (class sets with image statistics, or a generated task
  family with an input shape) and the run settings that mean nothing to it;
* the exported learner's main signature and what the signatures take;
* the wording of the leaderboard and the progress display.

`kind_of(name)` returns the kind registered under `"classification"` or
`"regression"` (the strings `MetaLearner.TASK_KINDS` and `Dataset.kind` use).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any

import tensorflow as tf

from metasearch.api import (
    CLASSIFICATION,
    REGRESSION,
    ClassSplits,
    Dataset,
    Episode,
    TaskSpec,
    accuracy,
    classification_loss,
    regression_loss,
)
from metasearch.data import episodes
from metasearch.data.pipeline import EpisodeImages
from metasearch.errors import UsageError


@dataclasses.dataclass
class TaskData:
    """What a run's data set gave: the meta-training task, its data and its description.

    `splits` holds the class sets of a classification data set (None for a
    generated task family); `normalization` is the `(mean, std)` every input
    is normalised with; `info` is what `dataset.json` records; `images` holds
    each class set's images as the episode sampler draws them.
    """

    task: TaskSpec
    dataset: Dataset
    normalization: tuple[float, float]
    info: dict[str, Any]
    splits: ClassSplits | None = None
    images: dict[str, EpisodeImages] | None = None


class TaskKind(abc.ABC):
    """What a kind of few-shot task decides for the core (see the module docstring)."""

    name: str
    metric: str  # the per-episode task metric: "accuracy" or "mse"
    objective: str  # keras-tuner's objective: the metric on meta-validation episodes
    direction: str  # "max" or "min"
    main_signature: str  # the exported learner's adaptation signature
    # RunConfig fields that mean nothing for this kind: refused away from their defaults.
    unused_settings: tuple[str, ...] = ()

    def goodness(self, score: float) -> float:
        """`score` turned so that higher is better."""
        return score if self.direction == "max" else -score

    @abc.abstractmethod
    def loss(self, outputs: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """`(scalar loss, {metric: value})` of a learner's outputs on query labels."""

    @abc.abstractmethod
    def episode_metric(self, outputs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """The task metric of one episode's query predictions (a scalar)."""

    @abc.abstractmethod
    def placeholder_episode(self, task: TaskSpec) -> Episode:
        """A zero-filled episode of `task`'s shape, to create a learner's variables."""

    @abc.abstractmethod
    def classes_in(self, support_labels: tf.Tensor) -> int:
        """Classes an episode's support labels span (regression: 1), as a Python int."""

    @abc.abstractmethod
    def eval_classes(self, n_way: int) -> int:
        """Classes in an evaluation episode at `--n_way` (regression: 1)."""

    def test_ways(self, dataset, config, test_classes: int) -> tuple[int, ...]:
        """The ways the final learner is meta-tested at: `--n_way` (regression: that alone)."""
        return (config.n_way,)

    def test_episodes(self, data, config, n_way: int, seed: int, stream: int, count: int):
        """`count` meta-test episodes (of the test classes) at `n_way`."""
        return self.episodes(data, config, "test", seed, stream, count=count)

    @abc.abstractmethod
    def load(self, dataset: Dataset, config: Any) -> TaskData:
        """Loads `dataset` for a run of `config`; fails (UsageError) if it cannot serve it."""

    @abc.abstractmethod
    def episodes(
        self, data: TaskData, config: Any, split: str, seed: int, stream: int, count=None, start=0
    ) -> tf.data.Dataset | episodes.EvaluationEpisodes:
        """Episodes of one split: meta-training (augmented, `train_n_way`) or evaluation.

        `count` episodes (endless if None) from index `start` of the stream.
        An iterable of `Episode`s: a dataset, or for finite evaluation streams
        of image classes `episodes.EvaluationEpisodes` (which also knows the
        images' indices, for pooled evaluation).
        """

    @abc.abstractmethod
    def task_spec(self, config: Any, data: dict[str, Any]) -> TaskSpec:
        """The meta-training `TaskSpec` of a run from its config and `dataset.json`."""

    @abc.abstractmethod
    def signatures(self, generative: bool) -> dict[str, str]:
        """What each signature of the exported learner takes and returns, by name."""

    @abc.abstractmethod
    def format_score(self, value: float, ci95: float | None) -> str:
        """A trial's score for the leaderboard, with its 95% interval when known."""

    @abc.abstractmethod
    def leaderboard_title(self, config: dict[str, Any]) -> str:
        """The leaderboard's first line for a run of this kind."""

    column: str = ""  # the leaderboard's score column


class Classification(TaskKind):
    """N-way K-shot classification: accuracy, maximised."""

    name = CLASSIFICATION
    metric = "accuracy"
    objective = "val_accuracy"
    direction = "max"
    main_signature = "few_shot"
    column = "val accuracy"

    def loss(self, outputs, labels):
        return classification_loss(outputs, labels)

    def episode_metric(self, outputs, labels):
        return accuracy(outputs, labels)

    def placeholder_episode(self, task):
        labels = tf.range(task.n_way, dtype=tf.int32)
        shape = task.image_shape
        return Episode(
            support_images=tf.zeros([task.n_way * task.k_shot, *shape]),
            support_labels=tf.repeat(labels, task.k_shot),
            query_images=tf.zeros([task.n_way * task.n_query, *shape]),
            query_labels=tf.repeat(labels, task.n_query),
        )

    def classes_in(self, support_labels):
        return int(tf.reduce_max(support_labels)) + 1

    def eval_classes(self, n_way):
        return int(n_way)

    def test_ways(self, dataset, config, test_classes):
        # --n_way first, then the data set's standard ways the test classes can fill.
        extra = [w for w in dataset.TEST_WAYS if w != config.n_way and w <= test_classes]
        return (int(config.n_way), *sorted(extra))

    def test_episodes(self, data, config, n_way, seed, stream, count):
        return episodes.EvaluationEpisodes(
            data.images["test"], n_way, config.k_shot, config.n_query, seed, stream, count
        )

    def load(self, dataset, config):
        splits = dataset.load()
        check_episode_shapes(config, splits)
        channels = int(dataset.channels)
        budget = int(config.cache_memory) * 2**20
        images = {}
        # Evaluation sets are cached first: they are small and read most often per class.
        for split in ("val", "test", "train"):
            store = EpisodeImages(
                getattr(splits, split),
                config.image_size,
                channels,
                images_needed(config, split),
                budget,
            )
            budget -= store.cached_bytes
            images[split] = store
        normalization = images["train"].statistics()
        info = {
            "dataset": config.dataset,
            "channels": channels,
            "image_size": config.image_size,
            "normalization": list(normalization),
            "classes": {split: images[split].num_classes for split, _ in splits.items()},
            "images_per_class": {
                split: int(images[split].counts.min()) for split, _ in splits.items()
            },
            "class_sets": {split: images[split].info() for split, _ in splits.items()},
        }
        return TaskData(self.task_spec(config, info), dataset, normalization, info, splits, images)

    def episodes(self, data, config, split, seed, stream, count=None, start=0):
        training = split == "train"
        if not training and count is not None:
            # Finite evaluation streams know their images' indices (pooled evaluation).
            return episodes.EvaluationEpisodes(
                data.images[split],
                config.n_way,
                config.k_shot,
                config.n_query,
                seed,
                stream,
                count,
                start,
            )
        return episodes.episode_dataset(
            data.images[split],
            config.train_n_way if training else config.n_way,
            config.k_shot,
            config.n_query,
            seed,
            stream,
            count=count,
            start=start,
            augment=config.augment if training else "none",
            class_augment=config.class_augment if training else "none",
        )

    def task_spec(self, config, data):
        get = config.get if isinstance(config, dict) else lambda name: getattr(config, name)
        size = get("image_size")
        return TaskSpec(
            n_way=get("train_n_way"),
            k_shot=get("k_shot"),
            n_query=get("n_query"),
            image_shape=(size, size, int(data["channels"])),
        )

    def signatures(self, generative):
        signatures = {
            "few_shot": "few_shot(support_images [s,h,w,c] float32 in [0,1], support_labels [s] "
            "int32, query_images [q,h,w,c] float32 in [0,1]) -> {'logits': [q, num_classes]}",
            "embed": "embed(images [n,h,w,c] float32 in [0,1]) -> {'embeddings': [n, d]}",
        }
        if generative:
            signatures["sample"] = (
                "sample(images [k,h,w,c] float32 in [0,1], num_samples int32, seed [2] int32) -> "
                "{'images': [num_samples, image_size, image_size, c] in [0,1]}"
            )
        return signatures

    def format_score(self, value, ci95):
        text = f"{100 * value:6.2f}"
        return text + (f" ± {100 * ci95:5.2f}%" if ci95 is not None else "%")

    def leaderboard_title(self, config):
        return (
            f"Leaderboard: {config['plugin']} on {config['dataset']}, {config['n_way']}-way "
            f"{config['k_shot']}-shot meta-validation accuracy (mean ± 95% CI)"
        )


class Regression(TaskKind):
    """K-shot regression (e.g. `sinusoid`): mean squared error, minimised."""

    name = REGRESSION
    metric = "mse"
    objective = "val_mse"
    direction = "min"
    main_signature = "adapt_and_predict"
    column = "val MSE"
    unused_settings = (
        "n_way",
        "train_n_way",
        "train_n_ways",
        "train_n_queries",
        "augment",
        "class_augment",
        "class_augments",
        "image_size",
    )

    def loss(self, outputs, labels):
        return regression_loss(outputs, labels)

    def episode_metric(self, outputs, labels):
        return tf.reduce_mean(tf.square(outputs - labels))

    def placeholder_episode(self, task):
        shape = task.image_shape
        return Episode(
            support_images=tf.zeros([task.k_shot, *shape]),
            support_labels=tf.zeros([task.k_shot, task.target_dim]),
            query_images=tf.zeros([task.n_query, *shape]),
            query_labels=tf.zeros([task.n_query, task.target_dim]),
        )

    def classes_in(self, support_labels):
        return 1

    def eval_classes(self, n_way):
        return 1

    def load(self, dataset, config):
        dataset.load()
        info = {
            "dataset": config.dataset,
            "kind": REGRESSION,
            "input_shape": list(dataset.input_shape),
            "target_dim": int(dataset.target_dim),
            "channels": None,
            "normalization": [0.0, 1.0],
        }
        return TaskData(self.task_spec(config, info), dataset, (0.0, 1.0), info)

    def episodes(self, data, config, split, seed, stream, count=None, start=0):
        return data.dataset.episodes(
            split, config.k_shot, config.n_query, seed, stream, count=count, start=start
        )

    def task_spec(self, config, data):
        get = config.get if isinstance(config, dict) else lambda name: getattr(config, name)
        return TaskSpec(
            n_way=1,
            k_shot=get("k_shot"),
            n_query=get("n_query"),
            image_shape=tuple(data["input_shape"]),
            kind=REGRESSION,
            target_dim=int(data["target_dim"]),
        )

    def signatures(self, generative):
        return {
            "adapt_and_predict": "adapt_and_predict(support_x [s, *input_shape] float32, "
            "support_y [s, t] float32, query_x [q, *input_shape] float32) -> "
            "{'predictions': [q, t]}",
            "embed": "embed(x [n, *input_shape] float32) -> {'embeddings': [n, d]}",
        }

    def format_score(self, value, ci95):
        return f"{value:.4f} ± {ci95 if ci95 is not None else 0.0:.4f}"

    def leaderboard_title(self, config):
        return (
            f"Leaderboard: {config['plugin']} on {config['dataset']}, {config['k_shot']}-shot "
            "meta-validation mean squared error (mean ± 95% CI, lower is better)"
        )


def images_needed(config: Any, split: str) -> int:
    """Images a class needs to serve in the split's episodes: K + Q (the largest searched Q)."""
    queries = (
        config.n_query,
        *(config.train_n_queries if split == "train" else ()),
    )
    return config.k_shot + max(queries)


def check_episode_shapes(config: Any, splits: ClassSplits) -> None:
    """Fails if a class set cannot supply the requested episodes (before decoding anything).

    Classes with fewer than K + Q images are left out of episodes; what is
    left must still hold N classes.
    """
    searched_ways = config.train_n_ways
    for split, class_set in splits.items():
        needs = images_needed(config, split)
        needs_flags = (
            "--k_shot + --train_n_queries"
            if needs > config.k_shot + config.n_query
            else "--k_shot + --n_query"
        )
        n_way = config.train_n_way if split == "train" else config.n_way
        flag = (
            "--train_n_way"
            if split == "train" and config.train_n_way != config.n_way
            else "--n_way"
        )
        if split == "train" and searched_ways and max(searched_ways) > n_way:
            # Every searched way must be drawable: the largest decides.
            n_way, flag = max(searched_ways), "--train_n_ways"
        counts = class_set.counts
        if counts and max(counts) < needs:
            raise UsageError(
                f"{needs_flags} = {needs}: the meta-{split} classes of {config.dataset} "
                f"have only {max(counts)} images each at most"
                if min(counts) != max(counts)
                else f"{needs_flags} = {needs}: the meta-{split} classes of "
                f"{config.dataset} have only {max(counts)} images each"
            )
        usable = sum(1 for count in counts if count >= needs)
        if n_way > usable:
            left_out = len(counts) - usable
            detail = (
                f" with at least {needs} images ({left_out} of its {len(counts)} classes have "
                "fewer)"
                if left_out
                else ""
            )
            raise UsageError(
                f"{flag}={n_way}: the meta-{split} class set of {config.dataset} has only "
                f"{usable} classes{detail}"
            )


KINDS: dict[str, TaskKind] = {CLASSIFICATION: Classification(), REGRESSION: Regression()}
OBJECTIVES = {kind.objective: kind for kind in KINDS.values()}


def kind_of(name_or_task: str | TaskSpec) -> TaskKind:
    """The `TaskKind` named `"classification"`/`"regression"`, or that of a `TaskSpec`."""
    name = name_or_task.kind if isinstance(name_or_task, TaskSpec) else name_or_task
    return KINDS[name]


def kind_of_record(record: dict[str, Any]) -> TaskKind | None:
    """The kind whose objective a trial record holds a score for (None: unscored)."""
    for objective, kind in OBJECTIVES.items():
        value = record.get(objective)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return kind
    return None
