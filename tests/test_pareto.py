"""Pareto-optimal trials: score against latency and against parameters."""

from metasearch import pareto


def _trial(trial_id, accuracy=None, latency=None, params=None, status="COMPLETED", mse=None):
    record = {"trial_id": trial_id, "status": status}
    if accuracy is not None:
        record["val_accuracy"] = accuracy
    if mse is not None:
        record["val_mse"] = mse
    if latency is not None:
        record["latency_ms"] = latency
    if params is not None:
        record["parameters"] = params
    return record


def test_the_front_keeps_the_trials_no_other_beats_on_both_counts():
    trials = [
        _trial("0", 0.90, latency=10.0, params=1000),
        _trial("1", 0.80, latency=2.0, params=5000),  # fastest
        _trial("2", 0.85, latency=12.0, params=900),  # slower and worse than 0
        _trial("3", 0.95, latency=30.0, params=800),  # best and smallest
        _trial("4", 0.90, latency=10.0, params=1000),  # equal to 0: both stay
    ]
    assert pareto.front(trials, "latency_ms") == ["1", "0", "4", "3"]
    assert pareto.front(trials, "parameters") == ["3"]
    assert pareto.marks(trials) == {"0": "L", "1": "L", "3": "L P", "4": "L"}


def test_unscored_unfinished_and_unmeasured_trials_are_left_out():
    trials = [
        _trial("0", 0.7, latency=5.0),
        _trial("1", 0.99, latency=1.0, status="FAILED"),
        _trial("2", status="RUNNING"),
        _trial("3", 0.9),  # latency not measured
        _trial("4", 0.8, latency=float("nan")),
    ]
    assert pareto.front(trials, "latency_ms") == ["0"]
    assert pareto.front(trials, "parameters") == []
    assert pareto.front([], "latency_ms") == []


def test_regression_scores_count_lower_as_better():
    trials = [
        _trial("0", mse=0.5, latency=1.0),
        _trial("1", mse=0.1, latency=3.0),
        _trial("2", mse=0.6, latency=2.0),  # slower and worse than 0
    ]
    assert pareto.front(trials, "latency_ms") == ["0", "1"]
