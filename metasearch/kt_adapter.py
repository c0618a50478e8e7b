"""The one module of metasearch that touches keras-tuner's internals.

keras-tuner's public API covers hyperparameters, trials, `Oracle.populate_space`
and the tuners, but metasearch also relies on a few names keras-tuner keeps
private: the hooks its oracles call on themselves (`_random_values`,
`_duplicate`, `_make_gpr`, `_save_trial`), its bookkeeping (`_tried_so_far`,
`_id_to_hash`, `_retry_queue`, `_compute_values_hash`), grid search's walk
(`_ordered_ids`, `_populate_next`, `_get_next_combination`, `_compare`,
`gridsearch.LinkedList`), the tuner's `_try_run_and_update_trial`, and the
gRPC servicer of a distributed search (`keras_tuner.src.protos`,
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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent import futures
from typing import Any

import keras_tuner
from keras_tuner.src.tuners import gridsearch as _gridsearch

__all__ = [
    "BayesianOptimizationOracle",
    "GridSearchOracle",
    "HyperbandOracle",
    "Oracle",
    "OracleServer",
    "RandomSearchOracle",
    "run_and_update_trial",
]


class _PublicHooks:
    """keras-tuner's private oracle hooks and bookkeeping under public names.

    Placed in front of a keras-tuner oracle class: the private hooks keras-tuner
    calls forward to public methods (overridable by subclasses), whose default
    is keras-tuner's own implementation.
    """

    # False: trials and the oracle's state stay in memory (no files, no project
    # directory needed), e.g. for searches simulated on a table.
    persist: bool = True

    # -- keras-tuner calls these; subclasses override the public names instead

    def _duplicate(self, values):
        return self.is_duplicate(values)

    def _random_values(self):
        return self.random_values()

    def _save_trial(self, trial):
        if self.persist:
            super()._save_trial(trial)

    def save(self):
        if self.persist:
            super().save()

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


def run_and_update_trial(tuner, trial, *fit_args, **fit_kwargs) -> None:
    """Runs `trial` on `tuner` and records the outcome, as keras-tuner's search loop does.

    keras-tuner's `BaseTuner._try_run_and_update_trial`: calls
    `tuner.run_trial(trial, *fit_args, **fit_kwargs)`, reports the returned
    metrics to the oracle and sets `trial.status`: COMPLETED, FAILED for a
    `keras_tuner.errors.FailedTrialError`, INVALID (retried up to
    `max_retries_per_trial`) for any other exception, whose traceback becomes
    `trial.message`. A `keras_tuner.errors.FatalError` propagates. The caller
    then ends the trial (`tuner.on_trial_end(trial)`).
    """
    tuner._try_run_and_update_trial(trial, *fit_args, **fit_kwargs)


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
