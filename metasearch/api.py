"""The contracts plugins, search spaces and data sets implement.

Three abstract base classes, each registered through an entry-point group
(see `metasearch.registry`):

* `MetaLearner` (`metasearch.plugins`): how a few-shot learner adapts to a
  support set and predicts for a query set, and what it optimises when
  meta-training.
* `SearchSpace` (`metasearch.search_spaces`): a family of backbones mapping
  images to feature vectors.
* `Dataset` (`metasearch.datasets`): where classes of images come from and how
  they split into meta-train, meta-validation and meta-test class sets.

The core owns everything around them: flags, `tf.function` and XLA boundaries,
optimisers, episodes, trial bookkeeping and export. Plugin code is pure tensor
code: it must not call `tf.function`, read flags, or touch files.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from metasearch import options as options_lib
from metasearch import registry
from metasearch.options import Option

Config = Mapping[str, Any]


CLASSIFICATION = "classification"
REGRESSION = "regression"
TASK_KINDS = (CLASSIFICATION, REGRESSION)


class Episode(NamedTuple):
    """One few-shot task: a support set to adapt on and a query set to predict.

    Classification (N-way K-shot Q-query): images are float32
    `[n, height, width, channels]`, already resized and normalised by the
    core; labels are int32 in `0..N-1`; the support set holds K images of each
    of the N classes and the query set Q of each, in no particular order.

    Regression (K-shot, e.g. `sinusoid`): the "images" are float32 inputs
    `[n, *input_shape]` and the "labels" float32 targets `[n, target_dim]`;
    the support set holds K points and the query set Q.
    """

    support_images: tf.Tensor
    support_labels: tf.Tensor
    query_images: tf.Tensor
    query_labels: tf.Tensor


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """The shape of the episodes a learner is meta-trained on.

    `image_shape` is `(height, width, channels)` of the images the learner
    receives (for regression: the input shape, e.g. `(1,)`). Evaluation and
    exported models may use other N and K. `kind` is `"classification"` or
    `"regression"`; regression tasks have `n_way == 1` and `target_dim`
    outputs per point.
    """

    n_way: int
    k_shot: int
    n_query: int
    image_shape: tuple[int, ...]
    kind: str = CLASSIFICATION
    target_dim: int = 1

    @property
    def is_regression(self) -> bool:
        return self.kind == REGRESSION


@dataclasses.dataclass(frozen=True)
class CellGraph:
    """A cell as a small DAG, for pictures and descriptions.

    `inputs` are the cell's input states (e.g. `("h[i-2]", "h[i-1]")`),
    `nodes` its intermediate states in order, `output` the output state.
    Each edge `(source, target, operation)` applies `operation` to `source`
    and feeds the result to `target`; a target sums (or, for `output`,
    concatenates) what its edges bring. Use operation `"concat"` or `"sum"`
    for plain data flow into `output`.
    """

    name: str
    inputs: tuple[str, ...]
    nodes: tuple[str, ...]
    output: str
    edges: tuple[tuple[str, str, str], ...]
    # For cells that are grids (a fabric's layers x scales): each state's
    # (column, row). None lays states out in columns by depth.
    grid: Mapping[str, tuple[int, int]] | None = None


class SearchSpace(abc.ABC):
    """A family of backbones: images `[batch, h, w, c]` to features `[batch, d]`.

    A search space is instantiated with its options (`SearchSpace(options)`),
    settings that shape the space itself rather than being searched (e.g.
    NASNet's number of blocks per cell). `OPTIONS` declares every option
    (`metasearch.options.Option`: name, type, default, help); the CLI makes
    each one the flag `--<space>_<option>`. Instances get `self.options`, the
    complete checked values; unknown names or bad values raise `ValueError`.

    Contract:
    * `sample_config(hp)` declares the architecture's hyperparameters on the
      keras-tuner `HyperParameters` object and returns the sampled values as a
      JSON-serialisable dict. Called once at search start (to declare the
      space) and once per trial with that trial's values; it must be
      deterministic given `hp`'s values and declare the same hyperparameters
      every time (no conditional scopes). Names are prefixed with the search
      space's name to stay unique. Genotype spaces declare one `Choice` per
      token (an input or an operation), in the order a controller would emit
      them: search strategies mutate and generate architectures through these
      hyperparameters alone.
    * `build(config, input_shape)` returns a `keras.Model` whose call
      `(images, training=...)` maps normalised images of `input_shape` to a
      float32 `[batch, d]` feature matrix. The model must be traceable under
      `tf.function` with a variable batch size and compilable with XLA
      (`jit_compile=True`).
    * `describe(config)` returns a short human-readable architecture string
      for leaderboards, e.g. `"conv4-64"`.
    * Optional, for spaces with cells: `genotype(config)` returns the
      architecture as plain JSON (what `config_from_genotype` turns back into
      the identical config); `cells(config, backbone)` returns the trained
      cell sub-models of a built backbone by name, each a `keras.Model`
      callable on its input tensor(s); `cell_graphs(config)` describes each
      cell for pictures.
    * Optional, for spaces with a tabular benchmark: `table_key(config)` is
      the architecture's key in the table's `TABLE_KEY_COLUMN`.
    """

    OPTIONS: tuple[Option, ...] = ()
    TABLE_KEY_COLUMN: str | None = None

    def __init__(self, options: Mapping[str, Any] | None = None):
        self.options = options_lib.resolve(
            self.OPTIONS,
            options,
            type(self).__name__,
            error=ValueError,
            flag_prefix=registry.registered_name("search_space", type(self)),
        )

    @classmethod
    def test_options(cls) -> dict[str, Any]:
        """Options giving the smallest useful instance, for fast conformance tests."""
        return {}

    @abc.abstractmethod
    def sample_config(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """Declares hyperparameters on `hp` and returns the sampled architecture."""

    @abc.abstractmethod
    def build(self, config: Config, input_shape: tuple[int, int, int]) -> keras.Model:
        """Returns the backbone for `config` on inputs of `input_shape`."""

    def describe(self, config: Config) -> str:
        """Short architecture string for leaderboards."""
        return ",".join(f"{k}={v}" for k, v in sorted(config.items()))

    def genotype(self, config: Config) -> dict[str, Any] | None:
        """The architecture as plain JSON, or None for spaces without a genotype."""
        return None

    def config_from_genotype(self, genotype: Mapping[str, Any]) -> dict[str, Any]:
        """The config whose `genotype` is `genotype` (its exact inverse)."""
        raise NotImplementedError(f"{type(self).__name__} has no genotype")

    def cells(self, config: Config, backbone: keras.Model) -> dict[str, keras.Model]:
        """The trained cells inside `backbone` by name; empty for spaces without cells."""
        return {}

    def cell_graphs(self, config: Config) -> list[CellGraph]:
        """One graph per cell type, for pictures; empty for spaces without cells."""
        return []

    def table_key(self, config: Config) -> str:
        """The architecture's key in a tabular benchmark (see `TABLE_KEY_COLUMN`)."""
        raise NotImplementedError(f"{type(self).__name__} has no tabular benchmark")


class MetaLearner(keras.layers.Layer, abc.ABC):
    """A few-shot learner built around a backbone from a search space.

    Constructed as `Plugin(backbone, config, task)` where `config` is what
    `sample_config` returned for the trial and `task` the meta-training
    `TaskSpec`. Subclasses create their own layers in `__init__`; the core
    builds variables by calling `adapt` and `predict` once before training.
    `self.config` is `config` completed with `default_config()` (the defaults
    `sample_config` declares), so a default is written once, in
    `sample_config`, and `__init__` reads `self.config["name"]`.

    Contract for every method below:
    * Images are float32 `[n, h, w, c]`, resized and normalised by the core;
      labels are int32 `[n]` in `0..num_classes-1`.
    * Bodies are pure tensor code (TensorFlow or `keras.ops`): no
      `tf.function`, no Python side effects that depend on tensor values, and
      nothing XLA cannot compile when `num_classes` is a Python int. The core
      traces them inside its own `tf.function`s, with and without XLA, and
      without AutoGraph (`metasearch.graphs`): control flow on tensor values
      is `tf.cond`/`tf.while_loop`/`keras.ops`; a Python `if` or `for` sees
      Python values only (a Python `if` on a tensor fails when traced).
    * `num_classes` is a Python int during meta-training and evaluation and a
      scalar int32 tensor inside exported SavedModels; handle both.
    * `TASK_KINDS` lists the task kinds the learner supports. For regression
      (`task.is_regression`) labels are float32 targets `[n, target_dim]`,
      `num_classes` is 1 and `predict` returns predictions `[q, target_dim]`;
      metrics hold `mse` instead of `accuracy`.
    * Gradient-based learners run their inner loops with
      `metasearch.inner_loop` (explicit parameter lists, compiled by the core);
      the MAML family's base is `metasearch.gradient_learner.GradientMetaLearner`
      and its update rules are in `metasearch.inner_optimizers`.
    """

    TASK_KINDS: tuple[str, ...] = (CLASSIFICATION,)
    # Settings that are not searched (`metasearch.options.Option`s); each becomes
    # the flag `--<plugin>_<option>`. The resolved values reach the learner as
    # `self.options`.
    OPTIONS: tuple[Option, ...] = ()
    # Generative learners (e.g. the Neural Statistician) implement `generate`;
    # their exports get a `sample` signature and `metasearch sample` works.
    GENERATIVE: bool = False
    # Learners whose `adapt` and `predict` (not training) see each image only
    # through `embed`, one image at a time, set this and implement
    # `adapt_embeddings` and `predict_embeddings`. Evaluation then embeds each
    # distinct image of its episodes once and scores every episode from those
    # embeddings (the conformance suite checks that the two give the same).
    EMBEDS_IMAGES_INDEPENDENTLY: bool = False
    # What a meta-training step is made of, for the core's CPU threading
    # (`metasearch.threads`): "small" ops in long chains with independent branches
    # (an inner loop of gradient steps on a few support images; on small episodes the
    # core then runs each op on one thread and ops side by side), or "large" ops
    # (embedding whole episodes; each op is split across the cores). Only speed depends
    # on it.
    STEP_OPS: str = "large"

    @classmethod
    @abc.abstractmethod
    def sample_config(cls, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """Declares the learner's searchable hyperparameters; returns sampled values.

        Same rules as `SearchSpace.sample_config`: JSON-serialisable, names
        prefixed with the plugin's name, deterministic given `hp`'s values.
        """

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        """The declared defaults: what `sample_config` returns on fresh `HyperParameters`."""
        return cls.sample_config(keras_tuner.HyperParameters())

    def __init__(
        self,
        backbone: keras.layers.Layer,
        config: Config,
        task: TaskSpec,
        options: Mapping[str, Any] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.config = {**self.default_config(), **config}
        self.task = task
        self.options = options_lib.resolve(
            self.OPTIONS,
            options,
            type(self).__name__,
            flag_prefix=registry.registered_name("plugin", type(self)),
        )

    @abc.abstractmethod
    def adapt(
        self,
        support_images: tf.Tensor,
        support_labels: tf.Tensor,
        num_classes: int | tf.Tensor,
        training: bool = False,
    ) -> Any:
        """Adapts to a support set; returns a task state (a nest of tensors).

        The state is whatever `predict` needs: prototypes for metric learners,
        fast weights for gradient-based ones.
        """

    @abc.abstractmethod
    def predict(
        self, task_state: Any, query_images: tf.Tensor, training: bool = False
    ) -> tf.Tensor:
        """Returns float32 logits `[num_query, num_classes]` for the query images."""

    @abc.abstractmethod
    def embed(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Returns float32 embeddings `[n, d]` of the images (the exported `embed`)."""

    def adapt_embeddings(
        self,
        support_embeddings: tf.Tensor,
        support_labels: tf.Tensor,
        num_classes: int | tf.Tensor,
    ) -> Any:
        """`EMBEDS_IMAGES_INDEPENDENTLY` learners: `adapt` from `embed(support_images)`.

        `adapt(s, labels, n)` must equal `adapt_embeddings(embed(s), labels, n)`
        when not training.
        """
        raise NotImplementedError(f"{type(self).__name__} does not adapt from embeddings")

    def predict_embeddings(self, task_state: Any, query_embeddings: tf.Tensor) -> tf.Tensor:
        """`EMBEDS_IMAGES_INDEPENDENTLY` learners: `predict` from `embed(query_images)`.

        `predict(state, q)` must equal `predict_embeddings(state, embed(q))`
        when not training.
        """
        raise NotImplementedError(f"{type(self).__name__} does not predict from embeddings")

    def generate(self, support_images: tf.Tensor, num_samples: int | tf.Tensor, seed: tf.Tensor):
        """Generative learners only: `num_samples` new images like `support_images`.

        `support_images` `[k, h, w, c]` are K normalised images of one class;
        returns float32 `[num_samples, h, w, c]` in the same normalised space
        (the core undoes the normalisation). `seed` is an int32 `[2]` tensor for
        stateless sampling (`tf.random.stateless_*`): equal seeds give equal
        images. `num_samples` may be a scalar int32 tensor.
        """
        raise NotImplementedError(f"{type(self).__name__} is not generative")

    def meta_train_loss(self, episode: Episode) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """Returns `(scalar loss, metrics)` for one meta-training episode.

        The core differentiates the loss with respect to `trainable_variables`
        and applies its optimiser. `metrics` maps names to scalar tensors
        (at least `accuracy`, or `mse` for regression). The default is the
        query loss (cross-entropy, or mean squared error for regression) of
        `predict(adapt(support))` in training mode.
        """
        state = self.adapt(
            episode.support_images, episode.support_labels, self.task.n_way, training=True
        )
        outputs = self.predict(state, episode.query_images, training=True)
        return task_loss(self.task, outputs, episode.query_labels)


def classification_loss(
    logits: tf.Tensor, labels: tf.Tensor
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Cross-entropy of logits `[n, c]` against int labels `[n]`, and the accuracy."""
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )
    return loss, {"accuracy": accuracy(logits, labels)}


def regression_loss(
    predictions: tf.Tensor, targets: tf.Tensor
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Mean squared error of predictions against targets `[n, t]`, reported as `mse`."""
    mse = tf.reduce_mean(tf.square(predictions - targets))
    return mse, {"mse": mse}


# The loss of each task kind (`metasearch.tasks` builds its kinds on these).
TASK_LOSSES = {CLASSIFICATION: classification_loss, REGRESSION: regression_loss}


def task_loss(
    task: TaskSpec, outputs: tf.Tensor, labels: tf.Tensor
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """`(loss, metrics)` of predictions against labels, by the task's kind: cross-entropy
    and accuracy, or for regression mean squared error (reported as `mse`)."""
    return TASK_LOSSES[task.kind](outputs, labels)


def feature_dim(backbone: keras.layers.Layer, task: TaskSpec) -> int:
    """Width `d` of the features a backbone gives for the task's inputs.

    From the backbone's static output shape when it knows it, else by running
    it once on one zero input (which also builds it).
    """
    try:
        dim = backbone.compute_output_shape((None, *task.image_shape))[-1]
        if dim is not None:
            return int(dim)
    except Exception:  # noqa: BLE001 - fall back to running it once
        pass
    return int(backbone(tf.zeros([1, *task.image_shape]), training=False).shape[-1])


def class_means(embeddings: tf.Tensor, labels: tf.Tensor, num_classes) -> tf.Tensor:
    """Per-class mean of `embeddings [n, d]`: `[num_classes, d]`.

    A one-hot matmul rather than a segment op: XLA compiles it when
    `num_classes` is a Python int, and it runs with a tensor `num_classes`.
    """
    one_hot = tf.one_hot(labels, num_classes, dtype=embeddings.dtype)
    counts = tf.reduce_sum(one_hot, axis=0)
    sums = tf.matmul(one_hot, embeddings, transpose_a=True)
    return sums / tf.maximum(counts, 1.0)[:, None]


def projection_layer(dim: int) -> keras.layers.Layer | None:
    """A linear projection of backbone features to `dim` (an `embedding_dim`); None for 0."""
    return keras.layers.Dense(int(dim), name="projection") if dim else None


def project(
    backbone: keras.layers.Layer,
    projection: keras.layers.Layer | None,
    images: tf.Tensor,
    training: bool = False,
) -> tf.Tensor:
    """Features `[n, d]` of `images`: the backbone's, through `projection` if there is one."""
    features = backbone(images, training=training)
    return features if projection is None else projection(features)


def accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mean top-1 accuracy of `logits [n, c]` against int labels `[n]`."""
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.reduce_mean(tf.cast(tf.equal(predicted, labels), tf.float32))


# An image to decode: a file path, or `(archive path, member)` inside a zip archive.
ImageSource = str | tuple[str, str]
# A bounding box in an image's pixels: `(x, y, width, height)`, from its top-left corner.
Box = tuple[float, float, float, float]


@dataclasses.dataclass
class ClassSet:
    """The classes of one class set (meta-train, meta-validation or meta-test).

    Either `images`, float32 in [0, 1] already at the model's image size
    (generated or already decoded data sets): one array `[num_classes,
    images_per_class, h, w, c]`, or a list of `[n_i, h, w, c]` arrays, one per
    class, when classes hold different numbers of images; or
    `files`: per class, a list of `ImageSource`s (PNG, JPEG, BMP, GIF or
    WebP, any size, grey or colour, any number per class) that the core
    decodes, converts to the data set's channels and resizes on demand
    (`metasearch.data.pipeline`). `names` names each class (e.g.
    `Greek/character05`). `boxes`, with `files` only: per class, one `Box` or
    None per file; the core crops each image to its box (clipped to the image)
    before resizing it.
    """

    images: np.ndarray | list[np.ndarray] | None
    names: list[str]
    files: list[list[ImageSource]] | None = None
    boxes: list[list[Box | None]] | None = None

    def __post_init__(self):
        if (self.images is None) == (self.files is None):
            raise ValueError("ClassSet: give either images or files")
        if len(self.names) != self.num_classes:
            raise ValueError(f"ClassSet: {len(self.names)} names for {self.num_classes} classes")
        if self.boxes is not None and (
            self.files is None or [len(b) for b in self.boxes] != [len(f) for f in self.files]
        ):
            raise ValueError("ClassSet: boxes need files, one box (or None) per file")

    @property
    def num_classes(self) -> int:
        return len(self.images) if self.images is not None else len(self.files)

    @property
    def counts(self) -> list[int]:
        """Images of each class."""
        if isinstance(self.images, np.ndarray):
            return [int(self.images.shape[1])] * self.num_classes
        if self.images is not None:
            return [len(images) for images in self.images]
        return [len(sources) for sources in self.files]

    @property
    def images_per_class(self) -> int:
        """The fewest images any class has."""
        return min(self.counts) if self.num_classes else 0

    def subset(self, keep: list[int]) -> ClassSet:
        """The classes at indices `keep`, in that order."""
        names = [self.names[i] for i in keep]
        if isinstance(self.images, np.ndarray):
            return ClassSet(self.images[keep], names)
        if self.images is not None:
            return ClassSet([self.images[i] for i in keep], names)
        boxes = None if self.boxes is None else [self.boxes[i] for i in keep]
        return ClassSet(None, names, files=[self.files[i] for i in keep], boxes=boxes)


@dataclasses.dataclass
class ClassSplits:
    """Disjoint meta-train, meta-validation and meta-test class sets."""

    train: ClassSet
    val: ClassSet
    test: ClassSet

    def items(self):
        return (("train", self.train), ("val", self.val), ("test", self.test))


@dataclasses.dataclass(frozen=True)
class DatasetOptions:
    """What the core passes a data set: resolved from flags, never read from them.

    `image_size` is the model's square input size; loaders return images
    resized to it with `metasearch.data.preprocess.resize` (the same op the
    exported model applies in-graph). `options` holds the data set's own
    settings (e.g. which Omniglot archives form which class set).
    """

    data_dir: str | None
    image_size: int
    seed: int
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class Dataset(abc.ABC):
    """A source of image classes for few-shot classification episodes.

    Contract:
    * `channels` is the channel count of the images as decoded from the data
      set's files (exported models expect it).
    * `load()` returns `ClassSplits` with disjoint class sets, images float32
      in [0, 1] at `options.image_size`. Bad input (missing folders, corrupt
      archives, undecodable files, unknown names) raises
      `metasearch.errors.UsageError` naming the flag or file.
    * `load()` never downloads anything.
    * `OPTIONS` declares the data set's own settings
      (`metasearch.options.Option`s); the CLI makes each one the flag
      `--<dataset>_<option>`. `self.options.options` holds their complete,
      checked values.
    """

    channels: int = 1
    kind: str = CLASSIFICATION
    OPTIONS: tuple[Option, ...] = ()
    # The final learner is meta-tested at --n_way and at these ways too, where the
    # test classes allow (the literature's settings, e.g. 5- and 20-way for Omniglot).
    TEST_WAYS: tuple[int, ...] = ()

    def __init__(self, options: DatasetOptions):
        resolved = options_lib.resolve(
            self.OPTIONS,
            options.options,
            type(self).__name__,
            flag_prefix=registry.registered_name("dataset", type(self)),
        )
        self.options = dataclasses.replace(options, options=resolved)

    @abc.abstractmethod
    def load(self) -> ClassSplits:
        """Returns the class sets."""


class RegressionDataset(Dataset):
    """A distribution of few-shot regression tasks (e.g. `sinusoid`).

    Contract:
    * `input_shape` and `target_dim` give the shape of one input and the
      number of targets per point.
    * `load()` checks the options (raising `UsageError` naming the flag) and
      returns None: tasks are generated, not read.
    * `episodes(split, k_shot, n_query, seed, stream, count, start)` returns a
      `tf.data.Dataset` of `Episode`s with float32 inputs `[k, *input_shape]`
      and targets `[k, target_dim]` (support) and the same for `n_query`
      query points. Episode `i` is a pure function of `(seed, stream, i)`;
      `split` ("train", "val" or "test") selects disjoint task streams.
    """

    kind = REGRESSION
    input_shape: tuple[int, ...] = (1,)
    target_dim: int = 1

    def load(self) -> None:
        """Checks the options; tasks are generated, so there is nothing to read."""
        return None

    @abc.abstractmethod
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
        """A stream of regression `Episode`s: `count` of them, or endless if None."""
