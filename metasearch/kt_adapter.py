"""The one module of metasearch that touches keras-tuner's internals.

keras-tuner's public API covers hyperparameters, trials, `Oracle.populate_space`
and the tuners, but metasearch also relies on a few names keras-tuner keeps
private: the hooks its oracles call on themselves (`_random_values`,
`_duplicate`, `_make_gpr`, `_save_trial`, `_check_consecutive_failures`), its
bookkeeping (`_tried_so_far`, `_id_to_hash`, `_retry_queue`,
`_compute_values_hash`, the keys of `get_state`, `_project_dir`,
`_directory`, `_project_name`), grid search's walk (`_ordered_ids`,
`_populate_next`, `_get_next_combination`, `_compare`,
`gridsearch.LinkedList`), the tuner's `_try_run_and_update_trial`,
`_get_tuner_fname`, `_is_worker` and `_populate_initial_space`, its
`config.DEBUG` switch, and the gRPC servicer of a distributed search (`keras_tuner.src.protos`,
`keras_tuner.src.distribute.oracle_chief`). Every use goes through here, under
public names; `tests/test_kt_adapter.py` checks each assumption this module
makes (one test each), so an upgrade of keras-tuner that breaks one fails a
named test. Tested with keras-tuner 1.4.7 and 1.4.8 (`setup.py` pins that range).

* `Oracle` and the thin subclasses `RandomSearchOracle`, `GridSearchOracle`,
  `HyperbandOracle`, `BayesianOptimizationOracle` of keras-tuner's oracles
  forward keras-tuner's private hooks to public ones a subclass overrides:
  `_duplicate` -> `is_duplicate(values)`, `_random_values` ->
  `random_values()`, and (Bayesian) `_make_gpr` -> `make_gpr()`. They add
  read access to the bookkeeping (`values_hash`, `tried_hashes`,
  `trial_hash`, `retry_queue`), `set_project_dir`, and an in-memory mode
  (`persist = False`: no trial or oracle files are written). Without an
  override they behave exactly like keras-tuner's classes.
* `GridSearchOracle` also exposes grid search's walk (`next_combination`,
  `compare_values`, `grid_insert`, `grid_next`, `walk_queue`,
  `reset_grid_walk`).
* `run_and_update_trial(tuner, trial, ...)`: a tuner runs one trial and
  records its status, as keras-tuner's own search loop does.
* `OracleServer`: keras-tuner's gRPC servicer of an oracle, for a chief.

Files and faults: every file keras-tuner keeps (`oracle.json`, each
`trial_ID/trial.json`, the tuner's `TUNER_ID.json`) is written through
`metasearch.rundir.write_atomic` (the oracles' `save`/`_save_trial`, the
tuner's `save`), never half. `reload` survives damage: a `trial.json` that
cannot be read sets that trial aside (`set_aside`: a FAILED placeholder keeps
its id taken, its file is left as it is); a damaged or missing `oracle.json`
is rebuilt from the intact trials (`rebuilt_state` says why; the strategy's
own state starts afresh); trials the oracle's state does not know about (a
write interrupted between the two files) are taken in. keras-tuner's stop
after `max_consecutive_failed_trials` no longer raises in the middle of
`end_trial` (which left the trial RUNNING on disk): the trial is ended and
saved, `stopped_by_failures` says why and `create_trial` answers STOPPED.
Only the current streak of failures counts, so a resumed search goes on.
`hand_back(oracle, trial_id, why)` ends a trial stopped midway (Ctrl-C, a
full disk) so that it runs again when the search resumes. `BaseTuner` is
keras-tuner's tuner with these files, reloading whenever the project has
trials (not only when its tuner file exists).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Mapping
from concurrent import futures
from typing import Any

import keras_tuner
from keras_tuner.engine import trial as _trial_module
from keras_tuner.src import config as _kt_config
from keras_tuner.src.tuners import gridsearch as _gridsearch

from metasearch.errors import StorageError
from metasearch.rundir import damage, read_json, storage_error, write_atomic

__all__ = [
    "BaseTuner",
    "BayesianOptimizationOracle",
    "GridSearchOracle",
    "HyperbandOracle",
    "Oracle",
    "OracleServer",
    "RandomSearchOracle",
    "hand_back",
    "run_and_update_trial",
]

# keras-tuner's statuses of a trial that has ended (INVALID ones may still be retried).
_ENDED = ("COMPLETED", "FAILED", "INVALID")
TRIAL_FILE = "trial.json"
ORACLE_FILE = "oracle.json"


def write_state(path: str, state: Mapping[str, Any]) -> None:
    """keras-tuner's JSON of a state (as its `utils.save_json` writes it), written atomically."""
    write_atomic(path, json.dumps(state))


def _trial_order(trial_id: str) -> tuple[int, str]:
    return (int(trial_id), trial_id) if trial_id.isdigit() else (10**9, trial_id)


class _PublicHooks:
    """keras-tuner's private oracle hooks and bookkeeping under public names.

    Placed in front of a keras-tuner oracle class: the private hooks keras-tuner
    calls forward to public methods (overridable by subclasses), whose default
    is keras-tuner's own implementation.
    """

    # False: trials and the oracle's state stay in memory (no files, no project
    # directory needed), e.g. for searches simulated on a table.
    persist: bool = True
    # Why the search stops: keras-tuner's limit of consecutive failed trials was reached.
    stopped_by_failures: str | None = None
    # Why `reload` rebuilt the oracle's state from the trials (None: it read oracle.json).
    rebuilt_state: str | None = None

    @property
    def set_aside(self) -> dict[str, str]:
        """Trials whose `trial.json` `reload` could not read: trial id -> which file and why."""
        if "_set_aside" not in self.__dict__:
            self._set_aside: dict[str, str] = {}
        return self._set_aside

    # -- keras-tuner calls these; subclasses override the public names instead

    def _duplicate(self, values):
        return self.is_duplicate(values)

    def _random_values(self):
        return self.random_values()

    def _save_trial(self, trial):
        # Atomically, as every file of the run; a set-aside trial's damaged file stays as it is.
        if self.persist and trial.trial_id not in self.set_aside:
            folder = os.path.join(self.project_path(), f"trial_{trial.trial_id}")
            write_state(os.path.join(folder, TRIAL_FILE), trial.get_state())

    def save(self):
        if self.persist:
            write_state(os.path.join(self.project_path(), ORACLE_FILE), self.get_state())

    def project_path(self) -> str:
        """keras-tuner's project folder (made if missing; a failure is a `StorageError`)."""
        try:
            return self._project_dir
        except OSError as error:
            where = os.path.join(str(self._directory), self._project_name)
            raise storage_error(where, error) from None

    def _check_consecutive_failures(self):
        # `end_trial` calls this after a trial ended. keras-tuner raises here, in the middle
        # of `end_trial` (before the trial is saved and taken off the running ones), and
        # for any streak in the whole history, so a resumed search stopped again after its
        # next trial. Only the current streak counts, and the stop is recorded instead.
        streak = 0
        for trial_id in reversed(self.end_order):
            if self.trials[trial_id].status != _trial_module.TrialStatus.FAILED:
                break
            streak += 1
        if streak >= self.max_consecutive_failed_trials:
            self.stopped_by_failures = f"the last {streak} trials failed"

    def create_trial(self, tuner_id):
        if self.stopped_by_failures and tuner_id not in self.ongoing_trials:
            self.tuner_ids.discard(tuner_id)
            return _trial_module.Trial(
                self.hyperparameters.copy(), status=_trial_module.TrialStatus.STOPPED
            )
        return super().create_trial(tuner_id)

    def reload(self):
        """keras-tuner's `reload` (trials, then the oracle's state), surviving damaged files.

        A trial whose `trial.json` cannot be read is set aside (`set_aside`); a
        damaged or missing `oracle.json` is rebuilt from the intact trials
        (`rebuilt_state`); running trials go back to the retry queue, as in
        keras-tuner.
        """
        self.set_aside.clear()
        self.rebuilt_state = None
        fresh = self.get_state()  # this oracle as built: what a rebuilt state starts from
        for path in sorted(glob.glob(os.path.join(self.project_path(), "trial_*", TRIAL_FILE))):
            folder_id = os.path.basename(os.path.dirname(path))[len("trial_") :]
            try:
                trial = _trial_module.Trial.from_state(read_json(path))
                if trial.trial_id != folder_id:
                    raise ValueError(f"it names trial {trial.trial_id}")
            except Exception as error:  # noqa: BLE001 - any unreadable record is damage
                self.set_aside[folder_id] = f"{path} is damaged ({damage(error)})"
                trial = _trial_module.Trial(
                    self.hyperparameters.copy(),
                    trial_id=folder_id,
                    status=_trial_module.TrialStatus.FAILED,
                )
                trial.message = f"set aside: {self.set_aside[folder_id]}"
            self.trials[trial.trial_id] = trial
        oracle_file = os.path.join(self.project_path(), ORACLE_FILE)
        try:
            self.set_state(self._sanitized(read_json(oracle_file)))
        except Exception as error:  # noqa: BLE001 - any unreadable state is damage
            if isinstance(error, FileNotFoundError):
                self.rebuilt_state = f"{oracle_file} is missing"
            else:
                self.rebuilt_state = f"{oracle_file} is damaged ({damage(error)})"
            self.set_state(self._sanitized(self._state_from_trials(fresh)))
        # As keras-tuner: trials that were running go back to the queue.
        for trial in self.ongoing_trials.values():
            self.retry_queue.append(trial.trial_id)
        self.ongoing_trials = {}

    def _intact_trials(self) -> dict[str, Any]:
        return {i: t for i, t in self.trials.items() if i not in self.set_aside}

    def _state_from_trials(self, fresh: Mapping[str, Any]) -> dict[str, Any]:
        """The oracle's state rebuilt from its intact trials (the strategy's own part afresh)."""
        intact = self._intact_trials()
        for trial in intact.values():
            self.update_space(trial.hyperparameters)
        drawn = sum(len(t.hyperparameters.values) for t in intact.values())
        return {
            **fresh,
            "hyperparameters": self.hyperparameters.get_config(),
            "ongoing_trials": {},
            "start_order": [],
            "end_order": [],
            "retry_queue": [],
            "run_times": {i: 1 for i, t in intact.items() if t.status in _ENDED},
            "tried_so_far": [],
            "id_to_hash": {},
            # Past the random draws the trials took, so the sampler does not replay them.
            "seed_state": fresh["seed_state"] + drawn,
        }

    def _sanitized(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """`state` (keras-tuner's) agreeing with the trials read back.

        Set-aside and unknown trial ids are dropped, and ended trials from the
        running ones; intact trials it does not list (a write interrupted
        between a trial's file and the oracle's) are taken in: ended ones into
        the end order, the others into the retry queue.
        """
        state = dict(state)
        intact = self._intact_trials()
        ordered = sorted(intact, key=_trial_order)
        # keras-tuner's `end_trial` saves before it drops the trial from the running ones: an
        # ended trial listed as running (the last one of a search) is not to run again.
        ongoing = {
            k: v
            for k, v in state["ongoing_trials"].items()
            if v in intact and intact[v].status not in _ENDED
        }
        retry = [i for i in state["retry_queue"] if i in intact]
        start = [i for i in state["start_order"] if i in intact]
        end = [i for i in state["end_order"] if i in intact]
        waiting = set(ongoing.values()) | set(retry)
        end += [
            i for i in ordered if i not in end and i not in waiting and intact[i].status in _ENDED
        ]
        retry += [
            i
            for i in ordered
            if i not in waiting and i not in end and intact[i].status not in _ENDED
        ]
        tried = set(state["tried_so_far"])
        id_to_hash = dict(state["id_to_hash"])
        for trial_id, trial in intact.items():
            if trial_id not in id_to_hash:
                id_to_hash[trial_id] = self._compute_values_hash(trial.hyperparameters.values)
                tried.add(id_to_hash[trial_id])
        state.update(
            ongoing_trials=ongoing,
            retry_queue=retry,
            start_order=start + [i for i in ordered if i not in start],
            end_order=end,
            tried_so_far=sorted(tried),
            id_to_hash=id_to_hash,
        )
        return state

    # -- public hooks

    def is_duplicate(self, values: Mapping[str, Any]) -> bool:
        """Whether `values` was tried already (keras-tuner: its hash is a trial's)."""
        return super()._duplicate(values)

    def random_values(self) -> dict[str, Any] | None:
        """Random values of the active hyperparameters not tried yet (None: none found).

        keras-tuner's sampler: seeded by the oracle's seed, skipping
        duplicates (`is_duplicate`) up to a few collisions.
        """
        return super()._random_values()

    # -- keras-tuner's bookkeeping, read only

    def values_hash(self, values: Mapping[str, Any]) -> str:
        """keras-tuner's identity of a candidate (Hyperband ignores its `tuner/` values)."""
        return self._compute_values_hash(values)

    @property
    def tried_hashes(self) -> set[str]:
        """The `values_hash` of every trial's values."""
        return self._tried_so_far

    def trial_hash(self, trial_id: str) -> str | None:
        """The `values_hash` of a trial's values (None for an unknown trial)."""
        return self._id_to_hash[trial_id]

    @property
    def retry_queue(self) -> list[str]:
        """Trial ids waiting to be run again (`create_trial` hands them out first, last first)."""
        return self._retry_queue

    def set_project_dir(self, directory: str, project_name: str) -> None:
        """Where trial and oracle files go (a tuner sets this; `reload()` reads from it)."""
        self._set_project_dir(directory, project_name)


class Oracle(_PublicHooks, keras_tuner.Oracle):
    """`keras_tuner.Oracle` with its private hooks under public names (see the module)."""


class RandomSearchOracle(Oracle, keras_tuner.oracles.RandomSearchOracle):
    """keras-tuner's random search behind the public hooks."""


class HyperbandOracle(Oracle, keras_tuner.oracles.HyperbandOracle):
    """keras-tuner's Hyperband behind the public hooks (`random_values` draws new candidates)."""


class BayesianOptimizationOracle(Oracle, keras_tuner.oracles.BayesianOptimizationOracle):
    """keras-tuner's Gaussian-process oracle behind the public hooks, plus `make_gpr`."""

    def _make_gpr(self):
        return self.make_gpr()

    def make_gpr(self):
        """The scikit-learn regressor (keras-tuner builds it in `__init__` and `set_state`)."""
        return super()._make_gpr()


class GridSearchOracle(Oracle, keras_tuner.oracles.GridSearchOracle):
    """keras-tuner's grid search behind the public hooks, its walk exposed.

    keras-tuner walks the grid from each trial to the next combination:
    `walk_queue` lists the trials to walk on from (a trial joins it when it
    ends), and the trials in grid order form a linked list (`grid_insert`,
    `grid_next`) used to skip combinations another trial already covers.
    """

    def next_combination(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """The combination after `values` in grid order (None after the last one)."""
        return self._get_next_combination(values)

    def compare_values(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
        """-1, 0 or 1 as `a` comes before, equals or comes after `b` in grid order."""
        return self._compare(a, b)

    def grid_insert(self, trial_id: str, after: str | None = None) -> None:
        """Puts `trial_id` in grid order after trial `after` (None: at the end)."""
        self._ordered_ids.insert(trial_id, after)

    def grid_next(self, trial_id: str) -> str | None:
        """The trial after `trial_id` in grid order (None: it is the last)."""
        return self._ordered_ids.next(trial_id)

    @property
    def walk_queue(self) -> list[str]:
        """Trials to walk on from, oldest first (the list itself: callers pop and insert)."""
        return self._populate_next

    def reset_grid_walk(self, ordered_ids: Iterable[str], walk_queue: Iterable[str]) -> None:
        """Replaces the walk: trials in grid order, and the trials to walk on from."""
        self._ordered_ids = _gridsearch.LinkedList()
        for trial_id in ordered_ids:
            self._ordered_ids.insert(trial_id)
        self._populate_next = list(walk_queue)


def hand_back(oracle, trial_id: str, why: str) -> None:
    """Ends trial `trial_id`, stopped midway, so that it runs again when the search resumes.

    The trial leaves the running ones and joins the retry queue with status
    IDLE and `why` as its message; both files are saved (best effort: on a
    full disk they may stay as they were, and `reload` then queues it anyway).
    """
    trial = oracle.trials.get(trial_id)
    if trial is None:
        return
    for tuner_id, running in list(oracle.ongoing_trials.items()):
        if running.trial_id == trial_id:
            del oracle.ongoing_trials[tuner_id]
    trial.status = _trial_module.TrialStatus.IDLE
    trial.message = why
    if trial_id not in oracle.retry_queue:
        oracle.retry_queue.append(trial_id)
    try:
        oracle._save_trial(trial)
        oracle.save()
    except StorageError:
        pass


class BaseTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """keras-tuner's `BaseTuner` whose files are written atomically and reload despite damage.

    It reloads whenever the project holds an oracle or trial file, not only
    when its own tuner file exists (keras-tuner would otherwise start over and
    number new trials from 0, over the existing ones). After a rebuilt oracle
    state it declares the search space again, as for a new search.
    """

    def __init__(self, oracle, hypermodel=None, directory=None, project_name=None, **kwargs):
        project = os.path.join(str(directory or "."), project_name or "untitled_project")
        tuner_file = os.path.join(
            project, f"{os.environ.get('KERASTUNER_TUNER_ID', 'tuner0')}.json"
        )
        has_trials = os.path.exists(os.path.join(project, ORACLE_FILE)) or glob.glob(
            os.path.join(project, "trial_*", TRIAL_FILE)
        )
        if not kwargs.get("overwrite") and has_trials and not os.path.exists(tuner_file):
            write_state(tuner_file, {})
        super().__init__(oracle, hypermodel, directory, project_name, **kwargs)

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        write_state(self._get_tuner_fname(), self.get_state())

    def reload(self):
        if not self._is_worker():
            self.oracle.reload()
            if getattr(self.oracle, "rebuilt_state", None):
                self._populate_initial_space()
                self.oracle.save()  # the damaged file is replaced by the rebuilt state
        try:
            self.set_state(read_json(self._get_tuner_fname()))
        except (OSError, ValueError):
            pass  # the tuner's own state is empty; it is written again at the next save


def run_and_update_trial(tuner, trial, *fit_args, **fit_kwargs) -> None:
    """Runs `trial` on `tuner` and records the outcome, as keras-tuner's search loop does.

    keras-tuner's `BaseTuner._try_run_and_update_trial`: calls
    `tuner.run_trial(trial, *fit_args, **fit_kwargs)`, reports the returned
    metrics to the oracle and sets `trial.status`: COMPLETED, FAILED for a
    `keras_tuner.errors.FailedTrialError`, INVALID (retried up to
    `max_retries_per_trial`) for any other exception, whose traceback becomes
    `trial.message`. A `keras_tuner.errors.FatalError` propagates. The caller
    then ends the trial (`tuner.on_trial_end(trial)`). keras-tuner's `DEBUG`
    (on by default) would also print every failed trial's traceback to
    stderr; that is left on only with METASEARCH_DEBUG set (the traceback is
    in the trial's message either way).
    """
    debug = _kt_config.DEBUG
    _kt_config.DEBUG = bool(os.environ.get("METASEARCH_DEBUG"))
    try:
        tuner._try_run_and_update_trial(trial, *fit_args, **fit_kwargs)
    finally:
        _kt_config.DEBUG = debug


class OracleServer:
    """keras-tuner's gRPC servicer of `oracle` (what a chief serves its workers), on `address`.

    `port` is the bound port, 0 if `address` cannot be listened on; then
    `start()` serves, `finished()` says whether the search is over (a worker
    was told to stop, no trial runs and no worker is left) and `stop(grace)`
    shuts the server down.
    """

    def __init__(self, oracle: keras_tuner.Oracle, address: str, max_workers: int = 4):
        import grpc
        from keras_tuner.src import protos
        from keras_tuner.src.distribute import oracle_chief

        self._oracle = oracle
        self._exit_chief = oracle_chief.exit_chief
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
        self._servicer = oracle_chief.OracleServicer(oracle)
        protos.get_service_grpc().add_OracleServicer_to_server(self._servicer, self._server)
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0

    def start(self) -> None:
        self._server.start()

    def finished(self) -> bool:
        """Whether a worker was told to stop and nothing runs or waits any more."""
        return bool(self._servicer.stop_triggered and self._exit_chief(self._oracle))

    def stop(self, grace: float | None = None) -> None:
        self._server.stop(grace=grace)
