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

import hashlib
import itertools
import json
import os
import platform
import shutil
import sys
import time
import traceback
from typing import Any

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

import metasearch
from metasearch import registry
from metasearch.api import ClassSplits, Dataset, DatasetOptions, MetaLearner, SearchSpace, TaskSpec
from metasearch.data import episodes
from metasearch.errors import UsageError
from metasearch.export import export_learner
from metasearch.flags import RunConfig, describe_difference
from metasearch.progress import Progress
from metasearch.training import DivergedError, MetaTrainer, count_parameters, resolve_jit_compile

PROJECT_NAME = "keras_tuner"
OBJECTIVE = "val_accuracy"
TRIAL_RECORD = "metasearch_trial.json"
WEIGHTS_FILE = "learner.weights.npz"
# Everything metasearch writes into an output directory (and --overwrite removes).
OWNED_ENTRIES = (
    "config.json",
    "flags.txt",
    "dataset.json",
    PROJECT_NAME,
    "results.json",
    "leaderboard.txt",
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
    ):
        self.plugin_name, self.space_name, self.dataset_name = plugin, search_space, dataset
        self.plugin: type[MetaLearner] = registry.load("plugin", plugin, "plugin")
        space_class: type[SearchSpace] = registry.load("search_space", search_space, "search_space")
        try:
            self.space: SearchSpace = space_class(space_options or {})
        except ValueError as error:
            raise UsageError(f"--search_space={search_space}: {error}") from None
        self.dataset: type[Dataset] = registry.load("dataset", dataset, "dataset")

    def sample(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """Declares the joint space (architecture, learner, training) and samples it."""
        return {
            "architecture": self.space.sample_config(hp),
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


class Job:
    """A validated search: components, data, task and output directory."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.components = Components(config.plugin, config.search_space, config.dataset)
        self.fixed = fixed_hyperparameters(self.components, config.fix_hparams)
        check_output_dir(config)
        options = DatasetOptions(
            data_dir=config.data_dir,
            image_size=config.image_size,
            seed=config.seed,
            options=config.dataset_options,
        )
        self.splits = self.components.dataset(options).load()
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
        self.jit_compile = resolve_jit_compile(config.jit_compile)
        check_same_run(config)

    @property
    def project_dir(self) -> str:
        return os.path.join(self.config.output_dir, PROJECT_NAME)

    def dataset_info(self) -> dict[str, Any]:
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

    keras-tuner keeps the books (oracle, trial states, resume, retries); a
    trial that diverges or raises is reported with `FailedTrialError` and the
    search goes on.
    """

    def __init__(self, job: Job, oracle: keras_tuner.Oracle, progress: Progress):
        self.job = job
        self.progress = progress
        super().__init__(
            oracle=oracle,
            hypermodel=job.components.sample,
            directory=job.config.output_dir,
            project_name=PROJECT_NAME,
            overwrite=False,
        )

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        # The leaderboard on disk is current after every trial, not only at the end.
        write_results(self.job.config.output_dir, self.job.config.to_json())

    def run_trial(self, trial, *args, **kwargs):
        config = self.job.config
        started = time.time()
        sampled = self.job.components.sample(trial.hyperparameters)
        record: dict[str, Any] = {
            "trial_id": trial.trial_id,
            "architecture": self.job.components.space.describe(sampled["architecture"]),
            "architecture_config": sampled["architecture"],
            "plugin": config.plugin,
            "plugin_config": sampled["plugin"],
            "hyperparameters": dict(trial.hyperparameters.values),
        }
        trial_dir = self.get_trial_dir(trial.trial_id)
        os.makedirs(trial_dir, exist_ok=True)
        self.progress.trial_started(trial.trial_id, record)
        try:
            metrics = self._meta_train_and_score(trial, sampled, record, trial_dir)
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
            detail = "" if isinstance(error, DivergedError) else "\n" + traceback.format_exc()
            raise keras_tuner.errors.FailedTrialError(record["error"] + detail) from error
        record.update(status="COMPLETED", wall_seconds=time.time() - started, **metrics)
        write_json_atomic(os.path.join(trial_dir, TRIAL_RECORD), record)
        self.progress.trial_finished(trial.trial_id, record)
        return {OBJECTIVE: metrics["val_accuracy"]}

    def _meta_train_and_score(self, trial, sampled, record, trial_dir) -> dict[str, Any]:
        job, config = self.job, self.job.config
        keras.backend.clear_session()
        seed = derived_seed(config.seed, f"trial {trial.trial_id}")
        keras.utils.set_random_seed(seed)
        learner = job.components.build_learner(sampled, job.task)
        trainer = MetaTrainer(
            learner,
            job.normalization,
            learning_rate=sampled["learning_rate"],
            total_steps=config.episodes_per_trial,
            jit_compile=job.jit_compile,
        )
        train_stream = episodes.episode_dataset(
            job.splits.train,
            config.train_n_way,
            config.k_shot,
            config.n_query,
            seed,
            episodes.TRAIN_STREAM,
            augment=config.augment,
        )
        # One pipeline for the whole trial: its first episode builds the
        # variables, then is trained on like the rest.
        stream = iter(train_stream)
        first = next(stream)
        trainer.build(first)
        record["parameters"] = count_parameters(learner)
        train_metrics = trainer.train(
            itertools.chain([first], stream),
            config.episodes_per_trial,
            on_progress=lambda step, loss, acc: self.progress.trial_step(
                trial.trial_id, step, config.episodes_per_trial, loss, acc
            ),
        )
        val_stream = episodes.episode_dataset(
            job.splits.val,
            config.n_way,
            config.k_shot,
            config.n_query,
            config.seed,
            episodes.VAL_STREAM,
            count=config.eval_episodes,
        )
        accuracies = trainer.evaluate(val_stream, config.n_way)
        mean, ci95 = episodes.mean_and_ci95(accuracies)
        save_weights(learner, os.path.join(trial_dir, WEIGHTS_FILE))
        return {
            "val_accuracy": mean,
            "val_ci95": ci95,
            "eval_episodes": len(accuracies),
            "jit_compile": job.jit_compile,
            **train_metrics,
        }


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
) -> keras_tuner.Oracle:
    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    common = dict(
        objective=objective,
        max_trials=max_trials,
        seed=derived_seed(seed, "oracle"),
        hyperparameters=hyperparameters,
    )
    if strategy == "random":
        return keras_tuner.oracles.RandomSearchOracle(**common)
    if strategy == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(**common)
    if strategy == "grid":
        return keras_tuner.oracles.GridSearchOracle(**common)
    raise UsageError(f"--strategy: unknown strategy {strategy!r}; known: random, bayesian, grid")


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
            if trial.get("message") and "error" not in merged:
                merged["error"] = trial["message"].strip().splitlines()[-1]
        results.append(merged)
    return results


def best_trial(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    completed = [r for r in results if r["status"] == "COMPLETED" and "val_accuracy" in r]
    if not completed:
        return None
    return max(completed, key=lambda r: (r["val_accuracy"], -int(r["trial_id"])))


def leaderboard(results: list[dict[str, Any]], config: dict[str, Any]) -> str:
    """A plain-text table of trials, best first."""
    title = (
        f"Leaderboard: {config['plugin']} on {config['dataset']}, {config['n_way']}-way "
        f"{config['k_shot']}-shot meta-validation accuracy (mean ± 95% CI)"
    )
    ordered = sorted(
        results,
        key=lambda r: (r["status"] != "COMPLETED", -r.get("val_accuracy", 0.0), r["trial_id"]),
    )
    header = f"{'rank':>4}  {'trial':>5}  {'status':<9}  {'val accuracy':>16}  {'params':>9}  {'time':>7}  architecture / learner"
    lines = [title, header, "-" * len(header)]
    for rank, r in enumerate(ordered, start=1):
        if r["status"] == "COMPLETED" and "val_accuracy" in r:
            score = f"{100 * r['val_accuracy']:6.2f} ± {100 * r.get('val_ci95', 0):5.2f}%"
        else:
            score = "-"
        params = f"{r['parameters']:,}" if "parameters" in r else "-"
        wall = f"{r['wall_seconds']:.0f}s" if "wall_seconds" in r else "-"
        learner = ", ".join(f"{k}={v}" for k, v in sorted(r.get("plugin_config", {}).items()))
        lr = r.get("hyperparameters", {}).get("train/learning_rate")
        learner += f", lr={lr:.1e}" if isinstance(lr, float) else ""
        what = f"{r.get('architecture', '?')} / {learner}"
        if r["status"] != "COMPLETED" and r.get("error"):
            what += f"  [{r['error'][:80]}]"
        lines.append(
            f"{rank:>4}  {r['trial_id']:>5}  {r['status']:<9}  {score:>16}  {params:>9}  {wall:>7}  {what}"
        )
    return "\n".join(lines) + "\n"


def write_results(job_dir: str, config: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    results = collect_results(job_dir)
    best = best_trial(results)
    write_json_atomic(
        os.path.join(job_dir, "results.json"),
        {
            "objective": OBJECTIVE,
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


def export_trial(output_dir: str, trial_id: str = "best", export_dir: str | None = None) -> str:
    """Rebuilds a finished trial from its output directory and exports it; returns the path."""
    config_path = os.path.join(output_dir, "config.json")
    if not os.path.exists(config_path):
        raise UsageError(f"--output_dir: {output_dir} holds no metasearch run (no config.json)")
    config = read_json(config_path)["config"]
    data = read_json(os.path.join(output_dir, "dataset.json"))
    results = collect_results(output_dir)
    if trial_id == "best":
        chosen = best_trial(results)
        if chosen is None:
            raise UsageError(f"--trial=best: no completed trial in {output_dir}")
    else:
        matches = [r for r in results if r["trial_id"] == trial_id]
        if not matches:
            known = ", ".join(r["trial_id"] for r in results) or "none"
            raise UsageError(f"--trial={trial_id}: no such trial in {output_dir} (trials: {known})")
        chosen = matches[0]
        if chosen["status"] != "COMPLETED":
            raise UsageError(f"--trial={trial_id}: the trial is {chosen['status']}, not COMPLETED")
    weights_path = os.path.join(
        output_dir, PROJECT_NAME, f"trial_{chosen['trial_id']}", WEIGHTS_FILE
    )
    if not os.path.exists(weights_path):
        raise UsageError(f"--trial={chosen['trial_id']}: its weights are missing ({weights_path})")

    components = Components(config["plugin"], config["search_space"], config["dataset"])
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
    learner = components.build_learner(sampled, task)
    build_from_shapes(learner, task, data["normalization"])
    load_weights(learner, weights_path)
    metadata = {
        "format": 1,
        "trial_id": chosen["trial_id"],
        "plugin": config["plugin"],
        "plugin_config": chosen["plugin_config"],
        "search_space": config["search_space"],
        "architecture": chosen.get("architecture"),
        "architecture_config": chosen["architecture_config"],
        "hyperparameters": chosen["hyperparameters"],
        "dataset": config["dataset"],
        "channels": data["channels"],
        "image_size": config["image_size"],
        "normalization": data["normalization"],
        "meta_training_task": {"n_way": task.n_way, "k_shot": task.k_shot, "n_query": task.n_query},
        "metrics": {
            "val_accuracy": chosen.get("val_accuracy"),
            "val_ci95": chosen.get("val_ci95"),
            "eval_n_way": config["n_way"],
            "eval_k_shot": config["k_shot"],
            "parameters": chosen.get("parameters"),
        },
        "signatures": {
            "few_shot": "few_shot(support_images [s,h,w,c] float32 in [0,1], support_labels [s] int32, "
            "query_images [q,h,w,c] float32 in [0,1]) -> {'logits': [q, num_classes]}",
            "embed": "embed(images [n,h,w,c] float32 in [0,1]) -> {'embeddings': [n, d]}",
        },
        "versions": versions(),
    }
    if export_dir is None:
        name = "best_learner" if trial_id == "best" else f"trial_{chosen['trial_id']}_learner"
        export_dir = os.path.join(output_dir, "export", name)
    return export_learner(
        learner,
        export_dir,
        image_size=config["image_size"],
        channels=data["channels"],
        normalization=tuple(data["normalization"]),
        metadata=metadata,
    )


def build_from_shapes(learner: MetaLearner, task: TaskSpec, normalization) -> None:
    """Creates a learner's variables from zero-filled episodes of the task's shape."""
    shape = task.image_shape
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
    """Runs (or resumes) a search; returns a summary with the leaderboard and export path."""
    job = Job(config)
    job.start(flagfile)
    progress = Progress(config.max_trials, enabled=config.progress, stream=out)
    oracle = make_oracle(config.strategy, config.max_trials, config.seed, job.fixed)
    tuner = FewShotTuner(job, oracle, progress)
    progress.search_started(
        config,
        job.jit_compile,
        done=sum(1 for t in tuner.oracle.trials.values() if t.status != "RUNNING"),
    )
    try:
        tuner.search(verbose=0)
    except RuntimeError as error:
        if "consecutive failures" not in str(error):
            raise
        out.write(f"search stopped: {str(error).splitlines()[0]}\n")
    results, board = write_results(config.output_dir, config.to_json())
    out.write("\n" + board)
    summary: dict[str, Any] = {"results": results, "leaderboard": board, "export_dir": None}
    if best_trial(results) is not None:
        path = export_trial(config.output_dir, "best")
        summary["export_dir"] = path
        out.write(f"\nBest learner exported to {path}\n")
    else:
        out.write("\nNo trial completed; nothing exported.\n")
    out.flush()
    return summary
