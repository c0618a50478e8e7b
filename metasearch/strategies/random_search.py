"""`random`: keras-tuner's random search."""

from __future__ import annotations

from metasearch import kt_adapter
from metasearch.strategies.base import StrategyOracle


class RandomOracle(StrategyOracle, kt_adapter.RandomSearchOracle):
    """keras-tuner's random search: untried random candidates, seeded by the oracle's seed."""
