"""The wall-clock budget: durations as users write them, and when trials may start."""

import pytest

from metasearch import budget as budget_lib
from metasearch.budget import TimeBudget, format_duration
from metasearch.config import RunConfig, parse_duration


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("45", 45),
        (12, 12),
    ],
)
def test_durations_users_write(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "5x", "m", "-3m", "0s", "1h30"])
def test_bad_durations_name_the_flag(text):
    with pytest.raises(ValueError, match="--time_budget"):
        parse_duration(text)


def test_format_duration():
    assert format_duration(45) == "45s"
    assert format_duration(750) == "12m30s"
    assert format_duration(3900) == "1h05m"


def test_max_trials_defaults_to_four_only_without_a_budget():
    assert RunConfig().max_trials == 4
    assert RunConfig(time_budget="30m").max_trials is None
    assert RunConfig(time_budget="30m", max_trials=7).max_trials == 7


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_trials_start_only_while_the_search_share_holds_one(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(budget_lib.time, "monotonic", clock)
    budget = TimeBudget(total=100.0, final_share=0.25)
    assert budget.search_seconds == 75.0
    assert budget.stop_reason() is None  # the first trial always starts
    clock.now += 30.0
    budget.trial_ended(30.0)
    assert budget.stop_reason() is None  # 45 s left, a trial takes 30 s
    clock.now += 30.0
    budget.trial_ended(30.0)
    reason = budget.stop_reason()  # 15 s left: less than a trial
    assert reason is not None and "less than a trial takes" in reason
    assert budget.left() == pytest.approx(40.0)
    clock.now += 20.0
    assert "is spent" in budget.stop_reason()


def test_time_spent_by_an_earlier_run_counts(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(budget_lib.time, "monotonic", clock)
    budget = TimeBudget(total=100.0, final_share=0.25, spent_before=80.0)
    assert budget.left() == pytest.approx(20.0)
    assert "is spent" in budget.stop_reason()
