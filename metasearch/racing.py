"""Racing: a trial that is clearly worse than the leader at a rung stops there.

With `--racing=paired`, a trial trains in rungs (`--racing_rungs`, fractions
of its episodes, e.g. 1/9 and 1/3, or of its training time with
`--trial_time`, so that trials are compared after equal seconds). At each rung it is scored on the same
`--racing_episodes` fixed meta-validation episodes as every other trial at
that rung (the first episodes of the validation stream), and compared with
the best trial at that rung, episode by episode: when the upper end of the
95% interval of the paired difference is below zero (clearly worse, not
just unlucky), it stops there, keeping its weights and its rung score. A
trial that is not clearly worse goes on from its weights, never from
scratch. The strategies still propose every candidate (this is the rung
rule of asynchronous successive halving, decided by a paired test instead
of a quantile); Hyperband stops trials its own way and is not raced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from metasearch.data.episodes import mean_and_ci95

RACING_MODES = ("none", "paired")
DEFAULT_RUNGS = (0.111, 0.333)


class RacedOutError(Exception):
    """Raised at a rung to stop a clearly worse trial; carries the `Verdict`."""

    def __init__(self, verdict: Verdict):
        super().__init__(verdict.describe())
        self.verdict = verdict


@dataclasses.dataclass
class Verdict:
    """A trial's comparison with the leader at one rung."""

    rung: int
    episodes: int
    leader: str | None
    difference: float  # candidate - leader (higher is better, whatever the objective)
    ci95: float
    stop: bool
    seconds: float | None = None  # training seconds at the rung (trials budgeted in time)

    def describe(self, scale: float = 100.0, unit: str = " points") -> str:
        at = f"{self.episodes} episodes"
        if self.seconds is not None:
            at = f"{self.seconds:.0f} s of training ({at})"
        return (
            f"clearly worse than trial {self.leader} at {at}: "
            f"{scale * self.difference:+.2f} ± {scale * self.ci95:.2f}{unit}, paired"
        )


def rung_steps(fractions: Sequence[float], steps: int) -> list[int]:
    """The training steps at which a trial of `steps` steps is raced (distinct, in range)."""
    chosen = sorted({max(1, round(fraction * steps)) for fraction in fractions})
    return [step for step in chosen if step < steps]


def rung_seconds(fractions: Sequence[float], seconds: float) -> list[float]:
    """The training seconds at which a trial of `seconds` seconds is raced (distinct, in range)."""
    return sorted({fraction * seconds for fraction in fractions if 0 < fraction < 1})


def leader_at(
    rung: int, rivals: Sequence[dict[str, Any]], goodness
) -> tuple[str, np.ndarray] | None:
    """The rival with the best mean score at `rung`: `(trial id, per-episode scores)`."""
    best = None
    for record in rivals:
        for stored in record.get("racing", {}).get("rungs", []):
            if stored["rung"] != rung:
                continue
            scores = np.asarray(stored["scores"], np.float64)
            mean = goodness(float(scores.mean()))
            if best is None or mean > best[0]:
                best = (mean, record["trial_id"], scores)
    return None if best is None else best[1:]


def verdict(
    rung: int,
    episodes: int,
    scores: np.ndarray,
    rivals: Sequence[dict[str, Any]],
    goodness,
    seconds: float | None = None,
) -> Verdict:
    """Compares `scores` at `rung` with the leader's on the same episodes."""
    leader = leader_at(rung, rivals, goodness)
    if leader is None or len(leader[1]) != len(scores):
        return Verdict(rung, episodes, None, 0.0, 0.0, stop=False, seconds=seconds)
    trial_id, leader_scores = leader
    # goodness turns each episode's score so that higher is better (MSE: negated).
    differences = np.array([goodness(a) - goodness(b) for a, b in zip(scores, leader_scores)])
    mean, ci95 = mean_and_ci95(differences)
    return Verdict(
        rung, episodes, trial_id, mean, ci95, stop=bool(mean + ci95 < 0.0), seconds=seconds
    )
