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
from concurrent import futures
from typing import Any

import keras_tuner
from keras_tuner.src.engine import trial as trial_module
from keras_tuner.src.engine.oracle import synchronized

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
    """Oracle mixin: heartbeats, handing over stale trials, waiting instead of stopping.

    Mixed in front of any keras-tuner `Oracle` subclass (see `with_liveness`).
    """

    def _liveness_state(self) -> tuple[dict[str, float], dict[str, float]]:
        if not hasattr(self, "_tuner_seen"):
            self._tuner_seen: dict[str, float] = {}
            self._trial_seen: dict[str, float] = {}
        return self._tuner_seen, self._trial_seen

    @synchronized
    def create_trial(self, tuner_id):
        tuner_seen, trial_seen = self._liveness_state()
        now = time.time()
        tuner_seen[tuner_id] = now
        trial = super().create_trial(tuner_id)
        if trial.status == trial_module.TrialStatus.RUNNING:
            trial_seen[trial.trial_id] = now
        elif trial.status == trial_module.TrialStatus.STOPPED and (
            self.ongoing_trials or self._retry_queue
        ):
            # keras-tuner forgets a tuner it told to stop; keep it, it may be needed.
            self.tuner_ids.add(tuner_id)
            return trial_module.Trial(
                self.hyperparameters.copy(),
                trial_id=trial.trial_id,
                status=trial_module.TrialStatus.IDLE,
            )
        return trial

    @synchronized
    def update_trial(self, trial_id, metrics, step=0):
        if HEARTBEAT_METRIC in metrics:
            _, trial_seen = self._liveness_state()
            trial_seen[trial_id] = time.time()
            return self.trials[trial_id]
        return super().update_trial(trial_id, metrics, step=step)

    @synchronized
    def hand_over_stale_trials(self, timeout: float) -> list[tuple[str, str]]:
        """Queues the trials of workers silent for `timeout` s for others; returns (trial, tuner)."""
        tuner_seen, trial_seen = self._liveness_state()
        now = time.time()
        handed = []
        for tuner_id, trial in list(self.ongoing_trials.items()):
            seen = max(trial_seen.get(trial.trial_id, 0.0), tuner_seen.get(tuner_id, 0.0))
            if now - seen > timeout:
                del self.ongoing_trials[tuner_id]
                self.tuner_ids.discard(tuner_id)
                self._retry_queue.append(trial.trial_id)
                handed.append((trial.trial_id, tuner_id))
        for tuner_id in list(self.tuner_ids):
            if (
                tuner_id not in self.ongoing_trials
                and now - tuner_seen.get(tuner_id, now) > timeout
            ):
                self.tuner_ids.discard(tuner_id)
        if handed:
            self.save()
        return handed


def with_liveness(oracle: keras_tuner.Oracle) -> keras_tuner.Oracle:
    """Returns `oracle` with `LivenessMixin` in front of its class (same state)."""
    if not isinstance(oracle, LivenessMixin):
        oracle.__class__ = type(f"Live{type(oracle).__name__}", (LivenessMixin, type(oracle)), {})
    return oracle


def serve(
    oracle: keras_tuner.Oracle,
    worker_timeout: float,
    report: Callable[[str], None],
    poll_seconds: float = 0.5,
) -> None:
    """Serves `oracle` to workers until every trial has ended and every worker has stopped."""
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(address())
    except RuntimeError:
        bound = 0
    if not bound:
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
            if servicer.stop_triggered and oracle_chief.exit_chief(oracle):
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
