"""The run folder: its layout, the one atomic writer, trial weights and reading a run back.

Everything metasearch writes into an output directory goes through `RunDir`
(or `write_atomic` for files outside it), through a temporary file beside the
target and a rename, so a crash never leaves half a file.

Layout:
    config.json       the resolved configuration (checked when resuming)
    flags.txt         a flagfile that repeats the run
    dataset.json      channels, normalisation and class-set sizes
    keras_tuner/      keras-tuner's project (oracle, trials) plus per trial
                      `learner.weights.npz` and `metasearch_trial.json`
    results.json      every trial: architecture, hyperparameters, score with
                      95% CI, parameters, wall time, status
    leaderboard.txt   the printed leaderboard
    search_progress.png
    export/           best_learner/, best_cell/ (SavedModels)
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from typing import Any

import keras
import numpy as np

from metasearch.components import Components
from metasearch.errors import UsageError
from metasearch.tasks import OBJECTIVES, kind_of_record

PROJECT_NAME = "keras_tuner"
CONFIG_FILE = "config.json"
FLAGS_FILE = "flags.txt"
DATASET_FILE = "dataset.json"
RESULTS_FILE = "results.json"
LEADERBOARD_FILE = "leaderboard.txt"
PROGRESS_PICTURE = "search_progress.png"
EXPORT_DIR = "export"
TRIAL_RECORD = "metasearch_trial.json"
WEIGHTS_FILE = "learner.weights.npz"
# Everything metasearch writes into an output directory (and --overwrite removes).
OWNED_ENTRIES = (
    CONFIG_FILE,
    FLAGS_FILE,
    DATASET_FILE,
    PROJECT_NAME,
    RESULTS_FILE,
    LEADERBOARD_FILE,
    PROGRESS_PICTURE,
    EXPORT_DIR,
)
FINISHED = ("COMPLETED", "FAILED", "INVALID")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")


def json_text(value: Any) -> str:
    """`value` as the run folder's JSON: indented, sorted keys, numpy scalars as numbers."""
    return json.dumps(value, indent=2, sort_keys=True, default=_json_default) + "\n"


def write_atomic(path: str, data: str | bytes) -> str:
    """Writes `data` to `path` through a flushed temporary file and a rename; returns `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=directory)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data.encode("utf-8") if isinstance(data, str) else data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


# --------------------------------------------------------------------------- weights


def _weight_keys(names: list[str]) -> list[str]:
    """Each variable's name, with `#k` after the k-th repeat (Keras may reuse a path)."""
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        keys.append(name if count == 0 else f"{name}#{count}")
    return keys


def save_weights(variables, path: str) -> None:
    """Saves variables by name (`variable.path`) into one `.npz`, atomically."""
    arrays = {f"w{index:04d}": np.asarray(v.numpy()) for index, v in enumerate(variables)}
    names = np.array([v.path for v in variables])
    buffer = io.BytesIO()
    np.savez(buffer, __names__=names, **arrays)
    write_atomic(path, buffer.getvalue())


def load_weights(variables, path: str) -> None:
    """Assigns the weights saved by `save_weights`, matched by name and shape.

    A name Keras gives twice is matched by its order among those of that
    name. Fails naming the file when a variable is missing from it, is extra
    in it, or has another shape: a learner built differently from the one saved.
    """
    with np.load(path) as stored:
        stored_keys = _weight_keys([str(name) for name in stored["__names__"]])
        by_key = {key: f"w{index:04d}" for index, key in enumerate(stored_keys)}
        variables = list(variables)
        wanted = _weight_keys([v.path for v in variables])
        missing = [key for key in wanted if key not in by_key]
        extra = sorted(set(stored_keys) - set(wanted))
        if missing or extra:
            raise UsageError(
                f"{path}: its weights do not match the learner (missing: "
                f"{', '.join(missing[:3]) or 'none'}; unexpected: {', '.join(extra[:3]) or 'none'})"
            )
        for key, variable in zip(wanted, variables):
            value = stored[by_key[key]]
            if tuple(value.shape) != tuple(variable.shape):
                raise UsageError(
                    f"{path}: weight {key} has shape {tuple(value.shape)}, the learner's "
                    f"{tuple(variable.shape)}"
                )
            variable.assign(value)


# --------------------------------------------------------------------------- the folder


class RunDir:
    """One output directory and the paths of what a run keeps there."""

    def __init__(self, path: str):
        self.path = path

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def project_dir(self) -> str:
        """keras-tuner's project folder."""
        return self.file(PROJECT_NAME)

    def trial_dir(self, trial_id: str) -> str:
        return os.path.join(self.project_dir, f"trial_{trial_id}")

    def weights_path(self, trial_id: str) -> str:
        return os.path.join(self.trial_dir(trial_id), WEIGHTS_FILE)

    def export_path(self, name: str) -> str:
        return os.path.join(self.path, EXPORT_DIR, name)

    def write_json(self, name: str, value: Any) -> str:
        return write_atomic(self.file(name), json_text(value))

    def write_text(self, name: str, text: str) -> str:
        return write_atomic(self.file(name), text)

    def write_trial_record(self, trial_id: str, record: dict[str, Any]) -> str:
        return write_atomic(os.path.join(self.trial_dir(trial_id), TRIAL_RECORD), json_text(record))

    def has_run(self) -> bool:
        return os.path.exists(self.file(CONFIG_FILE))

    def read_config(self) -> dict[str, Any]:
        """`config.json`: `{"identity": ..., "config": ...}`."""
        return read_json(self.file(CONFIG_FILE))

    def read_data(self) -> dict[str, Any]:
        return read_json(self.file(DATASET_FILE))

    def clear(self) -> None:
        """Removes everything a run wrote here (`--overwrite`), nothing else."""
        for entry in OWNED_ENTRIES:
            target = self.file(entry)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)

    def check_writable(self) -> None:
        """Fails unless the folder exists or can be made, and a file can be written in it."""
        if not self.path:
            raise UsageError("--output_dir: must not be empty")
        try:
            os.makedirs(self.path, exist_ok=True)
            handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=self.path)
            os.close(handle)
            os.remove(probe)
        except OSError as error:
            raise UsageError(
                f"--output_dir: cannot write to {self.path} ({error.strerror or error})"
            ) from None

    def trial_results(self) -> list[dict[str, Any]]:
        """Every trial of the run: keras-tuner's status merged with our record."""
        project = self.project_dir
        results: list[dict[str, Any]] = []
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
            if status in FINISHED:
                merged.update({k: v for k, v in record.items() if k != "status"})
            if status != "COMPLETED":
                for objective in OBJECTIVES:
                    merged.pop(objective, None)
                if trial.get("message") and "error" not in merged:
                    merged["error"] = trial["message"].strip().splitlines()[-1]
            results.append(merged)
        return results


# --------------------------------------------------------------------------- results


def trial_score(record: dict[str, Any]) -> float | None:
    """Higher is better: the trial's objective turned by its kind's direction (None: unscored)."""
    kind = kind_of_record(record)
    return None if kind is None else kind.goodness(float(record[kind.objective]))


def best_trial(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed trial with the best score (the earliest among equals), or None."""
    completed = [r for r in results if r["status"] == "COMPLETED" and trial_score(r) is not None]
    if not completed:
        return None
    return max(completed, key=lambda r: (trial_score(r), -int(r["trial_id"])))


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


class FinishedRun:
    """A run read back from its output directory, to rebuild and use its trials.

    `config` is the resolved configuration the run wrote (`config.json`), `data`
    its data description (`dataset.json`: normalisation, channels or, for
    regression, input shape), `components` the registered classes it used and
    `kind` its task kind. Table-scored runs are refused: their trials have no
    weights.
    """

    def __init__(self, output_dir: str):
        self.dir = RunDir(output_dir)
        if not self.dir.has_run():
            raise UsageError(f"--output_dir: {output_dir} holds no metasearch run (no config.json)")
        config = self.dir.read_config()["config"]
        if config.get("evaluator", "train") != "train":
            raise UsageError(
                f"--output_dir: {output_dir} was scored from a table; its trials have no weights "
                "to export (their genotypes are in results.json)"
            )
        self.output_dir = output_dir
        self.config: dict[str, Any] = config
        self.data: dict[str, Any] = self.dir.read_data()
        self.components = Components.from_config(config)
        self.kind = self.components.task_kind()

    def results(self) -> list[dict[str, Any]]:
        return self.dir.trial_results()

    def trial(self, trial_id: str) -> dict[str, Any]:
        """The finished trial `trial_id` (or `"best"`), as its results record."""
        return choose_trial(self.output_dir, trial_id, self.results())

    def dataset_options(self, data_dir: str | None = None):
        """The options the run loaded its data set with; `data_dir` overrides its own."""
        from metasearch.api import DatasetOptions

        return DatasetOptions(
            data_dir=data_dir or self.config.get("data_dir"),
            image_size=self.config["image_size"],
            seed=self.config["seed"],
            options=self.config.get("dataset_options", {}),
        )

    def rebuild(self, chosen: dict[str, Any]):
        """The learner of trial record `chosen` with its trained weights, and its task."""
        weights_path = self.dir.weights_path(chosen["trial_id"])
        if not os.path.exists(weights_path):
            raise UsageError(
                f"--trial={chosen['trial_id']}: its weights are missing ({weights_path})"
            )
        task = self.kind.task_spec(self.config, self.data)
        sampled = {
            "architecture": chosen["architecture_config"],
            "plugin": chosen["plugin_config"],
            "learning_rate": chosen["hyperparameters"].get("train/learning_rate"),
        }
        keras.backend.clear_session()
        learner = self.components.build_learner(sampled, task, self.data["normalization"])
        load_weights(learner.weights, weights_path)
        return learner, task
