"""`hyperband`: keras-tuner's Hyperband, capped at `max_trials` trials."""

from __future__ import annotations

import math

from metasearch import kt_adapter
from metasearch.options import Option
from metasearch.strategies.base import StrategyOracle


class HyperbandOracle(StrategyOracle, kt_adapter.HyperbandOracle):
    """keras-tuner's Hyperband, stopping after `max_trials` trials (None: its own budget).

    With `max_trials` set, brackets repeat until that many trials ran (unless
    `hyperband_iterations` is given). Only brand-new random candidates meet
    the constraint: promotions continue trials it accepted already. A trial's
    `tuner/epochs` are budget units: the tuner gives a trial of `max_epochs`
    units the whole `--episodes_per_trial`.
    """

    # Its brackets carry their own bookkeeping (tuner/epochs, promotions).
    STARTS_FROM_DEFAULT = False

    OPTIONS = (
        Option(
            "max_epochs",
            int,
            9,
            "budget units of the longest trial; a unit is --episodes_per_trial / this many "
            "episodes, so a fully promoted trial trains --episodes_per_trial episodes.",
            lower_bound=1,
        ),
        Option("factor", int, 3, "halving factor.", lower_bound=2),
        Option(
            "hyperband_iterations",
            int,
            None,
            "sweeps over all brackets (default: as many as --max_trials allows; 1 without it).",
            lower_bound=1,
        ),
    )
    FILTERS_ITSELF = True

    def __init__(self, *args, max_trials=None, hyperband_iterations=None, **kwargs):
        if hyperband_iterations is None:
            # keras-tuner: None means forever; its own default is a single sweep.
            hyperband_iterations = None if max_trials is not None else 1
        super().__init__(*args, hyperband_iterations=hyperband_iterations, **kwargs)
        self.max_trials = max_trials

    def random_values(self):
        if self.candidate_filter is None:
            return super().random_values()
        for _ in range(self.max_filter_attempts):
            values = super().random_values()
            if values is None or self.check_candidate(values) is None:
                return values
        if not self.ongoing_trials:
            # Otherwise keras-tuner waits (IDLE) and running trials may still promote.
            self.stop_for_filter()
        return None

    # `max_trials` is not state (as for every oracle): a resumed search may raise it.
    def get_state(self):
        state = super().get_state()
        if math.isinf(self.hyperband_iterations):
            state["hyperband_iterations"] = None  # JSON has no infinity
        return state

    def set_state(self, state):
        super().set_state(state)
        self.hyperband_iterations = state["hyperband_iterations"] or float("inf")
