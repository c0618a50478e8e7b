"""Every absl flag of metasearch, and their resolution into a `RunConfig`.

This is the only module that defines or reads flags. Library code receives
the resolved `RunConfig` (or plain arguments) instead.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from absl import flags

from metasearch.errors import UsageError

FLAGS = flags.FLAGS

# --- what to search -------------------------------------------------------
flags.DEFINE_string("dataset", "glyphs", "Data set name (entry point in metasearch.datasets).")
flags.DEFINE_string("data_dir", None, "Folder with the data set's files (omniglot: its zips).")
flags.DEFINE_string("plugin", "protonet", "Meta-learner name (entry point in metasearch.plugins).")
flags.DEFINE_string(
    "search_space", "conv_blocks", "Search space name (entry point in metasearch.search_spaces)."
)
STRATEGIES = ("random", "bayesian", "grid", "hyperband", "evolution", "controller")
flags.DEFINE_enum(
    "strategy",
    "random",
    list(STRATEGIES),
    "Search strategy (a keras-tuner oracle): random, bayesian (Gaussian process), grid, "
    "hyperband (successive halving of --episodes_per_trial), evolution (regularized/aging "
    "evolution), controller (NASNet's recurrent controller trained by policy gradient).",
)
flags.DEFINE_list(
    "fix_hparams",
    [],
    "Hyperparameters held fixed instead of searched, as NAME=VALUE items "
    "(e.g. conv_blocks/depth=4,protonet/metric=cosine).",
)
flags.DEFINE_enum(
    "inner_optimizer",
    None,
    ["sgd", "learned"],
    "MAML family (maml, fomaml, anil): the inner-loop update rule, fixed instead of searched: "
    "sgd (plain gradient descent) or learned (a coordinate-wise LSTM optimizer meta-trained "
    "with the initialisation). Shorthand for --fix_hparams=PLUGIN/inner_optimizer=VALUE.",
)
flags.DEFINE_enum(
    "evaluator",
    "train",
    ["train", "table"],
    "How a trial is scored: train meta-trains the candidate; table reads its accuracy from "
    "--table (a tabular benchmark such as NAS-Bench-201's) without training.",
)
flags.DEFINE_string(
    "table", None, "--evaluator=table: CSV with one row per architecture (e.g. NAS-Bench-201)."
)
flags.DEFINE_string(
    "table_column", "cifar10_val", "--evaluator=table: the CSV column holding the accuracy (%)."
)
flags.DEFINE_integer(
    "max_params",
    None,
    "Largest learner (parameters) a trial may have; larger candidates are rejected before "
    "training and the strategy proposes others.",
    lower_bound=1,
)
flags.DEFINE_integer("max_trials", 4, "Number of trials (architectures) to run.", lower_bound=1)
flags.DEFINE_integer("episodes_per_trial", 500, "Meta-training episodes per trial.", lower_bound=1)
flags.DEFINE_integer(
    "eval_episodes", 200, "Meta-validation episodes scoring each trial.", lower_bound=1
)

# --- episodes -------------------------------------------------------------
flags.DEFINE_integer("n_way", 5, "Classes per evaluation episode (N).", lower_bound=2)
flags.DEFINE_integer("k_shot", 1, "Support images per class (K).", lower_bound=1)
flags.DEFINE_integer("n_query", 15, "Query images per class (Q).", lower_bound=1)
flags.DEFINE_integer(
    "train_n_way",
    None,
    "Classes per meta-training episode; defaults to --n_way. Training with more "
    "classes than at test time (Snell et al.) often helps.",
    lower_bound=2,
)
flags.DEFINE_enum(
    "augment",
    "none",
    ["none", "affine"],
    "Meta-training image augmentation: affine redraws each image with a small random "
    "rotation, scale, shear and shift. Evaluation is never augmented.",
)
flags.DEFINE_integer(
    "meta_batch_size",
    1,
    "Episodes (tasks) averaged per meta-training step; --episodes_per_trial counts episodes.",
    lower_bound=1,
)
flags.DEFINE_integer("image_size", 28, "Square size images are resized to.", lower_bound=4)
flags.DEFINE_integer("seed", 0, "Seed for trials, weights and episodes.")

# --- strategy options (unset: the strategy's defaults) ----------------------
flags.DEFINE_integer(
    "evolution_population", None, "evolution: population size (default 20).", lower_bound=2
)
flags.DEFINE_integer(
    "evolution_sample_size",
    None,
    "evolution: tournament size, members sampled to pick a parent (default 10).",
    lower_bound=1,
)
flags.DEFINE_float(
    "controller_learning_rate",
    None,
    "controller: Adam learning rate of the policy (default 0.02).",
    lower_bound=0,
)
flags.DEFINE_integer(
    "hyperband_max_epochs",
    9,
    "hyperband: budget units of the longest trial; a unit is --episodes_per_trial / this many "
    "episodes, so a fully promoted trial trains --episodes_per_trial episodes.",
    lower_bound=1,
)
flags.DEFINE_integer("hyperband_factor", 3, "hyperband: halving factor.", lower_bound=2)

# --- search-space options (unset: the space's defaults) ------------------
flags.DEFINE_integer(
    "nasnet_blocks", None, "nasnet: blocks per cell (B, default 5).", lower_bound=1
)
flags.DEFINE_integer(
    "nasnet_cells_per_stage", None, "nasnet: normal cells per stage (N).", lower_bound=1
)
flags.DEFINE_integer("nasnet_filters", None, "nasnet: filters of the first stage.", lower_bound=1)
flags.DEFINE_string(
    "nasnet_cell",
    None,
    "nasnet: a named preset (e.g. nasnet_a) fixing both cells instead of searching them.",
)
flags.DEFINE_integer(
    "fabric_channels", None, "fabric: channels of every trellis node.", lower_bound=1
)
flags.DEFINE_integer(
    "nasbench201_channels", None, "nasbench201: channels of the first stage.", lower_bound=1
)
flags.DEFINE_integer(
    "nasbench201_cells_per_stage", None, "nasbench201: cells per stage (N).", lower_bound=1
)

# --- output ---------------------------------------------------------------
flags.DEFINE_string("output_dir", "runs/metasearch", "Where the search writes everything.")
flags.DEFINE_bool(
    "overwrite", False, "Start over in --output_dir, deleting an earlier run's results."
)
flags.DEFINE_enum(
    "jit_compile",
    "auto",
    ["auto", "true", "false"],
    "XLA for training and adaptation steps; auto: XLA on GPU, graph mode on CPU.",
)
flags.DEFINE_bool("progress", True, "Show a progress display while trials run.")

# --- data-set options -----------------------------------------------------
flags.DEFINE_integer("glyphs_classes", 1200, "glyphs: number of generated classes.")
flags.DEFINE_integer("glyphs_images_per_class", 20, "glyphs: images per class.")
flags.DEFINE_list(
    "omniglot_train",
    [],
    "omniglot: meta-train classes, items ARCHIVE or ARCHIVE/ALPHABET, -ITEM removes. "
    "Unset splits share the unclaimed alphabets.",
)
flags.DEFINE_list("omniglot_val", [], "omniglot: meta-validation classes (as --omniglot_train).")
flags.DEFINE_list("omniglot_test", [], "omniglot: meta-test classes (as --omniglot_train).")
flags.DEFINE_enum(
    "omniglot_rotations",
    "none",
    ["none", "train", "all"],
    "omniglot: add 90/180/270-degree rotations as new classes, in no, the meta-train, or every class set.",
)

flags.DEFINE_list(
    "sinusoid_amplitude", ["0.1", "5.0"], "sinusoid: amplitude range LOW,HIGH (Finn et al.)."
)
flags.DEFINE_list("sinusoid_phase", ["0", "3.141592653589793"], "sinusoid: phase range LOW,HIGH.")
flags.DEFINE_list("sinusoid_x_range", ["-5.0", "5.0"], "sinusoid: input range LOW,HIGH.")

# --- distributed search ---------------------------------------------------
flags.DEFINE_integer(
    "worker_timeout",
    120,
    "Distributed search: seconds without a heartbeat after which the chief hands a worker's "
    "trial to another worker.",
    lower_bound=2,
)

# --- export subcommand ----------------------------------------------------
flags.DEFINE_string("trial", "best", "export: trial id to export, or 'best'.")
flags.DEFINE_enum(
    "what",
    "learner",
    ["learner", "cell"],
    "export: the whole few-shot learner, or the discovered cell(s) with their trained weights.",
)
flags.DEFINE_string(
    "export_dir", None, "export: where to write the SavedModel (default inside --output_dir)."
)

# --- sample subcommand ----------------------------------------------------
flags.DEFINE_string(
    "sample_png", None, "sample: where to write the PNG grid (default RUN/samples_TRIAL.png)."
)
flags.DEFINE_integer("sample_classes", 5, "sample: meta-test classes, one row each.")
flags.DEFINE_integer("sample_shots", 5, "sample: given images per class (K).")
flags.DEFINE_integer("samples_per_class", 10, "sample: new images generated per class.")

# Flags that change what a run computes. A rerun into an existing output
# directory must agree on all of them; --max_trials may grow to extend a search.
IDENTITY_FLAGS = (
    "dataset",
    "data_dir",
    "plugin",
    "search_space",
    "strategy",
    "evaluator",
    "table",
    "table_column",
    "max_params",
    "fix_hparams",
    "episodes_per_trial",
    "eval_episodes",
    "n_way",
    "k_shot",
    "n_query",
    "train_n_way",
    "augment",
    "meta_batch_size",
    "image_size",
    "seed",
    "glyphs_classes",
    "glyphs_images_per_class",
    "omniglot_train",
    "omniglot_val",
    "omniglot_test",
    "omniglot_rotations",
    "sinusoid_amplitude",
    "sinusoid_phase",
    "sinusoid_x_range",
)
# Flags resolved into `strategy_options` and `space_options` (also part of the identity).
STRATEGY_OPTION_FLAGS = {
    "evolution": {
        "evolution_population": "population_size",
        "evolution_sample_size": "sample_size",
    },
    "controller": {"controller_learning_rate": "learning_rate"},
    "hyperband": {"hyperband_max_epochs": "max_epochs", "hyperband_factor": "factor"},
}
# The built-in data sets' own flags (`dataset_options` reads them).
DATASET_FLAGS = {
    "glyphs": ("glyphs_classes", "glyphs_images_per_class"),
    "omniglot": ("omniglot_train", "omniglot_val", "omniglot_test", "omniglot_rotations"),
    "sinusoid": ("sinusoid_amplitude", "sinusoid_phase", "sinusoid_x_range"),
}
# Flags about classes and images, which a regression task family has neither of.
CLASSIFICATION_FLAGS = ("n_way", "train_n_way", "augment", "image_size")
SPACE_OPTION_FLAGS = {
    "nasnet": {
        "nasnet_blocks": "blocks",
        "nasnet_cells_per_stage": "cells_per_stage",
        "nasnet_filters": "filters",
        "nasnet_cell": "cell",
    },
    "fabric": {"fabric_channels": "channels"},
    "nasbench201": {
        "nasbench201_channels": "channels",
        "nasbench201_cells_per_stage": "cells_per_stage",
    },
}
RUN_FLAGS = (
    IDENTITY_FLAGS
    + tuple(f for group in STRATEGY_OPTION_FLAGS.values() for f in group)
    + tuple(f for group in SPACE_OPTION_FLAGS.values() for f in group)
    + ("inner_optimizer", "max_trials", "output_dir", "jit_compile", "progress", "worker_timeout")
)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The resolved configuration of a search run (what library code receives)."""

    dataset: str
    data_dir: str | None
    plugin: str
    search_space: str
    strategy: str
    evaluator: str
    table: str | None
    table_column: str
    max_params: int | None
    fix_hparams: dict[str, Any]
    max_trials: int
    episodes_per_trial: int
    eval_episodes: int
    n_way: int
    k_shot: int
    n_query: int
    train_n_way: int
    augment: str
    image_size: int
    seed: int
    output_dir: str
    overwrite: bool
    jit_compile: str
    progress: bool
    dataset_options: dict[str, Any]
    strategy_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    space_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    worker_timeout: int = 120
    meta_batch_size: int = 1

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""
        values = dataclasses.asdict(self)
        identity = {name: values[name] for name in IDENTITY_FLAGS if name in values}
        for name in ("dataset_options", "strategy_options", "space_options"):
            identity[name] = values[name]
        return identity

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def dataset_options(dataset: str) -> dict[str, Any]:
    """The data set's own options, from its flags."""
    if dataset == "glyphs":
        return {
            "num_classes": FLAGS.glyphs_classes,
            "images_per_class": FLAGS.glyphs_images_per_class,
        }
    if dataset == "omniglot":
        return {
            "train": list(FLAGS.omniglot_train),
            "val": list(FLAGS.omniglot_val),
            "test": list(FLAGS.omniglot_test),
            "rotations": FLAGS.omniglot_rotations,
        }
    if dataset == "sinusoid":
        return {
            "amplitude": ",".join(FLAGS.sinusoid_amplitude),
            "phase": ",".join(FLAGS.sinusoid_phase),
            "x_range": ",".join(FLAGS.sinusoid_x_range),
        }
    return {}


def _options(groups: dict[str, dict[str, str]], name: str) -> dict[str, Any]:
    """The options of component `name` from its flags that were given a value."""
    return {
        option: FLAGS[flag].value
        for flag, option in groups.get(name, {}).items()
        if FLAGS[flag].value is not None
    }


def resolve() -> RunConfig:
    """Reads the parsed flags into a `RunConfig`; fails on flags the run would ignore."""
    check_unused_flags()
    return RunConfig(
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        plugin=FLAGS.plugin,
        search_space=FLAGS.search_space,
        strategy=FLAGS.strategy,
        evaluator=FLAGS.evaluator,
        table=FLAGS.table,
        table_column=FLAGS.table_column,
        max_params=FLAGS.max_params,
        fix_hparams=with_inner_optimizer(
            parse_fixed_hparams(FLAGS.fix_hparams), FLAGS.plugin, FLAGS.inner_optimizer
        ),
        max_trials=FLAGS.max_trials,
        episodes_per_trial=FLAGS.episodes_per_trial,
        eval_episodes=FLAGS.eval_episodes,
        n_way=FLAGS.n_way,
        k_shot=FLAGS.k_shot,
        n_query=FLAGS.n_query,
        train_n_way=FLAGS.train_n_way or FLAGS.n_way,
        augment=FLAGS.augment,
        image_size=FLAGS.image_size,
        seed=FLAGS.seed,
        output_dir=FLAGS.output_dir,
        overwrite=FLAGS.overwrite,
        jit_compile=FLAGS.jit_compile,
        progress=FLAGS.progress,
        dataset_options=dataset_options(FLAGS.dataset),
        strategy_options=_options(STRATEGY_OPTION_FLAGS, FLAGS.strategy),
        space_options=_options(SPACE_OPTION_FLAGS, FLAGS.search_space),
        worker_timeout=FLAGS.worker_timeout,
        meta_batch_size=FLAGS.meta_batch_size,
    )


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_fixed_hparams(items: list[str]) -> dict[str, Any]:
    """`["a/b=4", "c=cosine"]` -> `{"a/b": 4, "c": "cosine"}`."""
    fixed = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--fix_hparams: {item!r} is not NAME=VALUE")
        fixed[name.strip()] = _parse_value(value.strip())
    return fixed


def with_inner_optimizer(fixed: dict[str, Any], plugin: str, choice: str | None) -> dict[str, Any]:
    """`fixed` plus `PLUGIN/inner_optimizer=choice` (from `--inner_optimizer`), checked."""
    if choice is None:
        return fixed
    import keras_tuner

    from metasearch import registry

    name = f"{plugin}/inner_optimizer"
    hp = keras_tuner.HyperParameters()
    registry.load("plugin", plugin, "plugin").sample_config(hp)
    if name not in {parameter.name for parameter in hp.space}:
        raise UsageError(
            f"--inner_optimizer: plugin {plugin!r} has no inner optimizer to choose "
            "(maml, fomaml and anil have)"
        )
    if fixed.get(name, choice) != choice:
        raise UsageError(
            f"--inner_optimizer={choice} contradicts --fix_hparams={name}={fixed[name]}"
        )
    return {**fixed, name: choice}


def flagfile_text() -> str:
    """The run's flags as a flagfile that repeats it (`--flagfile=PATH`)."""
    lines = ["# Repeat this run: metasearch --flagfile=THIS_FILE"]
    unused = _unused_flags()
    for name in RUN_FLAGS:
        flag = FLAGS[name]
        if flag.value is None or name in unused:
            continue
        lines.append(flag.serialize())
    return "\n".join(lines) + "\n"


def _is_regression(dataset: str) -> bool:
    from metasearch import api, registry

    return issubclass(registry.load("dataset", dataset, "dataset"), api.RegressionDataset)


def _unused_flags() -> dict[str, str]:
    """Flags that do not apply to this run's components, each with the setting they need."""
    # These count only away from their defaults: flagfiles of earlier runs list them.
    by_value = {
        flag: f"--dataset={name}"
        for name, group in DATASET_FLAGS.items()
        if name != FLAGS.dataset
        for flag in group
    }
    if FLAGS.evaluator == "train" and _is_regression(FLAGS.dataset):
        needs = f"a classification data set (--dataset={FLAGS.dataset} is regression)"
        by_value.update(dict.fromkeys(CLASSIFICATION_FLAGS, needs))
    unused = {
        flag: needs for flag, needs in by_value.items() if FLAGS[flag].value != FLAGS[flag].default
    }
    for groups, chosen, switch in (
        (SPACE_OPTION_FLAGS, FLAGS.search_space, "search_space"),
        (STRATEGY_OPTION_FLAGS, FLAGS.strategy, "strategy"),
    ):
        for name, group in groups.items():
            if name != chosen:
                unused.update({flag: f"--{switch}={name}" for flag in group})
    if FLAGS.evaluator != "table":
        unused.update(table="--evaluator=table", table_column="--evaluator=table")
    return unused


def check_unused_flags() -> None:
    """Fails if a flag is given that this run's components would silently ignore."""
    for name, needs in _unused_flags().items():
        if FLAGS[name].present:
            raise UsageError(f"--{name}: applies only with {needs}")


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """`--name: old -> new` for the first few settings that differ."""
    changed = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            changed.append(f"--{key}: {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}")
    return "; ".join(changed[:4]) + ("; ..." if len(changed) > 4 else "")
