"""The components a run uses: looked up by name, their options resolved, the joint space.

`Components` holds the registered plugin, search space and data set classes of
one run (the strategy is the oracle's business, see `metasearch.strategies`),
with each one's declared options resolved. It declares the joint search
space (architecture, learner hyperparameters, learning rate) and builds a
learner from one sampled point.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import keras_tuner

from metasearch import options as options_lib
from metasearch import registry
from metasearch.api import Dataset, MetaLearner, SearchSpace, TaskSpec
from metasearch.errors import UsageError
from metasearch.precision import build_backbone, recorded_precision, resolve_precision
from metasearch.tasks import TaskKind, kind_of
from metasearch.training import MetaTrainer

# The meta-training learning rate, searched on a log scale, and its default.
LEARNING_RATES = (3e-4, 3e-3)
DEFAULT_LEARNING_RATE = 1e-3


class Components:
    """The registered classes a run uses, looked up by name (unknown names fail).

    `space_options` and `plugin_options` are resolved against the search
    space's and the plugin's `OPTIONS` (unknown names or bad values fail with
    `UsageError`). A table-scored run (`trains=False`) searches the
    architecture only. Backbones are built at `precision`
    (`metasearch.precision`).
    """

    def __init__(
        self,
        plugin: str,
        search_space: str,
        dataset: str,
        space_options: Mapping[str, Any] | None = None,
        trains: bool = True,
        plugin_options: Mapping[str, Any] | None = None,
        precision: str = "float32",
        train_n_ways: tuple[int, ...] = (),
        train_n_way: int | None = None,
        train_n_queries: tuple[int, ...] = (),
        n_query: int | None = None,
        class_augments: tuple[str, ...] = (),
        class_augment: str = "none",
    ):
        self.plugin_name, self.space_name, self.dataset_name = plugin, search_space, dataset
        self.trains = trains
        # The meta-training way's and query count's choices (searched as `train/n_way`
        # and `train/n_query`) and their defaults.
        self.train_n_ways = tuple(int(way) for way in train_n_ways)
        self.train_n_way = train_n_way
        self.train_n_queries = tuple(int(count) for count in train_n_queries)
        self.n_query = n_query
        # The class augmentation's choices (searched as `train/class_augment`) and default.
        self.class_augments = tuple(str(value) for value in class_augments)
        self.class_augment = class_augment
        self.plugin: type[MetaLearner] = registry.load("plugin", plugin, "plugin")
        space_class: type[SearchSpace] = registry.load("search_space", search_space, "search_space")
        try:
            self.space: SearchSpace = space_class(space_options or {})
        except ValueError as error:
            raise UsageError(f"--search_space={search_space}: {error}") from None
        self.dataset: type[Dataset] = registry.load("dataset", dataset, "dataset")
        try:
            self.precision = resolve_precision(precision, self.dataset.kind)
        except ValueError as error:
            raise UsageError(f"--precision: {error}") from None
        self.plugin_options = options_lib.resolve(
            self.plugin.OPTIONS, plugin_options, f"--plugin={plugin}", flag_prefix=plugin
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Components:
        """The components of a run's resolved configuration (`RunConfig.to_json()`)."""
        return cls(
            config["plugin"],
            config["search_space"],
            config["dataset"],
            config.get("space_options"),
            trains=config.get("evaluator", "train") == "train",
            plugin_options=config.get("plugin_options"),
            # Runs written before --precision existed trained in float32, and so did
            # runs that recorded `auto` (before it could mean bfloat16).
            precision=recorded_precision(config),
            train_n_ways=tuple(config.get("train_n_ways") or ()),
            train_n_way=config.get("train_n_way"),
            train_n_queries=tuple(config.get("train_n_queries") or ()),
            n_query=config.get("n_query"),
            class_augments=tuple(config.get("class_augments") or ()),
            # Runs written before --class_augment existed made no new classes.
            class_augment=config.get("class_augment", "none"),
        )

    def task_kind(self) -> TaskKind:
        """The kind of task the run's data set poses."""
        return kind_of(self.dataset.kind)

    def sample(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """Declares the joint space (architecture, learner, training) and samples it."""
        architecture = self.space.sample_config(hp)
        if not self.trains:
            return {"architecture": architecture, "plugin": {}, "learning_rate": None}
        sampled = {
            "architecture": architecture,
            "plugin": self.plugin.sample_config(hp),
            "learning_rate": hp.Float(
                "train/learning_rate",
                LEARNING_RATES[0],
                LEARNING_RATES[1],
                sampling="log",
                default=DEFAULT_LEARNING_RATE,
            ),
        }
        if self.train_n_ways:
            sampled["train_n_way"] = hp.Choice(
                "train/n_way", list(self.train_n_ways), default=self.train_n_way
            )
        if self.train_n_queries:
            sampled["train_n_query"] = hp.Choice(
                "train/n_query", list(self.train_n_queries), default=self.n_query
            )
        if self.class_augments:
            sampled["train_class_augment"] = hp.Choice(
                "train/class_augment", list(self.class_augments), default=self.class_augment
            )
        return sampled

    def hyperparameters(self) -> dict[str, keras_tuner.engine.hyperparameters.HyperParameter]:
        """Every declared hyperparameter of the joint space, by name."""
        space = keras_tuner.HyperParameters()
        self.sample(space)
        return {hp.name: hp for hp in space.space}

    def build_learner(
        self, sampled: dict[str, Any], task: TaskSpec, normalization=None
    ) -> MetaLearner:
        """A learner for one sampled point; with `normalization`, its variables built.

        Callers clear Keras's session first where a fresh graph is wanted (the
        order of that and of seeding decides the initial weights).
        """
        backbone = build_backbone(
            self.space, sampled["architecture"], task.image_shape, self.precision
        )
        learner = self.plugin(backbone, sampled["plugin"], task, options=self.plugin_options)
        if normalization is not None:
            build_variables(learner, task, normalization)
        return learner


# Searched meta-training settings: hyperparameter -> (its key in a sampled
# configuration, the `RunConfig` field whose flag it replaces for meta-training
# episodes, the `TaskSpec` field it sets or None: it changes only the episodes).
TRAINING_CHOICES = {
    "train/n_way": ("train_n_way", "train_n_way", "n_way"),
    "train/n_query": ("train_n_query", "n_query", "n_query"),
    "train/class_augment": ("train_class_augment", "class_augment", None),
}


def training_task(task: TaskSpec | None, sampled: Mapping[str, Any]) -> TaskSpec | None:
    """`task` at a sampled configuration's searched meta-training way and query count."""
    changes = {
        field: int(sampled[key])
        for key, _, field in TRAINING_CHOICES.values()
        if field is not None and sampled.get(key) is not None
    }
    if task is None or not changes:
        return task
    return dataclasses.replace(task, **changes)


def sampled_training(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """A trial record's searched training settings, keyed as `Components.sample` keys them."""
    return {
        key: hyperparameters[name]
        for name, (key, _, _) in TRAINING_CHOICES.items()
        if hyperparameters.get(name) is not None
    }


def training_config(sampled: Mapping[str, Any]) -> dict[str, Any]:
    """The `RunConfig` fields a configuration's searched training settings replace.

    `sampled` is keyed as `Components.sample` keys them (or is `sampled_training`'s).
    """
    return {
        field: sampled[key]
        for key, field, _ in TRAINING_CHOICES.values()
        if sampled.get(key) is not None
    }


def build_variables(learner: MetaLearner, task: TaskSpec, normalization) -> None:
    """Creates a learner's (and an optimiser's) variables from a zero-filled episode.

    Building runs no optimiser step, so the zeros change no weights that
    matter: every weight is overwritten from a trial's file right after.
    """
    episode = kind_of(task).placeholder_episode(task)
    MetaTrainer(learner, normalization, DEFAULT_LEARNING_RATE, 1, jit_compile=False).build(episode)


def fixed_hyperparameters(
    components: Components, fixed: Mapping[str, Any]
) -> keras_tuner.HyperParameters:
    """A `HyperParameters` holding `fixed` values; unknown names or values fail naming them."""
    known = components.hyperparameters()
    hp = keras_tuner.HyperParameters()
    for name, value in fixed.items():
        if name not in known:
            raise UsageError(
                f"--fix_hparams: unknown hyperparameter {name!r}; known: {', '.join(sorted(known))}"
            )
        declared = known[name]
        wrong_type = _type_mismatch(declared, value)
        if wrong_type:
            raise UsageError(f"--fix_hparams: {name}={value!r} is {wrong_type}")
        if isinstance(declared, keras_tuner.engine.hyperparameters.Choice):
            if value not in declared.values:
                raise UsageError(
                    f"--fix_hparams: {name}={value!r} is not one of {list(declared.values)}"
                )
        elif hasattr(declared, "min_value"):
            if (
                not isinstance(value, (int, float))
                or not declared.min_value <= value <= declared.max_value
            ):
                raise UsageError(
                    f"--fix_hparams: {name}={value!r} is outside [{declared.min_value}, {declared.max_value}]"
                )
        hp.Fixed(name, value)
    return hp


def _type_mismatch(declared, value: Any) -> str | None:
    """Why `value` has the wrong type for hyperparameter `declared` (None: it fits).

    Integers must be given as integers (`3`, not `3.0`: a float depth fails
    every trial), floats as numbers, booleans as `true`/`false`, strings as text.
    """
    hps = keras_tuner.engine.hyperparameters
    if isinstance(declared, hps.Boolean):
        wanted = {bool}
    elif isinstance(declared, hps.Int):
        wanted = {int}
    elif isinstance(declared, hps.Float):
        wanted = {float}
    elif isinstance(declared, hps.Choice):
        wanted = {type(v) for v in declared.values}
    else:
        return None
    given = type(value)
    if given in wanted or (given is int and wanted == {float}):
        return None
    names = {bool: "boolean", int: "integer", float: "number", str: "text"}
    takes = " or ".join(sorted(names.get(t, t.__name__) for t in wanted))
    what = names.get(given, given.__name__)
    article = "" if given is str else ("an " if what[0] in "aeiou" else "a ")
    return f"{article}{what}, but {declared.name} takes {takes} values"


def with_inner_optimizer(
    fixed: Mapping[str, Any], plugin: str, choice: str | None
) -> dict[str, Any]:
    """`fixed` plus `PLUGIN/inner_optimizer=choice` (`--inner_optimizer`), checked."""
    fixed = dict(fixed)
    if choice is None:
        return fixed
    name = f"{plugin}/inner_optimizer"
    hp = keras_tuner.HyperParameters()
    registry.load("plugin", plugin, "plugin").sample_config(hp)
    if name not in {parameter.name for parameter in hp.space}:
        raise UsageError(
            f"--inner_optimizer: plugin {plugin!r} has no inner optimizer to choose "
            f"({', '.join(plugins_with_hyperparameter('inner_optimizer'))} have)"
        )
    if fixed.get(name, choice) != choice:
        raise UsageError(
            f"--inner_optimizer={choice} contradicts --fix_hparams={name}={fixed[name]}"
        )
    return {**fixed, name: choice}


def plugins_with_hyperparameter(suffix: str) -> list[str]:
    """The registered plugins that declare the hyperparameter `PLUGIN/suffix`."""
    found = []
    for name in registry.names("plugin"):
        hp = keras_tuner.HyperParameters()
        registry.load("plugin", name, "plugin").sample_config(hp)
        if f"{name}/{suffix}" in {parameter.name for parameter in hp.space}:
            found.append(name)
    return found
