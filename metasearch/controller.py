"""The search controller: keras-tuner drives trials, each meta-trains one candidate.

Flow: `Job` validates every input (names, output directory, data, episode
shapes, the configuration of an earlier run) before anything is written; `search` then runs a
keras-tuner search whose `FewShotTuner.run_trial` builds a backbone from the
search space and a learner from the plugin, meta-trains it on episodes,
scores it on meta-validation episodes and saves its weights. After every
trial `results.json` and the leaderboard are rewritten; at the end the best
trial is exported as a SavedModel.

Output directory layout:
    config.json       the resolved configuration (checked when resuming)
    flags.txt         a flagfile that repeats the run
    dataset.json      channels, normalisation and class-set sizes
    keras_tuner/      keras-tuner's project (oracle, trials) plus per trial
                      `learner.weights.npz` and `metasearch_trial.json`
    results.json      every trial: architecture, hyperparameters, accuracy
                      with 95% CI, parameters, wall time, status
    leaderboard.txt   the printed leaderboard
    export/best_learner/  the best trial's SavedModel
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from typing import Any

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

import metasearch
from metasearch import distributed, plots, registry, strategies
from metasearch.api import (
    REGRESSION,
    ClassSplits,
    Dataset,
    DatasetOptions,
    MetaLearner,
    SearchSpace,
    TaskSpec,
)
from metasearch.data import episodes
from metasearch.errors import UsageError
from metasearch.export import cell_input_names, export_cells, export_learner
from metasearch.flags import RunConfig, describe_difference
from metasearch.flops import estimate_flops, format_flops
from metasearch.progress import Progress
from metasearch.training import DivergedError, MetaTrainer, count_parameters, resolve_jit_compile

PROJECT_NAME = "keras_tuner"
# The objective keras-tuner optimises: query accuracy for classification,
# query mean squared error (minimised) for regression data sets.
OBJECTIVE = "val_accuracy"
REGRESSION_OBJECTIVE = "val_mse"
TRIAL_RECORD = "metasearch_trial.json"
WEIGHTS_FILE = "learner.weights.npz"
PROGRESS_PICTURE = "search_progress.png"
# Everything metasearch writes into an output directory (and --overwrite removes).
OWNED_ENTRIES = (
    "config.json",
    "flags.txt",
    "dataset.json",
    PROJECT_NAME,
    "results.json",
    "leaderboard.txt",
    PROGRESS_PICTURE,
    "export",
)
LEARNING_RATES = (3e-4, 3e-3)


def write_json_atomic(path: str, value: Any) -> None:
    """Writes JSON through a temporary file and a rename: never half a file."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, sort_keys=True, default=_json_default)
        handle.write("\n")
    os.replace(temporary, path)


def write_text_atomic(path: str, text: str) -> None:
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


class Components:
    """The registered classes a run uses, looked up by name (unknown names fail)."""

    def __init__(
        self,
        plugin: str,
        search_space: str,
        dataset: str,
        space_options: dict[str, Any] | None = None,
        trains: bool = True,
    ):
        self.plugin_name, self.space_name, self.dataset_name = plugin, search_space, dataset
        # A tabular evaluator never trains: only the architecture is searched.
        self.trains = trains
        self.plugin: type[MetaLearner] = registry.load("plugin", plugin, "plugin")
        space_class: type[SearchSpace] = registry.load("search_space", search_space, "search_space")
        try:
            self.space: SearchSpace = space_class(space_options or {})
        except ValueError as error:
            raise UsageError(f"--search_space={search_space}: {error}") from None
        self.dataset: type[Dataset] = registry.load("dataset", dataset, "dataset")

    def sample(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """Declares the joint space (architecture, learner, training) and samples it."""
        architecture = self.space.sample_config(hp)
        if not self.trains:
            return {"architecture": architecture, "plugin": {}, "learning_rate": None}
        return {
            "architecture": architecture,
            "plugin": self.plugin.sample_config(hp),
            "learning_rate": hp.Float(
                "train/learning_rate",
                LEARNING_RATES[0],
                LEARNING_RATES[1],
                sampling="log",
                default=1e-3,
            ),
        }

    def build_learner(self, sampled: dict[str, Any], task: TaskSpec) -> MetaLearner:
        backbone = self.space.build(sampled["architecture"], task.image_shape)
        return self.plugin(backbone, sampled["plugin"], task)


def check_output_dir(config: RunConfig) -> None:
    """Fails unless the output directory can be written."""
    path = config.output_dir
    if not path:
        raise UsageError("--output_dir: must not be empty")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        raise UsageError(
            f"--output_dir: cannot write to {path} ({error.strerror or error})"
        ) from None


def check_same_run(config: RunConfig) -> None:
    """Fails if the output directory holds a run of another configuration (unless --overwrite)."""
    path = config.output_dir
    config_path = os.path.join(path, "config.json")
    if os.path.exists(config_path) and not config.overwrite:
        try:
            previous = read_json(config_path)["identity"]
        except (OSError, ValueError, KeyError):
            raise UsageError(
                f"--output_dir: {config_path} is unreadable; use --overwrite to start over"
            ) from None
        current = json.loads(json.dumps(config.identity()))
        if previous != current:
            raise UsageError(
                f"--output_dir: {path} holds a run with a different configuration "
                f"({describe_difference(previous, current)}); rerun with its flags "
                f"(--flagfile={os.path.join(path, 'flags.txt')}), another --output_dir, or --overwrite"
            )


def check_episode_shapes(config: RunConfig, splits: ClassSplits) -> None:
    """Fails if the class sets cannot supply the requested episodes."""
    needs = config.k_shot + config.n_query
    for split, class_set in splits.items():
        n_way = config.train_n_way if split == "train" else config.n_way
        flag = (
            "--train_n_way"
            if split == "train" and config.train_n_way != config.n_way
            else "--n_way"
        )
        if n_way > class_set.num_classes:
            raise UsageError(
                f"{flag}={n_way}: the meta-{split} class set of {config.dataset} has only "
                f"{class_set.num_classes} classes"
            )
        if needs > class_set.images_per_class:
            raise UsageError(
                f"--k_shot + --n_query = {needs}: the meta-{split} classes of {config.dataset} "
                f"have only {class_set.images_per_class} images each"
            )


def load_table(config: RunConfig, space: SearchSpace):
    """The tabular benchmark for `--evaluator=table`, checked against the search space."""
    from metasearch.tabular import Table

    if not config.table:
        raise UsageError("--table: --evaluator=table needs --table=PATH (a CSV of architectures)")
    if space.TABLE_KEY_COLUMN is None:
        raise UsageError(
            f"--evaluator=table: search space {config.search_space} has no tabular benchmark"
        )
    if config.max_params is not None:
        raise UsageError("--max_params: a table-scored search trains nothing to limit")
    return Table(config.table, config.table_column, space.TABLE_KEY_COLUMN)


class Job:
    """A validated search: components, data (or table), task and output directory.

    `role` is `"local"`, `"chief"` or `"worker"` (see `metasearch.distributed`).
    Workers never start over or rewrite the run's description: the chief owns it.
    """

    def __init__(self, config: RunConfig, role: str = "local"):
        self.config = config
        self.role = role
        self.trains = config.evaluator == "train"
        self.components = Components(
            config.plugin, config.search_space, config.dataset, config.space_options, self.trains
        )
        self.fixed = fixed_hyperparameters(self.components, config.fix_hparams)
        if role == "worker" and config.overwrite:
            raise UsageError(
                "--overwrite: only the chief (KERASTUNER_TUNER_ID=chief) may start over"
            )
        check_output_dir(config)
        self.table = None
        self.splits = None
        self.dataset = None
        self.regression = False
        self.channels = None
        self.normalization = (0.0, 1.0)
        self.task = None
        if self.trains:
            self._load_data()
        else:
            self.table = load_table(config, self.components.space)
        self.jit_compile = resolve_jit_compile(config.jit_compile)
        check_same_run(config)

    def _load_data(self) -> None:
        config = self.config
        options = DatasetOptions(
            data_dir=config.data_dir,
            image_size=config.image_size,
            seed=config.seed,
            options=config.dataset_options,
        )
        self.dataset = self.components.dataset(options)
        kind = self.dataset.kind
        plugin_kinds = tuple(getattr(self.components.plugin, "TASK_KINDS", ("classification",)))
        if kind not in plugin_kinds:
            raise UsageError(
                f"--plugin={config.plugin}: learns {' and '.join(plugin_kinds)} tasks, but "
                f"--dataset={config.dataset} is a {kind} data set"
            )
        if kind == REGRESSION:
            self.regression = True
            self.dataset.load()
            self.task = TaskSpec(
                n_way=1,
                k_shot=config.k_shot,
                n_query=config.n_query,
                image_shape=tuple(self.dataset.input_shape),
                kind=REGRESSION,
                target_dim=int(self.dataset.target_dim),
            )
            return
        self.splits = self.dataset.load()
        check_episode_shapes(config, self.splits)
        self.channels = int(self.components.dataset.channels)
        train_images = self.splits.train.images
        self.normalization = (float(train_images.mean()), float(train_images.std()) or 1.0)
        self.task = TaskSpec(
            n_way=config.train_n_way,
            k_shot=config.k_shot,
            n_query=config.n_query,
            image_shape=(config.image_size, config.image_size, self.channels),
        )

    @property
    def objective(self) -> tuple[str, str]:
        """keras-tuner's objective: `(name, direction)`."""
        return (REGRESSION_OBJECTIVE, "min") if self.regression else (OBJECTIVE, "max")

    def episode_stream(
        self, split: str, seed: int, stream: int, count: int | None = None
    ) -> tf.data.Dataset:
        """Episodes of one split: meta-training (`--train_n_way`, augmented) or evaluation."""
        config = self.config
        if self.regression:
            return self.dataset.episodes(
                split, config.k_shot, config.n_query, seed, stream, count=count
            )
        training = split == "train"
        return episodes.episode_dataset(
            getattr(self.splits, split),
            config.train_n_way if training else config.n_way,
            config.k_shot,
            config.n_query,
            seed,
            stream,
            count=count,
            augment=config.augment if training else "none",
        )

    def candidate_violation(self, values: dict[str, Any]) -> str | None:
        """Why a candidate breaks `--max_params` (built, not trained), or None if it fits."""
        hp = keras_tuner.HyperParameters()
        hp.values = dict(values)
        sampled = self.components.sample(hp)
        keras.backend.clear_session()
        learner = self.components.build_learner(sampled, self.task)
        build_from_shapes(learner, self.task, self.normalization)
        parameters = count_parameters(learner)
        keras.backend.clear_session()
        return over_budget(parameters, self.config.max_params)

    @property
    def project_dir(self) -> str:
        return os.path.join(self.config.output_dir, PROJECT_NAME)

    def dataset_info(self) -> dict[str, Any]:
        if not self.trains:
            return {"evaluator": "table", "table": self.config.table}
        if self.regression:
            return {
                "dataset": self.config.dataset,
                "kind": REGRESSION,
                "input_shape": list(self.task.image_shape),
                "target_dim": self.task.target_dim,
                "channels": None,
                "normalization": list(self.normalization),
            }
        return {
            "dataset": self.config.dataset,
            "channels": self.channels,
            "image_size": self.config.image_size,
            "normalization": list(self.normalization),
            "classes": {split: s.num_classes for split, s in self.splits.items()},
            "images_per_class": {split: s.images_per_class for split, s in self.splits.items()},
        }

    def start(self, flagfile: str) -> None:
        """Writes the run's description; with --overwrite, first removes the old run."""
        out = self.config.output_dir
        if self.config.overwrite:
            for entry in OWNED_ENTRIES:
                target = os.path.join(out, entry)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.exists(target):
                    os.remove(target)
        write_json_atomic(
            os.path.join(out, "config.json"),
            {"identity": self.config.identity(), "config": self.config.to_json()},
        )
        write_text_atomic(os.path.join(out, "flags.txt"), flagfile)
        write_json_atomic(os.path.join(out, "dataset.json"), self.dataset_info())


def derived_seed(seed: int, purpose: str) -> int:
    """A seed in [1, 2**31 - 1) for one use (a trial, the oracle), fixed by `--seed`.

    Never 0: keras-tuner's oracles replace a falsy seed with a random one,
    which would make `--seed=0` runs unrepeatable.
    """
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).hexdigest()
    return int(digest[:8], 16) % (2**31 - 2) + 1


class FewShotTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """keras-tuner tuner whose trial meta-trains and scores one few-shot learner.

    keras-tuner keeps the books (oracle, trial states, resume, retries,
    distribution); a trial that diverges or raises is reported with
    `FailedTrialError` and the search goes on. With `--evaluator=table` a trial
    reads its score from the table instead of training.
    """

    def __init__(self, job: Job, oracle: keras_tuner.Oracle, progress: Progress):
        self.job = job
        self.progress = progress
        if job.role != "worker" and job.config.max_params is not None:
            # Rejected candidates are never trials: the strategy proposes others.
            oracle.candidate_filter = job.candidate_violation
        super().__init__(
            oracle=oracle,
            hypermodel=job.components.sample,
            directory=job.config.output_dir,
            project_name=PROJECT_NAME,
            overwrite=False,
        )

    def search(self, *fit_args, **fit_kwargs):
        """keras-tuner's search loop; the chief serves the oracle, waiting workers sleep."""
        if self.job.role == "chief":
            self.save()
            distributed.serve(
                self.oracle,
                self.job.config.worker_timeout,
                report=lambda line: self.progress.note(line),
            )
            return
        if self.job.role == "local":
            self.oracle.verbose = 0
        self.on_search_begin()
        while True:
            self.pre_create_trial()
            trial = self.oracle.create_trial(self.tuner_id)
            if trial.status == keras_tuner.engine.trial.TrialStatus.STOPPED:
                break
            if trial.status == keras_tuner.engine.trial.TrialStatus.IDLE:
                # Others still run trials that may come back; ask again shortly.
                time.sleep(1.0)
                continue
            self.on_trial_begin(trial)
            self._try_run_and_update_trial(trial, *fit_args, **fit_kwargs)
            self.on_trial_end(trial)
        self.on_search_end()

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        # The leaderboard on disk is current after every trial, not only at the end.
        write_results(self.job.config.output_dir, self.job.config.to_json())

    def run_trial(self, trial, *args, **kwargs):
        config, space = self.job.config, self.job.components.space
        started = time.time()
        sampled = self.job.components.sample(trial.hyperparameters)
        record: dict[str, Any] = {
            "trial_id": trial.trial_id,
            "architecture": space.describe(sampled["architecture"]),
            "architecture_config": sampled["architecture"],
            "genotype": space.genotype(sampled["architecture"]),
            "plugin": config.plugin if self.job.trains else None,
            "plugin_config": sampled["plugin"],
            "hyperparameters": dict(trial.hyperparameters.values),
            "worker": self.tuner_id,
        }
        trial_dir = self.get_trial_dir(trial.trial_id)
        os.makedirs(trial_dir, exist_ok=True)
        self.progress.trial_started(trial.trial_id, record)
        heartbeat = (
            distributed.Heartbeat(self.oracle, trial.trial_id, max(1.0, config.worker_timeout / 4))
            if self.job.role == "worker"
            else contextlib.nullcontext()
        )
        try:
            with heartbeat:
                if self.job.trains:
                    metrics = self._meta_train_and_score(trial, sampled, record, trial_dir)
                else:
                    metrics = self._look_up(sampled)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:  # noqa: BLE001 - any failure fails the trial only
            record.update(
                status="FAILED",
                error=f"{type(error).__name__}: {error}",
                wall_seconds=time.time() - started,
            )
            write_json_atomic(os.path.join(trial_dir, TRIAL_RECORD), record)
            self.progress.trial_failed(trial.trial_id, record["error"])
            quiet = isinstance(error, (DivergedError, UsageError, BudgetError))
            detail = "" if quiet else "\n" + traceback.format_exc()
            raise keras_tuner.errors.FailedTrialError(record["error"] + detail) from error
        record.update(status="COMPLETED", wall_seconds=time.time() - started, **metrics)
        write_json_atomic(os.path.join(trial_dir, TRIAL_RECORD), record)
        self.progress.trial_finished(trial.trial_id, record)
        name = self.job.objective[0]
        return {name: metrics[name]}

    def _look_up(self, sampled) -> dict[str, Any]:
        key = self.job.components.space.table_key(sampled["architecture"])
        value = self.job.table.lookup(key)
        return {
            "val_accuracy": value / 100.0,
            "table_key": key,
            "table_column": self.job.config.table_column,
        }

    def _episode_budget(self, trial) -> tuple[int, int, str | None]:
        """(episodes in total, episodes already trained by the parent, parent trial id).

        Hyperband gives a trial `tuner/epochs` budget units out of
        `--hyperband_max_epochs`, and a promoted trial continues from its
        parent's weights (`tuner/trial_id`) where `tuner/initial_epoch` ended.
        """
        values = trial.hyperparameters.values
        total_episodes = self.job.config.episodes_per_trial
        if "tuner/epochs" not in values:
            return total_episodes, 0, None
        # flags.resolve always passes --hyperband_max_epochs (it has a default).
        max_epochs = self.job.config.strategy_options["max_epochs"]

        def episodes_for(epochs):
            return max(1, round(total_episodes * epochs / max_epochs))

        parent = values.get("tuner/trial_id")
        done = episodes_for(values["tuner/initial_epoch"]) if parent else 0
        return episodes_for(values["tuner/epochs"]), done, parent

    def _meta_train_and_score(self, trial, sampled, record, trial_dir) -> dict[str, Any]:
        job, config = self.job, self.job.config
        keras.backend.clear_session()
        seed = derived_seed(config.seed, f"trial {trial.trial_id}")
        keras.utils.set_random_seed(seed)
        total, done, parent = self._episode_budget(trial)
        # A step meta-trains on --meta_batch_size episodes.
        steps = max(1, math.ceil((total - done) / config.meta_batch_size))
        learner = job.components.build_learner(sampled, job.task)
        trainer = MetaTrainer(
            learner,
            job.normalization,
            learning_rate=sampled["learning_rate"],
            total_steps=steps,
            jit_compile=job.jit_compile,
            meta_batch_size=config.meta_batch_size,
        )
        train_stream = job.episode_stream("train", seed, episodes.TRAIN_STREAM)
        # One pipeline for the whole trial: its first episode builds the
        # variables, then is trained on like the rest.
        stream = iter(train_stream)
        first = next(stream)
        trainer.build(first)
        record["parameters"] = count_parameters(learner)
        violation = over_budget(record["parameters"], config.max_params)
        if violation:
            raise BudgetError(violation)
        record["flops"] = backbone_flops(learner, job.task)
        if parent:
            load_weights(learner, os.path.join(self.get_trial_dir(parent), WEIGHTS_FILE))
            record["continues_trial"] = parent
        record["episodes"] = total
        train_metrics = trainer.train(
            itertools.chain([first], stream),
            steps,
            on_progress=lambda step, loss, metric: self.progress.trial_step(
                trial.trial_id, step, steps, loss, metric
            ),
        )
        val_stream = job.episode_stream(
            "val", config.seed, episodes.VAL_STREAM, count=config.eval_episodes
        )
        scores = trainer.evaluate(val_stream, 1 if job.regression else config.n_way)
        mean, ci95 = episodes.mean_and_ci95(scores)
        if not np.isfinite(mean):
            raise DivergedError(f"meta-validation {job.objective[0]} is {mean}")
        save_weights(learner, os.path.join(trial_dir, WEIGHTS_FILE))
        return {
            job.objective[0]: mean,
            "val_ci95": ci95,
            "eval_episodes": len(scores),
            "jit_compile": job.jit_compile,
            **train_metrics,
        }


def over_budget(parameters: int, max_params: int | None) -> str | None:
    """Why `parameters` break `--max_params`, or None when they fit."""
    if max_params is not None and parameters > max_params:
        return f"{parameters:,} parameters > --max_params={max_params:,}"
    return None


class BudgetError(Exception):
    """A candidate over `--max_params` reached training (the oracle should have rejected it)."""


def backbone_flops(learner: MetaLearner, task: TaskSpec) -> int | None:
    """FLOPs of the backbone on one image; None when the estimate cannot be made."""
    try:
        return estimate_flops(learner.backbone, task.image_shape)
    except Exception:  # noqa: BLE001 - an estimate must never fail a trial
        return None


def save_weights(learner: MetaLearner, path: str) -> None:
    arrays = {f"w{index:04d}": np.asarray(v.numpy()) for index, v in enumerate(learner.weights)}
    names = np.array([v.path for v in learner.weights])
    temporary = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(temporary, __names__=names, **arrays)
    os.replace(temporary, path)


def load_weights(learner: MetaLearner, path: str) -> None:
    with np.load(path) as stored:
        names = list(stored["__names__"])
        weights = learner.weights
        if len(names) != len(weights):
            raise UsageError(f"{path}: holds {len(names)} weights, the learner has {len(weights)}")
        for index, variable in enumerate(weights):
            variable.assign(stored[f"w{index:04d}"])


def fixed_hyperparameters(
    components: Components, fixed: dict[str, Any]
) -> keras_tuner.HyperParameters:
    """A `HyperParameters` holding `fixed` values; unknown names fail with the known ones."""
    space = keras_tuner.HyperParameters()
    components.sample(space)
    known = {hp.name: hp for hp in space.space}
    hp = keras_tuner.HyperParameters()
    for name, value in fixed.items():
        if name not in known:
            raise UsageError(
                f"--fix_hparams: unknown hyperparameter {name!r}; known: {', '.join(sorted(known))}"
            )
        declared = known[name]
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


def make_oracle(
    strategy: str,
    max_trials: int,
    seed: int,
    hyperparameters: keras_tuner.HyperParameters | None = None,
    options: dict[str, Any] | None = None,
    objective: tuple[str, str] = (OBJECTIVE, "max"),
) -> keras_tuner.Oracle:
    """The `--strategy` oracle, seeded from `--seed`, able to serve a distributed search."""
    oracle = strategies.make_oracle(
        strategy,
        objective=keras_tuner.Objective(*objective),
        max_trials=max_trials,
        seed=derived_seed(seed, "oracle"),
        hyperparameters=hyperparameters,
        options=options or {},
    )
    return distributed.with_liveness(oracle)


def collect_results(job_dir: str) -> list[dict[str, Any]]:
    """Every trial of the run: keras-tuner's status merged with our record."""
    project = os.path.join(job_dir, PROJECT_NAME)
    results = []
    if not os.path.isdir(project):
        return results
    for entry in sorted(os.listdir(project)):
        trial_file = os.path.join(project, entry, "trial.json")
        if not entry.startswith("trial_") or not os.path.exists(trial_file):
            continue
        trial = read_json(trial_file)
        record_path = os.path.join(project, entry, TRIAL_RECORD)
        record = read_json(record_path) if os.path.exists(record_path) else {}
        status = trial.get("status", "UNKNOWN")
        merged = {
            "trial_id": trial["trial_id"],
            "status": status,
            "hyperparameters": trial.get("hyperparameters", {}).get("values", {}),
        }
        if status in ("COMPLETED", "FAILED", "INVALID"):
            merged.update({k: v for k, v in record.items() if k != "status"})
        if status != "COMPLETED":
            merged.pop("val_accuracy", None)
            merged.pop(REGRESSION_OBJECTIVE, None)
            if trial.get("message") and "error" not in merged:
                merged["error"] = trial["message"].strip().splitlines()[-1]
        results.append(merged)
    return results


def trial_score(record: dict[str, Any]) -> float | None:
    """Higher is better: the validation accuracy, or minus the validation MSE."""
    if record.get("val_accuracy") is not None:
        return float(record["val_accuracy"])
    if record.get(REGRESSION_OBJECTIVE) is not None:
        return -float(record[REGRESSION_OBJECTIVE])
    return None


def scored_by_mse(results: list[dict[str, Any]]) -> bool:
    """Whether the run's trials are regression trials, scored by validation MSE."""
    return any(REGRESSION_OBJECTIVE in r for r in results)


def best_trial(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    completed = [r for r in results if r["status"] == "COMPLETED" and trial_score(r) is not None]
    if not completed:
        return None
    return max(completed, key=lambda r: (trial_score(r), -int(r["trial_id"])))


def leaderboard(results: list[dict[str, Any]], config: dict[str, Any]) -> str:
    """A plain-text table of trials, best first."""
    if config.get("evaluator") == "table":
        title = (
            f"Leaderboard: {config['search_space']} scored from {config['table']} "
            f"(column {config['table_column']})"
        )
    elif scored_by_mse(results):
        title = (
            f"Leaderboard: {config['plugin']} on {config['dataset']}, {config['k_shot']}-shot "
            "meta-validation mean squared error (mean ± 95% CI, lower is better)"
        )
    else:
        title = (
            f"Leaderboard: {config['plugin']} on {config['dataset']}, {config['n_way']}-way "
            f"{config['k_shot']}-shot meta-validation accuracy (mean ± 95% CI)"
        )
    ordered = sorted(
        results,
        key=lambda r: (
            r["status"] != "COMPLETED",
            -(trial_score(r) if trial_score(r) is not None else -math.inf),
            r["trial_id"],
        ),
    )
    column = "val MSE" if scored_by_mse(results) else "val accuracy"
    header = f"{'rank':>4}  {'trial':>5}  {'status':<9}  {column:>16}  {'params':>9}  {'FLOPs':>7}  {'time':>7}  architecture / learner"
    lines = [title, header, "-" * len(header)]
    for rank, r in enumerate(ordered, start=1):
        if r["status"] == "COMPLETED" and r.get(REGRESSION_OBJECTIVE) is not None:
            score = f"{r[REGRESSION_OBJECTIVE]:.4f} ± {r.get('val_ci95', 0.0):.4f}"
        elif r["status"] == "COMPLETED" and "val_accuracy" in r:
            score = f"{100 * r['val_accuracy']:6.2f}"
            score += f" ± {100 * r['val_ci95']:5.2f}%" if "val_ci95" in r else "%"
        else:
            score = "-"
        params = f"{r['parameters']:,}" if r.get("parameters") is not None else "-"
        flops = format_flops(r["flops"]) if r.get("flops") else "-"
        wall = f"{r['wall_seconds']:.0f}s" if "wall_seconds" in r else "-"
        learner = ", ".join(f"{k}={v}" for k, v in sorted(r.get("plugin_config", {}).items()))
        lr = r.get("hyperparameters", {}).get("train/learning_rate")
        learner += f", lr={lr:.1e}" if isinstance(lr, float) else ""
        what = f"{r.get('architecture', '?')}" + (f" / {learner}" if learner else "")
        if r["status"] != "COMPLETED" and r.get("error"):
            what += f"  [{r['error'][:80]}]"
        lines.append(
            f"{rank:>4}  {r['trial_id']:>5}  {r['status']:<9}  {score:>16}  {params:>9}  {flops:>7}  {wall:>7}  {what}"
        )
    return "\n".join(lines) + "\n"


def write_results(job_dir: str, config: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    results = collect_results(job_dir)
    best = best_trial(results)
    write_json_atomic(
        os.path.join(job_dir, "results.json"),
        {
            "objective": REGRESSION_OBJECTIVE if scored_by_mse(results) else OBJECTIVE,
            "best_trial": best["trial_id"] if best else None,
            "trials": results,
        },
    )
    board = leaderboard(results, config)
    write_text_atomic(os.path.join(job_dir, "leaderboard.txt"), board)
    return results, board


def versions() -> dict[str, str]:
    return {
        "metasearch": metasearch.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_tuner": keras_tuner.__version__,
        "python": platform.python_version(),
    }


def choose_trial(output_dir: str, trial_id: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The finished trial `trial_id` (or the best) of a run; UsageError if there is none."""
    if trial_id == "best":
        chosen = best_trial(results)
        if chosen is None:
            raise UsageError(f"--trial=best: no completed trial in {output_dir}")
        return chosen
    matches = [r for r in results if r["trial_id"] == trial_id]
    if not matches:
        known = ", ".join(r["trial_id"] for r in results) or "none"
        raise UsageError(f"--trial={trial_id}: no such trial in {output_dir} (trials: {known})")
    if matches[0]["status"] != "COMPLETED":
        raise UsageError(f"--trial={trial_id}: the trial is {matches[0]['status']}, not COMPLETED")
    return matches[0]


EXPORT_KINDS = ("learner", "cell")
LEARNER_SIGNATURES = {
    "few_shot": "few_shot(support_images [s,h,w,c] float32 in [0,1], support_labels [s] int32, "
    "query_images [q,h,w,c] float32 in [0,1]) -> {'logits': [q, num_classes]}",
    "embed": "embed(images [n,h,w,c] float32 in [0,1]) -> {'embeddings': [n, d]}",
}
REGRESSION_SIGNATURES = {
    "adapt_and_predict": "adapt_and_predict(support_x [s, *input_shape] float32, support_y "
    "[s, t] float32, query_x [q, *input_shape] float32) -> {'predictions': [q, t]}",
    "embed": "embed(x [n, *input_shape] float32) -> {'embeddings': [n, d]}",
}


SAMPLE_SIGNATURE = (
    "sample(images [k,h,w,c] float32 in [0,1], num_samples int32, seed [2] int32) -> "
    "{'images': [num_samples, image_size, image_size, c] in [0,1]}"
)


def learner_signatures(learner: MetaLearner, task: TaskSpec) -> dict[str, str]:
    """What the exported learner's signatures take and return, for its metadata."""
    if task.is_regression:
        return dict(REGRESSION_SIGNATURES)
    signatures = dict(LEARNER_SIGNATURES)
    if learner.GENERATIVE:
        signatures["sample"] = SAMPLE_SIGNATURE
    return signatures


class FinishedRun:
    """A run read back from its output directory, to rebuild and use its trials.

    `config` is the resolved configuration the run wrote (`config.json`), `data`
    its data description (`dataset.json`: normalisation, channels or, for
    regression, input shape), `components` the registered classes it used.
    Table-scored runs are refused: their trials have no weights.
    """

    def __init__(self, output_dir: str):
        config_path = os.path.join(output_dir, "config.json")
        if not os.path.exists(config_path):
            raise UsageError(f"--output_dir: {output_dir} holds no metasearch run (no config.json)")
        config = read_json(config_path)["config"]
        if config.get("evaluator", "train") != "train":
            raise UsageError(
                f"--output_dir: {output_dir} was scored from a table; its trials have no weights "
                "to export (their genotypes are in results.json)"
            )
        self.output_dir = output_dir
        self.config: dict[str, Any] = config
        self.data: dict[str, Any] = read_json(os.path.join(output_dir, "dataset.json"))
        self.components = Components(
            config["plugin"], config["search_space"], config["dataset"], config.get("space_options")
        )

    def trial(self, trial_id: str) -> dict[str, Any]:
        """The finished trial `trial_id` (or `"best"`), as its results record."""
        return choose_trial(self.output_dir, trial_id, collect_results(self.output_dir))

    def dataset_options(self, data_dir: str | None = None) -> DatasetOptions:
        """The options the run loaded its data set with; `data_dir` overrides its own."""
        return DatasetOptions(
            data_dir=data_dir or self.config.get("data_dir"),
            image_size=self.config["image_size"],
            seed=self.config["seed"],
            options=self.config.get("dataset_options", {}),
        )

    def rebuild(self, chosen: dict[str, Any]) -> tuple[MetaLearner, TaskSpec]:
        """The learner of trial record `chosen` with its trained weights, and its task."""
        config, data = self.config, self.data
        weights_path = os.path.join(
            self.output_dir, PROJECT_NAME, f"trial_{chosen['trial_id']}", WEIGHTS_FILE
        )
        if not os.path.exists(weights_path):
            raise UsageError(
                f"--trial={chosen['trial_id']}: its weights are missing ({weights_path})"
            )
        if data.get("kind") == REGRESSION:
            task = TaskSpec(
                n_way=1,
                k_shot=config["k_shot"],
                n_query=config["n_query"],
                image_shape=tuple(data["input_shape"]),
                kind=REGRESSION,
                target_dim=data["target_dim"],
            )
        else:
            task = TaskSpec(
                n_way=config["train_n_way"],
                k_shot=config["k_shot"],
                n_query=config["n_query"],
                image_shape=(config["image_size"], config["image_size"], data["channels"]),
            )
        sampled = {
            "architecture": chosen["architecture_config"],
            "plugin": chosen["plugin_config"],
            "learning_rate": chosen["hyperparameters"].get("train/learning_rate", 1e-3),
        }
        keras.backend.clear_session()
        learner = self.components.build_learner(sampled, task)
        build_from_shapes(learner, task, data["normalization"])
        load_weights(learner, weights_path)
        return learner, task


def restore_trial(output_dir: str, trial_id: str = "best"):
    """Rebuilds a finished trial's learner with its trained weights.

    Returns `(learner, search space, architecture config)`; `trial_id` may be
    `"best"`. The run's description (`config.json`, `dataset.json`) says how.
    """
    run = FinishedRun(output_dir)
    chosen = run.trial(trial_id)
    learner, _ = run.rebuild(chosen)
    return learner, run.components.space, chosen["architecture_config"]


def export_trial(
    output_dir: str,
    trial_id: str = "best",
    export_dir: str | None = None,
    what: str = "learner",
) -> str:
    """Rebuilds a finished trial from its output directory and exports it; returns the path.

    `what="learner"` writes the few-shot learner SavedModel; `what="cell"` the
    search space's cells (one signature each) with the weights they were
    trained with, the genotype JSON and a picture of each cell.
    """
    if what not in EXPORT_KINDS:
        raise UsageError(f"--what: unknown {what!r}; known: {', '.join(EXPORT_KINDS)}")
    return export_kinds(output_dir, trial_id, (what,), export_dir)[what]


def export_kinds(
    output_dir: str,
    trial_id: str,
    kinds: tuple[str, ...],
    export_dir: str | None = None,
) -> dict[str, str]:
    """Exports each of `kinds` of one trial, rebuilding its learner once; returns the paths.

    `export_dir` (for a single kind) replaces the default `RUN/export/{best,trial_ID}_KIND`.
    """
    run = FinishedRun(output_dir)
    config, data, components = run.config, run.data, run.components
    chosen = run.trial(trial_id)
    if "cell" in kinds and not components.space.cell_graphs(chosen["architecture_config"]):
        raise UsageError(
            f"--what=cell: search space {config['search_space']} has no cells; "
            "export the learner (--what=learner)"
        )
    learner, task = run.rebuild(chosen)
    metadata = {
        "format": 1,
        "trial_id": chosen["trial_id"],
        "plugin": config["plugin"],
        "plugin_config": chosen["plugin_config"],
        "search_space": config["search_space"],
        "space_options": config.get("space_options", {}),
        "architecture": chosen.get("architecture"),
        "architecture_config": chosen["architecture_config"],
        "genotype": components.space.genotype(chosen["architecture_config"]),
        "hyperparameters": chosen["hyperparameters"],
        "dataset": config["dataset"],
        "channels": data["channels"],
        "image_size": config["image_size"],
        "normalization": data["normalization"],
        "meta_training_task": {"n_way": task.n_way, "k_shot": task.k_shot, "n_query": task.n_query},
        "metrics": {
            "val_accuracy": chosen.get("val_accuracy"),
            REGRESSION_OBJECTIVE: chosen.get(REGRESSION_OBJECTIVE),
            "val_ci95": chosen.get("val_ci95"),
            "eval_n_way": config["n_way"],
            "eval_k_shot": config["k_shot"],
            "parameters": chosen.get("parameters"),
            "flops": chosen.get("flops"),
        },
        "versions": versions(),
    }
    name = "best" if trial_id == "best" else f"trial_{chosen['trial_id']}"
    paths = {}
    for what in kinds:
        target = export_dir or os.path.join(output_dir, "export", f"{name}_{what}")
        if what == "cell":
            paths[what] = _export_cells(
                components.space, chosen["architecture_config"], learner, target, metadata
            )
            continue
        paths[what] = export_learner(
            learner,
            target,
            image_size=config["image_size"],
            channels=data["channels"],
            normalization=tuple(data["normalization"]),
            metadata={
                **metadata,
                "signatures": learner_signatures(learner, task),
            },
        )
    return paths


def _export_cells(space: SearchSpace, architecture, learner, export_dir, metadata) -> str:
    cells = space.cells(architecture, learner.backbone)
    graphs = space.cell_graphs(architecture)
    metadata = dict(metadata)
    metadata["signatures"] = {
        name: f"{name}({', '.join(cell_input_names(cell))}) -> {{'output': cell output}}; "
        "float32 feature maps of the shapes the cell was trained on, any batch size"
        for name, cell in cells.items()
    }
    with tempfile.TemporaryDirectory() as scratch:
        pictures = {}
        for graph in graphs:
            picture = os.path.join(scratch, f"{graph.name}.png")
            plots.draw_cell(graph, picture, title=f"{metadata['architecture']}: {graph.name} cell")
            pictures[f"{graph.name}.png"] = picture
        return export_cells(cells, export_dir, metadata["genotype"], metadata, pictures)


def build_from_shapes(learner: MetaLearner, task: TaskSpec, normalization) -> None:
    """Creates a learner's variables from zero-filled episodes of the task's shape."""
    shape = task.image_shape
    if task.is_regression:
        episode = episodes.Episode(
            support_images=tf.zeros([task.k_shot, *shape]),
            support_labels=tf.zeros([task.k_shot, task.target_dim]),
            query_images=tf.zeros([task.n_query, *shape]),
            query_labels=tf.zeros([task.n_query, task.target_dim]),
        )
        MetaTrainer(learner, normalization, 1e-3, 1, jit_compile=False).build(episode)
        return
    labels = tf.range(task.n_way, dtype=tf.int32)
    episode = episodes.Episode(
        support_images=tf.zeros([task.n_way * task.k_shot, *shape]),
        support_labels=tf.repeat(labels, task.k_shot),
        query_images=tf.zeros([task.n_way * task.n_query, *shape]),
        query_labels=tf.repeat(labels, task.n_query),
    )
    # Building runs no optimiser step, so the zeros change no weights that matter:
    # every weight is overwritten from the trial's file right after.
    MetaTrainer(learner, normalization, 1e-3, 1, jit_compile=False).build(episode)


def search(config: RunConfig, flagfile: str, out=sys.stdout) -> dict[str, Any]:
    """Runs (or resumes, or joins as a worker) a search; returns a summary.

    The summary holds the results, the leaderboard and the export paths. In a
    distributed search (see `metasearch.distributed`) the chief serves the
    oracle and exports at the end; workers only run trials.
    """
    role = distributed.role()
    job = Job(config, role)
    if role != "worker":
        job.start(flagfile)
    progress = Progress(
        config.max_trials,
        enabled=config.progress,
        stream=out,
        metric="mse" if job.regression else "accuracy",
    )
    oracle = make_oracle(
        config.strategy,
        config.max_trials,
        config.seed,
        job.fixed,
        config.strategy_options,
        objective=job.objective,
    )
    tuner = FewShotTuner(job, oracle, progress)
    done = 0
    if role != "worker":
        done = sum(1 for t in tuner.oracle.trials.values() if t.status != "RUNNING")
    progress.search_started(config, job.jit_compile, done=done, role=role)
    try:
        tuner.search()
    except RuntimeError as error:
        if "consecutive failures" not in str(error):
            raise
        out.write(f"search stopped: {str(error).splitlines()[0]}\n")
    results, board = write_results(config.output_dir, config.to_json())
    summary: dict[str, Any] = {
        "results": results,
        "leaderboard": board,
        "export_dir": None,
        "cell_export_dir": None,
    }
    if role == "worker":
        out.write(f"worker {tuner.tuner_id}: no trials left\n")
        out.flush()
        return summary
    rejected = getattr(oracle, "rejected", None)
    if rejected:
        out.write(f"{len(rejected)} candidates over --max_params were rejected before training\n")
    if getattr(oracle, "stop_reason", None):
        out.write(f"search stopped early: {oracle.stop_reason}\n")
    out.write("\n" + board)
    picture = os.path.join(config.output_dir, PROGRESS_PICTURE)
    scored_by = config.plugin if job.trains else f"table {config.table_column}"
    plots.plot_search_progress(
        results, picture, title=f"{config.search_space} / {scored_by} / {config.strategy}"
    )
    out.write(f"\nSearch progress plotted in {picture}\n")
    best = best_trial(results)
    if best is None:
        out.write("No trial completed; nothing exported.\n")
    elif not job.trains:
        out.write(
            f"Best architecture: trial {best['trial_id']}, {best.get('architecture')}; "
            "table-scored trials have no weights to export.\n"
        )
    else:
        has_cells = bool(job.components.space.cell_graphs(best["architecture_config"]))
        paths = export_kinds(
            config.output_dir, "best", ("learner", "cell") if has_cells else ("learner",)
        )
        summary["export_dir"] = paths["learner"]
        out.write(f"Best learner exported to {paths['learner']}\n")
        if has_cells:
            summary["cell_export_dir"] = paths["cell"]
            out.write(f"Best cell exported to {paths['cell']}\n")
    out.flush()
    return summary
