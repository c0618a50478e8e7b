"""The job's wall-clock budget (`--time_budget`): the search's share, then the final phase's.

A budget of `total` seconds is split: trials start while the search's share
(`1 - final_share` of it) lasts, and only when the time left in that share
holds a trial of the length trials took so far; what remains goes to the
final phase (`metasearch.final`), which first sets aside the time its
meta-test evaluation will take. Time spent by earlier runs of the same
command (a resumed search) counts: it is kept in the run folder
(`budget.json`) after every trial.
"""

from __future__ import annotations

import time

from metasearch.config import parse_duration


def format_duration(seconds: float) -> str:
    """`1h05m`, `12m30s`, `45s`: a duration as the progress display shows it."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class TimeBudget:
    """`total` seconds for a job, `spent_before` of them already used by earlier runs.

    `trial_ended(seconds)` tells it how long a trial took; `stop_reason()`
    says why no new trial should start (None: one may).
    """

    def __init__(self, total: float, final_share: float, spent_before: float = 0.0):
        self.total = float(total)
        self.final_share = float(final_share)
        self.spent_before = float(spent_before)
        self.started = time.monotonic()
        self.trial_seconds: list[float] = []

    @classmethod
    def from_config(cls, config, spent_before: float = 0.0) -> TimeBudget | None:
        """The budget of `config` (None without `--time_budget`)."""
        if config.time_budget is None:
            return None
        return cls(parse_duration(config.time_budget), config.final_share, spent_before)

    def spent(self) -> float:
        """Seconds used so far, earlier runs included."""
        return self.spent_before + time.monotonic() - self.started

    def left(self) -> float:
        """Seconds left of the whole budget (never negative)."""
        return max(0.0, self.total - self.spent())

    @property
    def search_seconds(self) -> float:
        """The search's share of the budget."""
        return self.total * (1.0 - self.final_share)

    def search_left(self) -> float:
        return max(0.0, self.search_seconds - self.spent())

    def trial_ended(self, seconds: float) -> None:
        self.trial_seconds.append(float(seconds))

    def expected_trial_seconds(self) -> float | None:
        """How long the next trial should take: the mean of those so far (None: none yet)."""
        if not self.trial_seconds:
            return None
        return sum(self.trial_seconds) / len(self.trial_seconds)

    def stop_reason(self) -> str | None:
        """Why no trial should start now, or None: the search's share must hold one more."""
        left = self.search_left()
        expected = self.expected_trial_seconds()
        if left <= 0.0:
            return f"--time_budget: the search's share ({format_duration(self.search_seconds)}) is spent"
        if expected is not None and expected > left:
            return (
                f"--time_budget: {format_duration(left)} of the search's share is left, less than "
                f"a trial takes ({format_duration(expected)}); the rest goes to the final phase"
            )
        return None

    def describe(self) -> str:
        """`12m30s left of 30m00s`, for the progress display."""
        return f"{format_duration(self.left())} left of {format_duration(self.total)}"
