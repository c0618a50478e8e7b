"""Every assumption `metasearch.kt_adapter` makes about keras-tuner, one test each.

The adapter reaches into keras-tuner's private names; a keras-tuner release
that renames or changes one of them fails the test named after it here
(rather than a search somewhere downstream).
"""

from __future__ import annotations

import inspect
import os
import socket
import threading

import keras_tuner
import pytest

from metasearch import kt_adapter
from metasearch.rundir import read_json

OBJECTIVE = keras_tuner.Objective("score", "max")


def space(values=3, names="abc") -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    for name in names:
        hp.Choice(name, list(range(values)))
    return hp


def in_memory(oracle):
    """`oracle` writing no files (`persist`, tested below), quiet."""
    oracle.persist = False
    oracle.verbose = 0
    return oracle


def finish(oracle, trial, score=1.0):
    oracle.update_trial(trial.trial_id, {"score": score})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)


# --------------------------------------------------------------------------- the private names


# (class, method, parameters after self): what the adapter calls or overrides.
PRIVATE_METHODS = [
    (keras_tuner.Oracle, "_duplicate", ["values"]),
    (keras_tuner.Oracle, "_random_values", []),
    (keras_tuner.Oracle, "_save_trial", ["trial"]),
    (keras_tuner.Oracle, "save", []),
    (keras_tuner.Oracle, "_compute_values_hash", ["values"]),
    (keras_tuner.Oracle, "_set_project_dir", ["directory", "project_name"]),
    (keras_tuner.oracles.HyperbandOracle, "_compute_values_hash", ["values"]),
    (keras_tuner.oracles.BayesianOptimizationOracle, "_make_gpr", []),
    (keras_tuner.oracles.GridSearchOracle, "_get_next_combination", ["values"]),
    (keras_tuner.oracles.GridSearchOracle, "_compare", ["a", "b"]),
    (keras_tuner.engine.base_tuner.BaseTuner, "_try_run_and_update_trial", ["trial"]),
    (keras_tuner.Oracle, "_check_consecutive_failures", []),
    (keras_tuner.engine.base_tuner.BaseTuner, "_get_tuner_fname", []),
    (keras_tuner.engine.base_tuner.BaseTuner, "_is_worker", []),
    (keras_tuner.engine.base_tuner.BaseTuner, "_populate_initial_space", []),
]


@pytest.mark.parametrize(
    "cls, method, parameters",
    PRIVATE_METHODS,
    ids=[f"{cls.__name__}.{method}" for cls, method, _ in PRIVATE_METHODS],
)
def test_private_method_exists_with_the_signature_the_adapter_uses(cls, method, parameters):
    signature = inspect.signature(getattr(cls, method))
    positional = [
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    assert positional == ["self", *parameters]


def test_the_public_names_the_adapter_adds_are_free_in_keras_tuner():
    added = set()
    for cls in (
        kt_adapter._PublicHooks,
        kt_adapter.GridSearchOracle,
        kt_adapter.BayesianOptimizationOracle,
    ):
        added |= {name for name in vars(cls) if not name.startswith("_")}
    # keras-tuner's own public methods, overridden on purpose (atomic files, damage, failures).
    added -= {"save", "reload", "create_trial"}
    assert added >= {"is_duplicate", "random_values", "values_hash", "persist", "walk_queue"}
    for cls in (
        keras_tuner.Oracle,
        keras_tuner.oracles.RandomSearchOracle,
        keras_tuner.oracles.GridSearchOracle,
        keras_tuner.oracles.HyperbandOracle,
        keras_tuner.oracles.BayesianOptimizationOracle,
    ):
        assert not added & set(dir(cls)), cls


def test_adapted_oracles_are_keras_tuners_classes():
    for adapted, original in [
        (kt_adapter.Oracle, keras_tuner.Oracle),
        (kt_adapter.RandomSearchOracle, keras_tuner.oracles.RandomSearchOracle),
        (kt_adapter.GridSearchOracle, keras_tuner.oracles.GridSearchOracle),
        (kt_adapter.HyperbandOracle, keras_tuner.oracles.HyperbandOracle),
        (kt_adapter.BayesianOptimizationOracle, keras_tuner.oracles.BayesianOptimizationOracle),
    ]:
        assert issubclass(adapted, original)
        # The hooks come before keras-tuner's implementation in the MRO.
        mro = adapted.__mro__
        assert mro.index(kt_adapter._PublicHooks) < mro.index(original)


# --------------------------------------------------------------------------- hooks are called


def test_random_values_checks_candidates_with_duplicate():
    class Recording(kt_adapter.RandomSearchOracle):
        def is_duplicate(self, values):
            seen.append(dict(values))
            return super().is_duplicate(values)

    seen = []
    oracle = Recording(objective=OBJECTIVE, seed=1, hyperparameters=space())
    values = oracle.random_values()
    assert seen == [values] and set(values) == {"a", "b", "c"}


def test_random_values_gives_none_when_every_draw_is_a_duplicate():
    class Saturated(kt_adapter.RandomSearchOracle):
        def is_duplicate(self, values):
            return True

    oracle = Saturated(objective=OBJECTIVE, seed=1, hyperparameters=space())
    assert oracle.random_values() is None


def test_random_search_proposes_through_random_values():
    class Fixed(kt_adapter.RandomSearchOracle):
        def random_values(self):
            return {"a": 2, "b": 2, "c": 2}

    oracle = in_memory(Fixed(objective=OBJECTIVE, seed=1, hyperparameters=space()))
    assert oracle.create_trial("t").hyperparameters.values == {"a": 2, "b": 2, "c": 2}


def test_hyperband_draws_new_candidates_through_random_values():
    calls = []

    class Counting(kt_adapter.HyperbandOracle):
        def random_values(self):
            calls.append(1)
            return super().random_values()

    oracle = in_memory(
        Counting(objective=OBJECTIVE, max_epochs=9, factor=3, seed=1, hyperparameters=space())
    )
    trial = oracle.create_trial("t")
    assert calls == [1] and trial.hyperparameters.values["tuner/round"] == 0


def test_bayesian_builds_its_regressor_through_make_gpr():
    built = []

    class Counting(kt_adapter.BayesianOptimizationOracle):
        def make_gpr(self):
            built.append(1)
            return super().make_gpr()

    oracle = Counting(objective=OBJECTIVE, seed=1, hyperparameters=space())
    assert built == [1] and oracle.gpr is not None
    oracle.set_state(oracle.get_state())
    assert built == [1, 1]


def test_keras_tuner_writes_files_only_through_save_trial_and_save(tmp_path):
    for persist in (True, False):
        directory = tmp_path / str(persist)
        oracle = kt_adapter.RandomSearchOracle(objective=OBJECTIVE, seed=1, hyperparameters=space())
        oracle.persist = persist
        oracle.set_project_dir(str(directory), "project")
        finish(oracle, oracle.create_trial("t"))
        written = sorted(p.name for p in directory.rglob("*.json"))
        assert written == (["oracle.json", "trial.json"] if persist else []), persist


def test_set_project_dir_is_where_save_writes_and_reload_reads(tmp_path):
    oracle = kt_adapter.RandomSearchOracle(objective=OBJECTIVE, seed=1, hyperparameters=space())
    oracle.set_project_dir(str(tmp_path), "project")
    trial = oracle.create_trial("t")
    finish(oracle, trial, score=0.5)
    assert (tmp_path / "project" / "oracle.json").is_file()
    again = kt_adapter.RandomSearchOracle(objective=OBJECTIVE, seed=1, hyperparameters=space())
    again.set_project_dir(str(tmp_path), "project")
    again.reload()
    assert again.end_order == [trial.trial_id]
    assert again.trials[trial.trial_id].score == 0.5


# --------------------------------------------------------------------------- the bookkeeping


def test_tried_so_far_holds_the_values_hash_of_every_trial():
    oracle = in_memory(
        kt_adapter.RandomSearchOracle(objective=OBJECTIVE, seed=1, hyperparameters=space())
    )
    trial = oracle.create_trial("t")
    key = oracle.values_hash(trial.hyperparameters.values)
    assert isinstance(key, str) and isinstance(oracle.tried_hashes, set)
    assert oracle.tried_hashes == {key}
    assert oracle.is_duplicate(dict(trial.hyperparameters.values))


def test_values_hash_depends_on_the_values_only():
    oracle = kt_adapter.Oracle(objective=OBJECTIVE, seed=1, hyperparameters=space())
    assert oracle.values_hash({"a": 1, "b": 2}) == oracle.values_hash({"b": 2, "a": 1})
    assert oracle.values_hash({"a": 1, "b": 2}) != oracle.values_hash({"a": 2, "b": 1})


def test_hyperband_values_hash_ignores_its_tuner_values():
    oracle = kt_adapter.HyperbandOracle(objective=OBJECTIVE, max_epochs=9, seed=1)
    promoted = {"a": 1, "tuner/epochs": 9, "tuner/initial_epoch": 3}
    promoted.update({"tuner/bracket": 1, "tuner/round": 1})
    assert oracle.values_hash(promoted) == oracle.values_hash({"a": 1})


def test_id_to_hash_maps_a_trial_to_its_values_hash():
    oracle = in_memory(
        kt_adapter.RandomSearchOracle(objective=OBJECTIVE, seed=1, hyperparameters=space())
    )
    trial = oracle.create_trial("t")
    assert oracle.trial_hash(trial.trial_id) == oracle.values_hash(trial.hyperparameters.values)
    assert oracle.trial_hash("unknown") is None


def test_retry_queue_is_served_first_by_create_trial():
    oracle = in_memory(
        kt_adapter.RandomSearchOracle(objective=OBJECTIVE, seed=1, hyperparameters=space())
    )
    trial = oracle.create_trial("t0")
    assert oracle.retry_queue == [] and isinstance(oracle.retry_queue, list)
    del oracle.ongoing_trials["t0"]  # as a handed-over trial is
    oracle.retry_queue.append(trial.trial_id)
    again = oracle.create_trial("t1")
    assert (again.trial_id, again.status) == (trial.trial_id, "RUNNING")
    assert oracle.retry_queue == [] and oracle.ongoing_trials == {"t1": again}
    assert oracle.get_state()["retry_queue"] is oracle.retry_queue


def test_create_trial_forgets_a_tuner_it_stops():
    oracle = in_memory(
        kt_adapter.RandomSearchOracle(
            objective=OBJECTIVE, max_trials=1, seed=1, hyperparameters=space()
        )
    )
    finish(oracle, oracle.create_trial("t0"))
    assert oracle.tuner_ids == {"t0"}
    assert oracle.create_trial("t0").status == "STOPPED"
    assert oracle.tuner_ids == set()


def test_trial_status_strings():
    status = keras_tuner.engine.trial.TrialStatus
    assert (status.RUNNING, status.IDLE, status.STOPPED) == ("RUNNING", "IDLE", "STOPPED")
    assert status.COMPLETED == "COMPLETED"


def test_hyperband_iterations_none_means_forever():
    oracle = kt_adapter.HyperbandOracle(objective=OBJECTIVE, hyperband_iterations=None, seed=1)
    assert oracle.hyperband_iterations == float("inf")
    assert oracle.get_state()["hyperband_iterations"] == float("inf")


def test_synchronized_lets_an_override_call_its_synchronized_parent():
    class Wrapped(kt_adapter.RandomSearchOracle):
        @keras_tuner.synchronized
        def create_trial(self, tuner_id):
            return super().create_trial(tuner_id)

    oracle = in_memory(Wrapped(objective=OBJECTIVE, seed=1, hyperparameters=space()))
    results = []
    thread = threading.Thread(target=lambda: results.append(oracle.create_trial("t")))
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "nested keras_tuner.synchronized calls deadlocked"
    assert results[0].status == "RUNNING"


# --------------------------------------------------------------------------- grid search's walk


def test_grid_next_combination_counts_up_from_the_last_hyperparameter():
    oracle = kt_adapter.GridSearchOracle(objective=OBJECTIVE, seed=1, hyperparameters=space())
    assert oracle.next_combination({"a": 0, "b": 0, "c": 0}) == {"a": 0, "b": 0, "c": 1}
    assert oracle.next_combination({"a": 0, "b": 2, "c": 2}) == {"a": 1, "b": 0, "c": 0}
    assert oracle.next_combination({"a": 2, "b": 2, "c": 2}) is None


def test_grid_compare_orders_as_the_walk_does():
    oracle = kt_adapter.GridSearchOracle(objective=OBJECTIVE, seed=1, hyperparameters=space())
    assert oracle.compare_values({"a": 0, "b": 1, "c": 0}, {"a": 0, "b": 0, "c": 2}) == 1
    assert oracle.compare_values({"a": 0, "b": 0, "c": 2}, {"a": 0, "b": 1, "c": 0}) == -1
    assert oracle.compare_values({"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 1, "c": 1}) == 0


def test_grid_order_is_a_linked_list_of_trial_ids():
    oracle = kt_adapter.GridSearchOracle(objective=OBJECTIVE, seed=1, hyperparameters=space())
    oracle.grid_insert("0")
    oracle.grid_insert("2")
    oracle.grid_insert("1", "0")
    assert [oracle.grid_next("0"), oracle.grid_next("1"), oracle.grid_next("2")] == ["1", "2", None]
    oracle.reset_grid_walk(["2", "0"], ["0"])
    assert (oracle.grid_next("2"), oracle.grid_next("0")) == ("0", None)
    assert oracle.walk_queue == ["0"]


def test_grid_walks_on_from_queued_trials():
    oracle = in_memory(
        kt_adapter.GridSearchOracle(objective=OBJECTIVE, seed=1, hyperparameters=space())
    )
    first = oracle.create_trial("t0")
    assert first.hyperparameters.values == {"a": 0, "b": 0, "c": 0}
    walk = oracle.walk_queue
    assert walk == [first.trial_id]  # the walk goes on from the first trial
    second = oracle.create_trial("t1")
    assert second.hyperparameters.values == {"a": 0, "b": 0, "c": 1}
    assert walk is oracle.walk_queue and walk == []  # the same list, popped by the walk
    assert oracle.grid_next(first.trial_id) == second.trial_id
    finish(oracle, first)
    assert walk == [first.trial_id]  # an ended trial is walked on from again


# --------------------------------------------------------------------------- the tuner and the chief


class _Tuner(keras_tuner.engine.base_tuner.BaseTuner):
    def __init__(self, outcome, **kwargs):
        self.outcome = outcome
        super().__init__(**kwargs)

    def run_trial(self, trial, *args, **kwargs):
        self.fit_args = (args, kwargs)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return {"score": self.outcome}


@pytest.mark.parametrize(
    "outcome, status",
    [
        (0.75, "COMPLETED"),
        (keras_tuner.errors.FailedTrialError("diverged"), "FAILED"),
        (RuntimeError("bug"), "INVALID"),
    ],
    ids=["completed", "failed", "invalid"],
)
def test_run_and_update_trial_records_the_outcome(outcome, status, tmp_path):
    oracle = kt_adapter.RandomSearchOracle(objective=OBJECTIVE, seed=1, hyperparameters=space())
    tuner = _Tuner(outcome, oracle=oracle, directory=str(tmp_path), project_name="p")
    trial = oracle.create_trial(tuner.tuner_id)
    kt_adapter.run_and_update_trial(tuner, trial, 1, key="value")
    assert tuner.fit_args == ((1,), {"key": "value"})
    assert trial.status == status
    if status == "COMPLETED":
        assert oracle.get_trial(trial.trial_id).metrics.get_last_value("score") == 0.75
    else:
        assert str(outcome) in trial.message


def test_a_failed_trial_prints_no_traceback_unless_debugging(tmp_path, capfd, monkeypatch):
    from keras_tuner.src import config

    assert config.DEBUG is True  # keras-tuner's default: print_exc for every failed trial
    for debugging in ("", "1"):
        monkeypatch.setenv("METASEARCH_DEBUG", debugging)
        oracle = kt_adapter.RandomSearchOracle(objective=OBJECTIVE, seed=1, hyperparameters=space())
        tuner = _Tuner(
            keras_tuner.errors.FailedTrialError("diverged"),
            oracle=oracle,
            directory=str(tmp_path / debugging),
            project_name="p",
        )
        trial = oracle.create_trial(tuner.tuner_id)
        kt_adapter.run_and_update_trial(tuner, trial)
        assert trial.status == "FAILED" and "diverged" in trial.message
        printed = capfd.readouterr().err
        assert ("Traceback" in printed) == bool(debugging), printed
    assert config.DEBUG is True


def test_run_and_update_trial_lets_fatal_errors_through(tmp_path):
    oracle = kt_adapter.RandomSearchOracle(objective=OBJECTIVE, seed=1, hyperparameters=space())
    tuner = _Tuner(
        keras_tuner.errors.FatalError("stop"),
        oracle=oracle,
        directory=str(tmp_path),
        project_name="p",
    )
    with pytest.raises(keras_tuner.errors.FatalError):
        kt_adapter.run_and_update_trial(tuner, oracle.create_trial(tuner.tuner_id))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_oracle_server_serves_keras_tuners_protocol_and_knows_when_it_is_done():
    import grpc
    from keras_tuner.src import protos

    oracle = in_memory(
        kt_adapter.RandomSearchOracle(
            objective=OBJECTIVE, max_trials=1, seed=1, hyperparameters=space()
        )
    )
    port = _free_port()
    server = kt_adapter.OracleServer(oracle, f"127.0.0.1:{port}")
    assert server.port == port
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = protos.get_service_grpc().OracleStub(channel)

            def create(tuner_id):
                request = protos.get_service().CreateTrialRequest(tuner_id=tuner_id)
                return stub.CreateTrial(request, timeout=20).trial

            first = keras_tuner.engine.trial.Trial.from_proto(create("w0"))
            assert first.status == "RUNNING" and not server.finished()
            finish(oracle, oracle.trials[first.trial_id])
            assert keras_tuner.engine.trial.Trial.from_proto(create("w0")).status == "STOPPED"
        assert server.finished()
    finally:
        server.stop(grace=0)


def test_oracle_server_reports_an_address_it_cannot_bind():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = kt_adapter.OracleServer(kt_adapter.Oracle(), f"127.0.0.1:{port}")
        assert server.port == 0


# --------------------------------------------------------------------------- files and faults


def _project(tmp_path, trials=2, max_trials=None):
    """A persisted random-search project with `trials` completed trials; returns the oracle."""
    oracle = kt_adapter.RandomSearchOracle(
        objective=OBJECTIVE, max_trials=max_trials, seed=1, hyperparameters=space()
    )
    oracle.verbose = 0
    oracle.set_project_dir(str(tmp_path), "project")
    for index in range(trials):
        finish(oracle, oracle.create_trial("t"), score=float(index))
    return oracle


def _reloaded(tmp_path, max_trials=None):
    oracle = kt_adapter.RandomSearchOracle(
        objective=OBJECTIVE, max_trials=max_trials, seed=1, hyperparameters=space()
    )
    oracle.verbose = 0
    oracle.set_project_dir(str(tmp_path), "project")
    oracle.reload()
    return oracle


def test_project_dir_is_directory_and_project_name_and_made_on_use(tmp_path):
    oracle = kt_adapter.RandomSearchOracle(objective=OBJECTIVE, seed=1, hyperparameters=space())
    oracle.set_project_dir(str(tmp_path / "d"), "p")
    assert (oracle._directory, oracle._project_name) == (str(tmp_path / "d"), "p")
    assert oracle._project_dir == str(tmp_path / "d" / "p") and (tmp_path / "d" / "p").is_dir()
    assert oracle.project_path() == str(tmp_path / "d" / "p")


def test_keras_tuners_files_are_written_only_through_the_atomic_writer(tmp_path, monkeypatch):
    from keras_tuner.src import utils

    def forbidden(*args, **kwargs):
        raise AssertionError("keras-tuner wrote a file itself")

    monkeypatch.setattr(utils, "save_json", forbidden)
    written = []
    original = kt_adapter.write_atomic
    monkeypatch.setattr(
        kt_adapter, "write_atomic", lambda path, data: written.append(path) or original(path, data)
    )
    _project(tmp_path, trials=1)
    assert {os.path.basename(p) for p in written} == {"trial.json", "oracle.json"}
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_the_state_keys_reload_repairs_are_keras_tuners(tmp_path):
    state = _project(tmp_path, trials=1).get_state()
    assert {
        "ongoing_trials",
        "retry_queue",
        "start_order",
        "end_order",
        "run_times",
        "tried_so_far",
        "id_to_hash",
        "seed_state",
        "hyperparameters",
    } <= set(state)


def test_keras_tuner_stops_after_consecutive_failures_in_the_middle_of_end_trial(tmp_path):
    # The assumption behind `stopped_by_failures`: keras-tuner raises from
    # `_check_consecutive_failures`, called by `end_trial` before it saves the trial.
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=OBJECTIVE, seed=1, hyperparameters=space(), max_consecutive_failed_trials=1
    )
    oracle._set_project_dir(str(tmp_path), "project")
    trial = oracle.create_trial("t")
    trial.status = "FAILED"
    with pytest.raises(RuntimeError, match="consecutive failures"):
        oracle.end_trial(trial)
    assert oracle.ongoing_trials == {"t": trial}, "keras-tuner left it running"


def test_a_stop_by_consecutive_failures_ends_the_trial_and_stops(tmp_path):
    oracle = kt_adapter.RandomSearchOracle(
        objective=OBJECTIVE, seed=1, hyperparameters=space(), max_consecutive_failed_trials=2
    )
    oracle.verbose = 0
    oracle.set_project_dir(str(tmp_path), "project")
    for _ in range(2):
        trial = oracle.create_trial("t")
        trial.status = "FAILED"
        trial.message = "TypeError: broken"
        oracle.end_trial(trial)
    assert oracle.stopped_by_failures == "the last 2 trials failed"
    assert oracle.ongoing_trials == {}
    statuses = [read_json(p)["status"] for p in sorted(tmp_path.rglob("trial.json"))]
    assert statuses == ["FAILED", "FAILED"]
    assert oracle.create_trial("t").status == "STOPPED"
    # keras-tuner saved its state before dropping the trial from the running ones;
    # reloaded, the ended trial is not run again, and only a new streak stops it again.
    again = _reloaded(tmp_path)
    assert again.retry_queue == [] and again.stopped_by_failures is None
    finish(again, again.create_trial("t"))
    assert again.stopped_by_failures is None


def test_reload_sets_a_damaged_trial_aside_and_numbers_new_trials_after_it(tmp_path):
    _project(tmp_path, trials=3, max_trials=5)
    damaged = tmp_path / "project" / "trial_1" / "trial.json"
    damaged.write_text(damaged.read_text()[:30])
    before = damaged.read_bytes()
    oracle = _reloaded(tmp_path, max_trials=5)
    assert set(oracle.set_aside) == {"1"}
    assert oracle.set_aside["1"].startswith(f"{damaged} is damaged (JSONDecodeError")
    assert oracle.trials["1"].status == "FAILED"  # a placeholder keeps its id taken
    assert "1" not in oracle.start_order and "1" not in oracle.end_order
    assert oracle.end_order == ["0", "2"] and oracle.rebuilt_state is None
    assert oracle.create_trial("t").trial_id == "3"
    oracle.save()
    assert damaged.read_bytes() == before, "the damaged file was rewritten"


@pytest.mark.parametrize("damage", ["truncated", "missing", "not a state"])
def test_reload_rebuilds_a_damaged_oracle_state_from_the_trials(tmp_path, damage):
    original = _project(tmp_path, trials=3, max_trials=6)
    state_file = tmp_path / "project" / "oracle.json"
    if damage == "truncated":
        state_file.write_text(state_file.read_text()[:40])
    elif damage == "missing":
        state_file.unlink()
    else:
        state_file.write_text('{"seed": 1}')
    oracle = _reloaded(tmp_path, max_trials=6)
    assert oracle.rebuilt_state.startswith(str(state_file))
    assert oracle.end_order == ["0", "1", "2"] and oracle.start_order == ["0", "1", "2"]
    assert oracle.tried_hashes == original.tried_hashes
    assert [t.name for t in oracle.hyperparameters.space] == ["a", "b", "c"]
    new = oracle.create_trial("t")
    assert new.trial_id == "3"
    assert oracle.values_hash(new.hyperparameters.values) not in original.tried_hashes


def test_reload_takes_in_a_trial_the_oracle_state_missed(tmp_path):
    # The trial's file was written, then the oracle's state was not (killed, disk full).
    oracle = _project(tmp_path, trials=1)
    state = (tmp_path / "project" / "oracle.json").read_text()
    oracle.create_trial("t")
    (tmp_path / "project" / "oracle.json").write_text(state)
    again = _reloaded(tmp_path)
    first, second = oracle.start_order
    assert again.start_order == [first, second] and again.retry_queue == [second]
    assert again.create_trial("t").trial_id == second


def test_hand_back_ends_a_running_trial_for_a_rerun(tmp_path):
    oracle = _project(tmp_path, trials=1)
    trial = oracle.create_trial("t")
    kt_adapter.hand_back(oracle, trial.trial_id, "interrupted")
    assert oracle.ongoing_trials == {} and oracle.retry_queue == [trial.trial_id]
    saved = read_json(tmp_path / "project" / f"trial_{trial.trial_id}" / "trial.json")
    assert (saved["status"], saved["message"]) == ("IDLE", "interrupted")
    again = _reloaded(tmp_path)
    assert again.retry_queue == [trial.trial_id]
    assert again.create_trial("t").trial_id == trial.trial_id


class _Quiet(kt_adapter.BaseTuner):
    def run_trial(self, trial, *args, **kwargs):
        return {"score": 1.0}


def test_the_tuner_file_is_the_tuner_id_and_a_project_without_it_still_reloads(tmp_path):
    oracle = _project(tmp_path, trials=2)
    tuner = _Quiet(oracle=oracle, directory=str(tmp_path), project_name="project")
    assert tuner._get_tuner_fname() == str(tmp_path / "project" / "tuner0.json")
    assert not tuner._is_worker()
    tuner.save()
    assert read_json(tmp_path / "project" / "tuner0.json") == {}
    (tmp_path / "project" / "tuner0.json").unlink()
    fresh = kt_adapter.RandomSearchOracle(objective=OBJECTIVE, seed=1, hyperparameters=space())
    _Quiet(oracle=fresh, directory=str(tmp_path), project_name="project")
    assert fresh.end_order == oracle.end_order, "it started over instead of reloading"


def test_a_rebuilt_state_declares_the_search_space_again(tmp_path):
    (tmp_path / "project" / "trial_0").mkdir(parents=True)
    (tmp_path / "project" / "oracle.json").write_text("{")
    oracle = kt_adapter.RandomSearchOracle(objective=OBJECTIVE, seed=1)
    oracle.verbose = 0
    _Quiet(
        oracle=oracle,
        hypermodel=lambda hp: hp.Choice("x", [1, 2]),
        directory=str(tmp_path),
        project_name="project",
    )
    assert oracle.rebuilt_state and [hp.name for hp in oracle.hyperparameters.space] == ["x"]
