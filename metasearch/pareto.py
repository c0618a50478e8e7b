"""Pareto-optimal trials: the best trades between a trial's score and what it costs.

A completed, scored trial is Pareto-optimal for a cost (`latency_ms` or
`parameters`) when no other trial is at least as good and at least as cheap
and better on one of the two. Scores are compared by their kind's direction
(`rundir.trial_score`: higher is better), so accuracy and MSE both work.
"""

from __future__ import annotations

import math
from typing import Any

from metasearch.rundir import trial_score

# cost key -> (mark in the leaderboard, words)
COSTS = {
    "latency_ms": ("L", "latency"),
    "parameters": ("P", "parameters"),
}


def _cost(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def points(results: list[dict[str, Any]], cost: str) -> list[tuple[dict[str, Any], float, float]]:
    """`(record, cost, score)` of every completed trial that has both (score: higher is better)."""
    found = []
    for record in results:
        if record.get("status") != "COMPLETED":
            continue
        score, value = trial_score(record), _cost(record, cost)
        if score is not None and value is not None and math.isfinite(score):
            found.append((record, value, score))
    return found


def front(results: list[dict[str, Any]], cost: str) -> list[str]:
    """Trial ids of the Pareto-optimal trials for `cost`, cheapest first."""
    candidates = points(results, cost)
    optimal = []
    for record, value, score in candidates:
        dominated = any(
            other_value <= value
            and other_score >= score
            and (other_value < value or other_score > score)
            for _, other_value, other_score in candidates
        )
        if not dominated:
            optimal.append((value, -score, record["trial_id"]))
    return [trial_id for *_, trial_id in sorted(optimal)]


def marks(results: list[dict[str, Any]]) -> dict[str, str]:
    """`trial_id -> "L P"`-style marks: on the latency front (L), the parameters front (P)."""
    found: dict[str, list[str]] = {}
    for cost, (mark, _) in COSTS.items():
        for trial_id in front(results, cost):
            found.setdefault(trial_id, []).append(mark)
    return {trial_id: " ".join(letters) for trial_id, letters in found.items()}
