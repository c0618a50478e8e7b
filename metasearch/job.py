"""A validated search job: every input checked before anything is written.

`Job(config, role)` looks the components up (unknown names fail with the
known ones), resolves their options and the fixed hyperparameters, checks the
output directory, loads the data set through the task kind (or the table of
a table-scored search) and refuses an output directory holding a run of
another configuration. `Job.start` then writes the run's description.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import keras_tuner
import tensorflow as tf

from metasearch import options as options_lib
from metasearch import registry
from metasearch.api import CLASSIFICATION, DatasetOptions, SearchSpace
from metasearch.components import (
    Components,
    build_variables,
    fixed_hyperparameters,
    training_config,
    training_task,
    with_inner_optimizer,
)
from metasearch.config import (
    RunConfig,
    describe_difference,
    flagfile_difference,
    flagfile_text,
    parse_duration,
)
from metasearch.data.episodes import VAL_STREAM, EvaluationEpisodes
from metasearch.errors import DamagedFileError, UsageError
from metasearch.precision import LEGACY_AUTO, recorded_precision, resolve_precision
from metasearch.rundir import CONFIG_FILE, DAMAGED, DATASET_FILE, FLAGS_FILE, RunDir
from metasearch.tasks import TaskData, TaskKind, kind_of
from metasearch.training import count_parameters, resolve_jit_compile

ROLES = ("local", "chief", "worker")


def derived_seed(seed: int, purpose: str) -> int:
    """A seed in [1, 2**31 - 1) for one use (a trial, the oracle), fixed by `--seed`.

    Never 0: keras-tuner's oracles replace a falsy seed with a random one,
    which would make `--seed=0` runs unrepeatable.
    """
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).hexdigest()
    return int(digest[:8], 16) % (2**31 - 2) + 1


def over_budget(parameters: int, max_params: int | None) -> str | None:
    """Why `parameters` break `--max_params`, or None when they fit."""
    if max_params is not None and parameters > max_params:
        return f"{parameters:,} parameters > --max_params={max_params:,}"
    return None


def load_table(config: RunConfig, space: SearchSpace):
    """The tabular benchmark for `--evaluator=table`, checked against the search space."""
    from metasearch.tabular import Table, fit_space

    if not config.table:
        raise UsageError("--table: --evaluator=table needs --table=PATH (a CSV of architectures)")
    if space.TABLE_KEY_COLUMN is None:
        raise UsageError(
            f"--evaluator=table: search space {config.search_space} has no tabular benchmark"
        )
    if config.max_params is not None:
        raise UsageError("--max_params: a table-scored search trains nothing to limit")
    ops = list(getattr(config, "table_ops", None) or [])
    known_ops = tuple(getattr(space, "TABLE_OPS", ()))
    if ops and not known_ops:
        raise UsageError(
            f"--table_ops: search space {config.search_space}'s table keys name no operations"
        )
    for op in ops:
        if op not in known_ops:
            raise UsageError(
                f"--table_ops: unknown operation {op!r}; known: {', '.join(known_ops)}"
            )
        if ops.count(op) > 1:
            raise UsageError(f"--table_ops: {op} is listed twice (one name per key digit)")
    table = Table(config.table, config.table_column, space.TABLE_KEY_COLUMN)
    try:
        # The space offers only the table's operations; a cell still missing never becomes a
        # trial (`table.candidate_filter`, the oracle's constraint).
        fit_space(table, space, ops or None)
    except ValueError as error:
        raise UsageError(f"--table: {config.table}: {error}") from None
    check_fixed_in_table(config, space)
    return table


def check_fixed_in_table(config: RunConfig, space: SearchSpace) -> None:
    """`--fix_hparams` values of the architecture are among the choices the table leaves."""
    hp = keras_tuner.HyperParameters()
    space.sample_config(hp)
    for declared in hp.space:
        value = config.fix_hparams.get(declared.name)
        values = getattr(declared, "values", None)
        if value is not None and values is not None and value not in values:
            raise UsageError(
                f"--fix_hparams: {declared.name}={value!r} is in no cell of --table="
                f"{config.table} (its choices there: {', '.join(map(str, values))})"
            )


def check_budget_settings(config: RunConfig) -> None:
    """`--time_budget` and the final phase's settings make sense (UsageError naming the flag)."""
    if config.time_budget is not None:
        try:
            parse_duration(config.time_budget)
        except ValueError as error:
            raise UsageError(str(error)) from None
    if config.trial_time is not None:
        try:
            parse_duration(config.trial_time, "--trial_time")
        except ValueError as error:
            raise UsageError(str(error)) from None
    if config.max_trials is not None and config.max_trials < 1:
        raise UsageError(f"--max_trials: {config.max_trials} is not a positive number of trials")
    if not 0.0 <= config.final_share <= 0.9:
        raise UsageError(f"--final_share: {config.final_share} is outside [0, 0.9]")
    if config.final_top_k < 0:
        raise UsageError(f"--final_top_k: {config.final_top_k} is negative")
    if config.final_episodes is not None and config.final_episodes < 1:
        raise UsageError(f"--final_episodes: {config.final_episodes} is not a positive count")
    if config.racing not in ("none", "paired"):
        raise UsageError(f"--racing: unknown {config.racing!r}; known: none, paired")
    if config.racing != "none":
        if config.strategy == "hyperband":
            raise UsageError(
                "--racing: hyperband stops trials early its own way; use --racing=none"
            )
        if config.evaluator == "table":
            raise UsageError("--racing: a table-scored search trains nothing to race")
        rungs = list(config.racing_rungs)
        if not rungs or not all(0.0 < f < 1.0 for f in rungs):
            raise UsageError(f"--racing_rungs: {rungs} are not fractions between 0 and 1")
        if config.racing_episodes < 2:
            raise UsageError("--racing_episodes: at least 2 episodes make a paired comparison")
    if config.test_episodes < 1:
        raise UsageError(f"--test_episodes: {config.test_episodes} is not a positive count")


def resolve_config(config: RunConfig) -> RunConfig:
    """`config` with every component's options complete and `--inner_optimizer` folded in.

    Unknown component names, unknown options and values of the wrong type
    fail with `UsageError`, so what is written to `config.json` is exactly
    what the run uses.
    """
    trains = config.evaluator == "train"
    check_budget_settings(config)
    dataset = registry.load("dataset", config.dataset, "dataset")
    strategy = registry.load("strategy", config.strategy, "strategy")
    fixed = dict(config.fix_hparams)
    if trains:
        fixed = with_inner_optimizer(fixed, config.plugin, config.inner_optimizer)
    elif config.inner_optimizer is not None:
        raise UsageError("--inner_optimizer: a table-scored search trains nothing")
    return config.replace(
        fix_hparams=fixed,
        inner_optimizer=None,
        dataset_options=options_lib.resolve(
            dataset.OPTIONS,
            config.dataset_options,
            f"--dataset={config.dataset}",
            flag_prefix=config.dataset,
        ),
        strategy_options=options_lib.resolve(
            strategy.OPTIONS,
            config.strategy_options,
            f"--strategy={config.strategy}",
            flag_prefix=config.strategy,
        ),
    )


def run_precision(config: RunConfig) -> str:
    """The precision a training run of `config` trains at (`metasearch.precision`).

    `auto` resolves for the data set's kind of task on this machine, except
    when it continues a run that recorded `auto` (before `auto` could mean
    bfloat16): that run goes on in float32, as it started.
    """
    if str(config.precision).lower() == "auto" and not config.overwrite:
        run_dir = RunDir(config.output_dir)
        if run_dir.has_run():
            try:
                recorded = run_dir.read_config()["identity"].get("precision")
            except (OSError, DamagedFileError, KeyError, AttributeError):
                recorded = None  # damaged: `check_same_run` judges the run
            if recorded == "auto":
                return LEGACY_AUTO
    kind = registry.load("dataset", config.dataset, "dataset").kind
    try:
        return resolve_precision(config.precision, kind)
    except ValueError as error:
        raise UsageError(f"--precision: {error}") from None


class Job:
    """A validated search: components, data (or table), task kind and output directory.

    `role` is `"local"`, `"chief"` or `"worker"` (see `metasearch.distributed`).
    Workers never start over or rewrite the run's description: the chief owns it.
    """

    def __init__(self, config: RunConfig, role: str = "local"):
        self.role = role
        # Lines for the user about what was found and repaired (e.g. a rebuilt config.json).
        self.notes: list[str] = []
        # TensorFlow's intra-op thread count in use (0: its default), which
        # `controller.search` sets before the job starts (`metasearch.threads`).
        self.intra_op_threads = 0
        self.trains = config.evaluator == "train"
        config = resolve_config(config)
        if self.trains:
            # `auto` resolves here, once: the run records what it trains at.
            config = config.replace(precision=run_precision(config))
        self.components = Components.from_config(config.to_json())
        # The search space and plugin options, complete, are part of the run's identity.
        config = config.replace(
            space_options=dict(self.components.space.options),
            plugin_options=dict(self.components.plugin_options),
        )
        self.config = config
        # A table scores accuracy, whatever the data set would have posed.
        self.kind: TaskKind = (
            self.components.task_kind() if self.trains else kind_of(CLASSIFICATION)
        )
        self.fixed = fixed_hyperparameters(self.components, config.fix_hparams)
        if self.trains:
            self._check_task_kind()
        if role == "worker" and config.overwrite:
            raise UsageError(
                "--overwrite: only the chief (KERASTUNER_TUNER_ID=chief) may start over"
            )
        self.run_dir = RunDir(config.output_dir)
        self.run_dir.check_writable()
        self.table = None
        # Finite evaluation streams, built once (`episode_stream`).
        self._evaluation_streams: dict[tuple, Any] = {}
        self.data: TaskData | None = None
        if self.trains:
            self.data = self._load_data()
        else:
            self.table = load_table(config, self.components.space)
        self.jit_compile = resolve_jit_compile(config.jit_compile)
        self.check_same_run()
        if self.trains:
            # The validation episodes are the job's, the same for every trial: drawn with
            # the data, so that the first trial is not charged for them (0.1-0.3 s).
            validation = self.validation_episodes(config.eval_episodes)
            if isinstance(validation, EvaluationEpisodes):
                validation.indices()

    def _check_task_kind(self) -> None:
        """The plugin learns the data set's kind of task, and no setting is meaningless to it."""
        config = self.config
        plugin_kinds = tuple(self.components.plugin.TASK_KINDS)
        if self.kind.name not in plugin_kinds:
            raise UsageError(
                f"--plugin={config.plugin}: learns {' and '.join(plugin_kinds)} tasks, but "
                f"--dataset={config.dataset} is a {self.kind.name} data set"
            )
        for name in self.kind.unused_settings:
            # train_n_way defaults to n_way; the others to RunConfig's defaults.
            default = (
                config.n_way
                if name == "train_n_way"
                else RunConfig.__dataclass_fields__[name].default
            )
            if getattr(config, name) != default:
                raise UsageError(
                    f"--{name}: applies only with a classification data set "
                    f"(--dataset={config.dataset} is {self.kind.name})"
                )

    def _load_data(self) -> TaskData:
        config = self.config
        options = DatasetOptions(
            data_dir=config.data_dir,
            image_size=config.image_size,
            seed=config.seed,
            options=config.dataset_options,
        )
        return self.kind.load(self.components.dataset(options), config)

    @property
    def task(self):
        return self.data.task if self.data is not None else None

    @property
    def normalization(self) -> tuple[float, float]:
        return self.data.normalization if self.data is not None else (0.0, 1.0)

    @property
    def objective(self) -> tuple[str, str]:
        """keras-tuner's objective: `(name, direction)` (a table scores accuracy)."""
        return self.kind.objective, self.kind.direction

    def check_same_run(self) -> None:
        """Fails if the output directory holds a run of another configuration (unless --overwrite)."""
        config = self.config
        if not self.run_dir.has_run() or config.overwrite:
            return
        try:
            previous = self.run_dir.read_config()["identity"]
        except (DamagedFileError, KeyError) as error:
            reason = error.reason if isinstance(error, DamagedFileError) else "no identity in it"
            self._check_rebuildable_config(reason)
            return
        current = json.loads(json.dumps(config.identity()))
        # A setting newer than the run ran at its default then: compare with the default.
        defaults = json.loads(json.dumps(RunConfig().identity()))
        previous = {**{k: v for k, v in defaults.items() if k not in previous}, **previous}
        if current.get("precision") != "auto":  # `auto` recorded before it was resolved
            previous["precision"] = recorded_precision(previous)
        if previous != current:
            raise UsageError(
                f"--output_dir: {config.output_dir} holds a run with a different configuration "
                f"({describe_difference(previous, current)}); rerun with its flags "
                f"(--flagfile={self.run_dir.file(FLAGS_FILE)}), another --output_dir, or --overwrite"
            )

    def _check_rebuildable_config(self, reason: str) -> None:
        """`config.json` is damaged: accepts rebuilding it from this command, if nothing objects.

        The run's `flags.txt`, when readable, must agree with this command on
        the run's identity; otherwise (cut short or missing) every intact
        trial record must agree with it (plugin, fixed hyperparameters).
        Fails in one line naming the file and the command that recovers.
        """
        config_path = self.run_dir.file(CONFIG_FILE)
        flags_path = self.run_dir.file(FLAGS_FILE)
        recover = f"rerun with the run's own flags: metasearch --flagfile={flags_path}"
        try:
            with open(flags_path, encoding="utf-8") as handle:
                difference = flagfile_difference(handle.read(), self.config)
        except (OSError, ValueError) as error:
            flags_state = "missing" if isinstance(error, FileNotFoundError) else "damaged too"
            objection = self._trial_contradicting_config()
            if objection:
                raise UsageError(
                    f"--output_dir: {config_path} is damaged ({reason}), {flags_path} is "
                    f"{flags_state}, and {objection}: rerun with the flags the run was started "
                    "with to rebuild them"
                ) from None
            self.notes.append(
                f"{config_path} was damaged ({reason}); rebuilt from this command, which the "
                "intact trial records agree with"
            )
            return
        if difference is not None:
            raise UsageError(
                f"--output_dir: {config_path} is damaged ({reason}) and this command differs "
                f"from the run's {flags_path} ({difference}); {recover}"
            )
        self.notes.append(
            f"{config_path} was damaged ({reason}); rebuilt from this command, which matches "
            f"{flags_path}"
        )

    def _trial_contradicting_config(self) -> str | None:
        """Why an intact trial record cannot come from this configuration (None: none objects)."""
        config = self.config
        for record in self.run_dir.trial_results():
            if record["status"] == DAMAGED:
                continue
            values = record.get("hyperparameters", {})
            for name, value in config.fix_hparams.items():
                if name in values and values[name] != value:
                    return (
                        f"trial {record['trial_id']} has {name}={values[name]!r}, where this "
                        f"command fixes {value!r}"
                    )
            plugin = record.get("plugin")
            if self.trains and plugin is not None and plugin != config.plugin:
                return f"trial {record['trial_id']} trained --plugin={plugin}"
        return None

    def episode_stream(
        self,
        split: str,
        seed: int,
        stream: int,
        count: int | None = None,
        start: int = 0,
        training: Mapping[str, Any] | None = None,
    ) -> tf.data.Dataset:
        """Episodes of one split: meta-training (`--train_n_way`, augmented) or evaluation.

        From index `start` of the stream (a resumed trial goes on where it stopped).
        Meta-training episodes follow `training`'s searched settings where it
        has them (a sampled configuration, or `sampled_training` of a trial
        record: way, query images per class, new classes), the flags
        (`--train_n_way`, `--n_query`, `--class_augment`) otherwise. Finite evaluation
        streams are built once and reused (every trial is scored on the same
        episodes), so no trial pays for building them again.
        """
        if split == "train" or count is None:
            config = self.config
            if split == "train" and training:
                config = config.replace(**training_config(training))
            return self.kind.episodes(self.data, config, split, seed, stream, count, start)
        key = (split, seed, stream, count, start)
        if key not in self._evaluation_streams:
            self._evaluation_streams[key] = self.kind.episodes(
                self.data, self.config, split, seed, stream, count, start
            )
        return self._evaluation_streams[key]

    def validation_episodes(self, count: int):
        """The first `count` meta-validation episodes, the same for every trial (built once)."""
        return self.episode_stream("val", self.config.seed, VAL_STREAM, count=count)

    def candidate_violation(self, values: dict[str, Any]) -> str | None:
        """Why a candidate breaks `--max_params` (built, not trained), or None if it fits."""
        import keras

        hp = keras_tuner.HyperParameters()
        hp.values = dict(values)
        sampled = self.components.sample(hp)
        keras.backend.clear_session()
        task = training_task(self.task, sampled)
        learner = self.components.build_learner(sampled, task)
        build_variables(learner, task, self.normalization)
        parameters = count_parameters(learner)
        keras.backend.clear_session()
        return over_budget(parameters, self.config.max_params)

    def dataset_info(self) -> dict[str, Any]:
        if not self.trains:
            return {"evaluator": "table", "table": self.config.table}
        return self.data.info

    def start(self) -> None:
        """Writes the run's description; with --overwrite, first removes the old run."""
        if self.config.overwrite:
            self.run_dir.clear()
        self.run_dir.write_json(
            CONFIG_FILE, {"identity": self.config.identity(), "config": self.config.to_json()}
        )
        self.run_dir.write_text(FLAGS_FILE, flagfile_text(self.config))
        self.run_dir.write_json(DATASET_FILE, self.dataset_info())
