"""The run folder: its layout, the one atomic writer, trial weights and reading a run back.

Everything metasearch writes into an output directory goes through `RunDir`
(or `write_atomic` for files outside it), through a temporary file beside the
target and a rename, so a crash never leaves half a file; a write that fails
(disk full, I/O error) removes its temporary file and raises `StorageError`
naming the path and the free space. One process writes a run folder at a
time: a local search, the chief of a distributed one, or an export into the
run holds `RunLock` (`.metasearch.lock`, the one file written in place: the
lock lives on its inode), and first clears the debris of killed writes
(`RunDir.clean_debris`). Damaged files are named (`DamagedFileError`) and a
damaged trial is set aside (status `DAMAGED` in `trial_results`), never deleted.

Layout:
    .metasearch.lock  the writer's lock (its host, pid and since when while held)
    config.json       the resolved configuration (checked when resuming)
    flags.txt         a flagfile that repeats the run
    dataset.json      channels, normalisation and class-set sizes
    keras_tuner/      keras-tuner's project (oracle, trials) plus per trial
                      `learner.weights.npz` and `metasearch_trial.json`, and
                      while it trains `checkpoint.npz` (weights, optimizer
                      state, step reached: a killed trial resumes from it)
    results.json      every trial: architecture, hyperparameters, score with
                      95% CI, parameters, wall time, status
    leaderboard.txt   the printed leaderboard
    search_progress.png
    report.html       the self-contained HTML report (`metasearch.html_report`)
    tensorboard/      per trial `trial_ID/`: TensorBoard event files (curves,
                      HParams record), written by tf.summary (`metasearch.summaries`)
    export/           best_learner/, best_cell/ (SavedModels, each with a
                      `metasearch.sha256` manifest of its files)
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
from typing import Any

import keras

from metasearch.components import Components, sampled_training, training_task
from metasearch.errors import DamagedFileError, RunLockedError, UsageError
from metasearch.files import (  # noqa: F401 - re-exported: the run folder's primitives
    TEMPORARY_MARK,
    damage,
    free_space,
    json_text,
    load_checkpoint,
    load_weights,
    read_checkpoint,
    read_json,
    read_json_file,
    remove_file,
    save_checkpoint,
    save_weights,
    storage_error,
    write_atomic,
)
from metasearch.tasks import OBJECTIVES, kind_of_record

PROJECT_NAME = "keras_tuner"
CONFIG_FILE = "config.json"
FLAGS_FILE = "flags.txt"
DATASET_FILE = "dataset.json"
RESULTS_FILE = "results.json"
LEADERBOARD_FILE = "leaderboard.txt"
PROGRESS_PICTURE = "search_progress.png"
EXPORT_DIR = "export"
REPORT_FILE = "report.html"
TENSORBOARD_DIR = "tensorboard"
TRIAL_RECORD = "metasearch_trial.json"
WEIGHTS_FILE = "learner.weights.npz"
CHECKPOINT_FILE = "checkpoint.npz"
# The final phase's learner (`metasearch.final`): its record and weights.
FINAL_DIR = "final"
FINAL_RECORD = "final.json"
BUDGET_FILE = "budget.json"
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
    REPORT_FILE,
    TENSORBOARD_DIR,
    FINAL_DIR,
    BUDGET_FILE,
)
FINISHED = ("COMPLETED", "FAILED", "INVALID")
# The status of a trial set aside because a file of it cannot be read back.
DAMAGED = "DAMAGED"
# An export folder renamed aside while its replacement moves in (see export.replace_directory).
OLD_EXPORT_MARK = ".old-"


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

    def checkpoint_path(self, trial_id: str) -> str:
        """Where trial `trial_id` keeps its checkpoint while it trains (`save_checkpoint`)."""
        return os.path.join(self.trial_dir(trial_id), CHECKPOINT_FILE)

    def final_weights_path(self) -> str:
        """The final phase's learner's weights (`metasearch.final`)."""
        return os.path.join(self.file(FINAL_DIR), WEIGHTS_FILE)

    def write_final_record(self, record: dict[str, Any]) -> str:
        return write_atomic(os.path.join(self.file(FINAL_DIR), FINAL_RECORD), json_text(record))

    def final_record(self) -> dict[str, Any] | None:
        """The final phase's record, or None when there is none (or it cannot be read)."""
        path = os.path.join(self.file(FINAL_DIR), FINAL_RECORD)
        try:
            record = read_json(path)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and "trial_id" in record else None

    def tensorboard_dir(self, trial_id: str | None = None) -> str:
        """TensorBoard's log folder of the run, or of one trial in it."""
        folder = self.file(TENSORBOARD_DIR)
        return folder if trial_id is None else os.path.join(folder, f"trial_{trial_id}")

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

    def rebuild_advice(self) -> str:
        """The command that rewrites the run's description (config, flags, data set)."""
        return f"rerun the search to rebuild it: metasearch --flagfile={self.file(FLAGS_FILE)}"

    def read_config(self) -> dict[str, Any]:
        """`config.json`: `{"identity": ..., "config": ...}` (`DamagedFileError` if unreadable)."""
        config = read_json_file(self.file(CONFIG_FILE), self.rebuild_advice())
        if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
            raise DamagedFileError(
                self.file(CONFIG_FILE), "no configuration in it", self.rebuild_advice()
            )
        return config

    def read_data(self) -> dict[str, Any]:
        data = read_json_file(self.file(DATASET_FILE), self.rebuild_advice())
        if not isinstance(data, dict):
            raise DamagedFileError(
                self.file(DATASET_FILE), "not a JSON object", self.rebuild_advice()
            )
        return data

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
        """Every trial of the run: keras-tuner's status merged with our record.

        A trial whose `trial.json` or record cannot be read back (or whose
        completed record lacks what rebuilding it needs) is set aside: status
        `DAMAGED`, `error` saying which file and why; its files stay as they are.
        """
        project = self.project_dir
        results: list[dict[str, Any]] = []
        if not os.path.isdir(project):
            return results
        for entry in sorted(os.listdir(project)):
            trial_file = os.path.join(project, entry, "trial.json")
            if not entry.startswith("trial_") or not os.path.exists(trial_file):
                continue
            record_path = os.path.join(project, entry, TRIAL_RECORD)
            try:
                trial, record = _read_trial(trial_file, record_path)
            except DamagedFileError as error:
                results.append(
                    {
                        "trial_id": entry[len("trial_") :],
                        "status": DAMAGED,
                        "hyperparameters": {},
                        "error": f"set aside: {error}",
                    }
                )
                continue
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

    def damaged_trials(self) -> dict[str, str]:
        """The trials set aside as damaged: trial id -> which file and why."""
        return {r["trial_id"]: r["error"] for r in self.trial_results() if r["status"] == DAMAGED}

    def clean_debris(self) -> list[str]:
        """Removes what killed writes left (temporary files and export folders); says what.

        Only the lock holder calls this (a temporary file of a running writer
        would be debris to anyone else). An export replaced midway (its old
        folder renamed aside, the new one not yet in place) is put back.
        """
        notes = []
        if not os.path.isdir(self.path):
            return notes
        for folder, subfolders, files in os.walk(self.path):
            if os.path.relpath(folder, self.path).split(os.sep)[0] == TENSORBOARD_DIR:
                continue  # TensorFlow's own event files
            for name in files:
                if name.startswith(".") and (
                    TEMPORARY_MARK in name or name.startswith(".write-test-")
                ):
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(folder, name))
                        notes.append(os.path.join(folder, name))
            for name in list(subfolders):
                path = os.path.join(folder, name)
                if name.startswith(".") and TEMPORARY_MARK in name:
                    shutil.rmtree(path, ignore_errors=True)
                    notes.append(path)
                    subfolders.remove(name)
                elif OLD_EXPORT_MARK in name and folder == self.file(EXPORT_DIR):
                    target = os.path.join(folder, name.split(OLD_EXPORT_MARK)[0])
                    if os.path.exists(target):
                        shutil.rmtree(path, ignore_errors=True)
                        notes.append(path)
                    else:
                        os.rename(path, target)  # the replaced export comes back
                        notes.append(f"{path} (restored as {target})")
                    subfolders.remove(name)
        if not notes:
            return []
        return [
            f"cleared what killed writes left in {self.path}: "
            + ", ".join(os.path.relpath(n, self.path) for n in notes[:5])
            + (f" and {len(notes) - 5} more" if len(notes) > 5 else "")
        ]


def _read_trial(trial_file: str, record_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's `trial.json` and our record, checked; `DamagedFileError` names a bad one."""
    trial = read_json_file(trial_file)
    if not (
        isinstance(trial, dict)
        and isinstance(trial.get("trial_id"), str)
        and isinstance(trial.get("status"), str)
        and isinstance(trial.get("hyperparameters", {}).get("values", {}), dict)
    ):
        raise DamagedFileError(trial_file, "not a keras-tuner trial")
    record: dict[str, Any] = {}
    if os.path.exists(record_path):
        record = read_json_file(record_path)
        if not isinstance(record, dict):
            raise DamagedFileError(record_path, "not a JSON object")
    if trial["status"] == "COMPLETED":
        if not record:
            raise DamagedFileError(record_path, "missing, though the trial completed")
        for key in ("architecture_config", "plugin_config"):
            if not isinstance(record.get(key), dict):
                raise DamagedFileError(record_path, f"no {key} in it")
    return trial, record


# --------------------------------------------------------------------------- the lock


class RunLock:
    """The exclusive lock of a run folder: one writer at a time (`with RunLock(path, what):`).

    A local search, the chief of a distributed search and an export into the
    run folder hold it; workers write only their trials' files and coordinate
    through the chief. The lock is `flock` on `.metasearch.lock`, which the
    kernel releases when the holder dies, however it dies; the file names the
    holder (host, pid, what, since when) for the refusal message. A lock whose
    holder died without releasing it is taken over, and `notes` says so.
    Nested use in one process (a search exporting at its end) is allowed.
    """

    FILE = ".metasearch.lock"
    _held: dict[str, list] = {}  # real path -> [file descriptor, depth], this process

    def __init__(self, path: str, what: str = "search"):
        self.path = path
        self.what = what
        self.notes: list[str] = []
        self.acquired = False  # True once taken here (False: nested in a holder in this process)
        self._key = os.path.realpath(os.path.join(path, self.FILE))

    def __enter__(self) -> RunLock:
        held = RunLock._held.get(self._key)
        if held is not None:
            held[1] += 1
            return self
        try:
            os.makedirs(self.path, exist_ok=True)
            handle = os.open(self._key, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UsageError(
                f"--output_dir: cannot write to {self.path} ({error.strerror or error})"
            ) from None
        try:
            self._acquire(handle)
        except BaseException:
            os.close(handle)
            raise
        RunLock._held[self._key] = [handle, 1]
        self.acquired = True
        return self

    def _acquire(self, handle: int) -> None:
        previous = _read_holder(handle)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked_by_kernel = True
        except BlockingIOError:
            raise RunLockedError(self._refusal(previous)) from None
        except OSError as error:  # a file system without flock (some network mounts)
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            locked_by_kernel = False
            if previous and _alive_here(previous):
                raise RunLockedError(self._refusal(previous)) from None
        previous = _read_holder(handle) if locked_by_kernel else previous
        if previous:
            self.notes.append(
                f"took over the lock of {self.path}: its holder ({_describe(previous)}) "
                "is no longer running"
            )
        holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "what": self.what,
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        try:
            os.ftruncate(handle, 0)
            os.pwrite(handle, json.dumps(holder).encode() + b"\n", 0)
            os.fsync(handle)
        except OSError as error:
            raise storage_error(self._key, error) from None

    def _refusal(self, holder: dict[str, Any] | None) -> str:
        who = _describe(holder) if holder else "another process"
        return (
            f"--output_dir: {self.path} is in use by {who}; one search writes a run folder at "
            "a time: wait for it to end (or stop it), or use another --output_dir"
        )

    def __exit__(self, *exc_info) -> None:
        held = RunLock._held.get(self._key)
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del RunLock._held[self._key]
        handle = held[0]
        try:
            os.ftruncate(handle, 0)  # empty: released, not abandoned
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)
            os.close(handle)


def _read_holder(handle: int) -> dict[str, Any] | None:
    try:
        text = os.pread(handle, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        return {"unreadable": text[:60]}
    return holder if isinstance(holder, dict) else {"unreadable": text[:60]}


def _describe(holder: dict[str, Any]) -> str:
    if "pid" not in holder:
        return "an unknown process"
    return (
        f"metasearch {holder.get('what', 'search')} pid {holder.get('pid')} on host "
        f"{holder.get('host', '?')}, since {holder.get('since', '?')}"
    )


def _alive_here(holder: dict[str, Any]) -> bool:
    """Whether the holder is a live process of this host (other hosts: assumed alive)."""
    if holder.get("host") != socket.gethostname():
        return "pid" in holder
    try:
        os.kill(int(holder["pid"]), 0)
    except (KeyError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- results


def trial_score(record: dict[str, Any]) -> float | None:
    """Higher is better: the trial's objective turned by its kind's direction (None: unscored)."""
    kind = kind_of_record(record)
    return None if kind is None else kind.goodness(float(record[kind.objective]))


def ranked_trials(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Completed, scored trials, best first (the earliest among equals)."""
    scored = [r for r in results if r["status"] == "COMPLETED" and trial_score(r) is not None]
    return sorted(scored, key=lambda r: (-trial_score(r), int(r["trial_id"])))


def best_trial(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed trial with the best score (the earliest among equals), or None."""
    ranked = ranked_trials(results)
    return ranked[0] if ranked else None


def export_identity(record: dict[str, Any]) -> str:
    """What an export of `record` is stamped with: the trial id, or the final phase's id."""
    if record["trial_id"] == "final":
        return f"final:{record.get('final_id', '')}"
    return record["trial_id"]


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
    if matches[0]["status"] == DAMAGED:
        raise UsageError(f"--trial={trial_id}: {matches[0]['error']}")
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
        """The finished trial `trial_id` as its results record.

        `"best"` is the final phase's learner when the run has one (see
        `metasearch.final`), else the best trial; `"final"` only the former.
        """
        if trial_id in ("best", "final"):
            final = self.final()
            if final is not None:
                return final
            if trial_id == "final":
                raise UsageError(f"--trial=final: {self.output_dir} has no final phase's learner")
        return choose_trial(self.output_dir, trial_id, self.results())

    def final(self) -> dict[str, Any] | None:
        """The final phase's record when its weights are there too (None: no final phase)."""
        record = self.dir.final_record()
        if record is None or not os.path.exists(self.dir.final_weights_path()):
            return None
        return record

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
        if chosen["trial_id"] == "final":
            weights_path = self.dir.final_weights_path()
        else:
            weights_path = self.dir.weights_path(chosen["trial_id"])
        if not os.path.exists(weights_path):
            raise DamagedFileError(weights_path, "the file is missing")
        task = self.kind.task_spec(self.config, self.data)
        hyperparameters = chosen["hyperparameters"]
        sampled = {
            "architecture": chosen["architecture_config"],
            "plugin": chosen["plugin_config"],
            "learning_rate": hyperparameters.get("train/learning_rate"),
        }
        # A searched training way or query count: the learner meta-trains (further) at it.
        sampled.update(sampled_training(hyperparameters))
        task = training_task(task, sampled)
        keras.backend.clear_session()
        learner = self.components.build_learner(sampled, task, self.data["normalization"])
        load_weights(learner.weights, weights_path)
        return learner, task

    def rebuild_trial(self, trial_id: str, report=None):
        """`(record, learner, task)` of trial `trial_id` rebuilt with its weights.

        For `"best"`, a trial whose weights cannot be read back is set aside
        (`report(line)` says which and why) and the next best is taken; an
        explicitly named trial with damaged weights raises `DamagedFileError`.
        """
        if trial_id != "best":
            chosen = self.trial(trial_id)
            return (chosen, *self.rebuild(chosen))
        final = self.final()
        if final is not None:
            try:
                return (final, *self.rebuild(final))
            except DamagedFileError as error:
                if report is not None:
                    report(f"the final learner is set aside: {error}; taking the best trial")
        results = self.results()
        set_aside = []
        while True:
            chosen = best_trial(results)
            if chosen is None:
                if set_aside:
                    raise UsageError(
                        f"--trial=best: no completed trial of {self.output_dir} can be rebuilt "
                        f"(set aside: {'; '.join(set_aside)})"
                    )
                return (self.trial("best"), None, None)  # raises: none completed
            try:
                return (chosen, *self.rebuild(chosen))
            except DamagedFileError as error:
                line = f"trial {chosen['trial_id']} set aside: {error}"
                set_aside.append(line)
                if report is not None:
                    report(line + "; taking the next best trial")
                results = [r for r in results if r["trial_id"] != chosen["trial_id"]]
