"""Distributed search on keras-tuner's own engine, made robust to workers that die.

keras-tuner runs a search across processes with three environment variables:
`KERASTUNER_TUNER_ID` (`chief` for the process serving the oracle, any other
unique name for a worker), `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT`
(where the chief listens). The chief serves the oracle over gRPC; each worker
asks it for trials, runs them and reports back. All processes share one
`--output_dir`.

What metasearch adds to keras-tuner's protocol:
* Workers send a heartbeat while a trial runs (an `update_trial` call
  carrying only `HEARTBEAT_METRIC`). A trial whose worker has been silent for
  `--worker_timeout` seconds is handed to the next worker that asks, so a
  killed worker never stalls the search.
* A worker asking for a trial while others still run theirs is told to wait
  (`IDLE`) instead of to stop: if one of those trials is handed back, someone
  is left to run it. Workers stop only when nothing is left anywhere.
* The chief polls twice a second instead of keras-tuner's 20 s, and prints a
  line as trials end or are handed over.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import keras_tuner
from keras_tuner.engine import trial as trial_module

from metasearch import kt_adapter
from metasearch.errors import UsageError

TUNER_ID = "KERASTUNER_TUNER_ID"
ORACLE_IP = "KERASTUNER_ORACLE_IP"
ORACLE_PORT = "KERASTUNER_ORACLE_PORT"
HEARTBEAT_METRIC = "metasearch/heartbeat"


def role() -> str:
    """`"chief"`, `"worker"` or `"local"` (no distribution), from keras-tuner's variables."""
    if ORACLE_IP not in os.environ:
        return "local"
    missing = [name for name in (ORACLE_PORT, TUNER_ID) if not os.environ.get(name)]
    if missing:
        raise UsageError(
            f"{ORACLE_IP} is set but {' and '.join(missing)} is not: a distributed search needs "
            f"{TUNER_ID}, {ORACLE_IP} and {ORACLE_PORT}"
        )
    return "chief" if "chief" in os.environ[TUNER_ID] else "worker"


def address() -> str:
    return f"{os.environ[ORACLE_IP]}:{os.environ[ORACLE_PORT]}"


class LivenessMixin:
    """Oracle behaviour for distributed searches: heartbeats, stale trials, waiting not stopping.

    Part of every strategy oracle (`metasearch.strategies.StrategyOracle`
    inherits it), in front of a `metasearch.kt_adapter` oracle:

    * `update_trial` with `HEARTBEAT_METRIC` among the metrics only records
      that the trial's worker is alive;
    * `hand_over_stale_trials(timeout)` queues the trials of workers silent for
      `timeout` seconds for the next worker that asks (`serve` calls it);
    * `create_trial` answers IDLE instead of STOPPED while trials still run or
      wait to be retried, so that a worker is left to take them over.
    """

    def __init__(self, *args, **kwargs):
        # When each tuner last asked for a trial, when each trial last beat.
        self._tuner_seen: dict[str, float] = {}
        self._trial_seen: dict[str, float] = {}
        super().__init__(*args, **kwargs)

    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        now = time.time()
        self._tuner_seen[tuner_id] = now
        trial = super().create_trial(tuner_id)
        if trial.status == trial_module.TrialStatus.RUNNING:
            self._trial_seen[trial.trial_id] = now
        elif (
            trial.status == trial_module.TrialStatus.STOPPED
            and not self.stopped_by_failures  # then the search is over for every worker
            and (self.ongoing_trials or self.retry_queue)
        ):
            # keras-tuner forgets a tuner it told to stop; keep it, it may be needed.
            self.tuner_ids.add(tuner_id)
            return trial_module.Trial(
                self.hyperparameters.copy(),
                trial_id=trial.trial_id,
                status=trial_module.TrialStatus.IDLE,
            )
        return trial

    @keras_tuner.synchronized
    def update_trial(self, trial_id, metrics, step=0):
        if HEARTBEAT_METRIC in metrics:
            self._trial_seen[trial_id] = time.time()
            return self.trials[trial_id]
        return super().update_trial(trial_id, metrics, step=step)

    @keras_tuner.synchronized
    def hand_over_stale_trials(self, timeout: float) -> list[tuple[str, str]]:
        """Queues the trials of workers silent for `timeout` s for others; returns (trial, tuner)."""
        now = time.time()
        handed = []
        for tuner_id, trial in list(self.ongoing_trials.items()):
            seen = max(
                self._trial_seen.get(trial.trial_id, 0.0), self._tuner_seen.get(tuner_id, 0.0)
            )
            if now - seen > timeout:
                del self.ongoing_trials[tuner_id]
                self.tuner_ids.discard(tuner_id)
                self.retry_queue.append(trial.trial_id)
                handed.append((trial.trial_id, tuner_id))
        for tuner_id in list(self.tuner_ids):
            if (
                tuner_id not in self.ongoing_trials
                and now - self._tuner_seen.get(tuner_id, now) > timeout
            ):
                self.tuner_ids.discard(tuner_id)
        if handed:
            self.save()
        return handed


def with_liveness(oracle: keras_tuner.Oracle) -> keras_tuner.Oracle:
    """Returns `oracle` unchanged, after checking it has liveness (`LivenessMixin`).

    Every oracle `metasearch.strategies.make_oracle` builds has it by
    construction; this check remains for callers written before that.
    """
    if not isinstance(oracle, LivenessMixin):
        raise TypeError(
            f"{type(oracle).__name__} has no liveness: a distributed search needs an oracle "
            "of metasearch.strategies (a StrategyOracle subclass)"
        )
    return oracle


def serve(
    oracle: keras_tuner.Oracle,
    worker_timeout: float,
    report: Callable[[str], None],
    poll_seconds: float = 0.5,
) -> None:
    """Serves `oracle` to workers until every trial has ended and every worker has stopped."""
    server = kt_adapter.OracleServer(oracle, address())
    if not server.port:
        raise UsageError(f"{ORACLE_IP}/{ORACLE_PORT}: the chief cannot listen on {address()}")
    server.start()
    report(f"chief: serving the oracle on {address()}; waiting for workers")
    ended = len(oracle.end_order)
    try:
        while True:
            time.sleep(poll_seconds)
            for trial_id, tuner_id in oracle.hand_over_stale_trials(worker_timeout):
                report(
                    f"chief: worker {tuner_id} silent for over {worker_timeout:g}s; "
                    f"trial {trial_id} goes to the next worker"
                )
            while ended < len(oracle.end_order):
                trial = oracle.trials[oracle.end_order[ended]]
                report(f"chief: trial {trial.trial_id} {trial.status.lower()}")
                ended += 1
            if server.finished():
                break
    finally:
        server.stop(grace=2)


class Heartbeat:
    """While a worker runs a trial, tells the chief every `interval` s that it is alive."""

    def __init__(self, oracle: Any, trial_id: str, interval: float):
        self._oracle, self._trial_id, self._interval = oracle, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metasearch-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._oracle.update_trial(self._trial_id, {HEARTBEAT_METRIC: time.time()})
            except Exception:  # noqa: BLE001 - a missed beat is retried; the trial goes on
                pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
