"""Search strategies as keras-tuner oracles, and `make_oracle` to pick one by name.

Every strategy is a `StrategyOracle` (see `base`: the contract, the constraint
hook, liveness for distributed searches), registered by name under the
`metasearch.strategies` entry-point group, one module per algorithm:

* `random` (`random_search.RandomOracle`), `grid` (`grid_search.GridOracle`):
  keras-tuner's own.
* `bayesian` (`bayesian.BayesianOracle`): keras-tuner's Gaussian-process
  oracle with a cheaper proposal step for discrete spaces.
* `hyperband` (`hyperband.HyperbandOracle`): keras-tuner's Hyperband, capped
  at `max_trials` trials.
* `evolution` (`evolution.EvolutionOracle`): regularized (aging) evolution,
  Real et al. 2019.
* `controller` (`controller.ControllerOracle`): NASNet's recurrent controller
  trained with REINFORCE, a plain-numpy LSTM.

All of them accept a constraint (`candidate_filter`): candidates it rejects
are never turned into trials and the strategy proposes others. Every oracle
keeps all of its state in keras-tuner's `get_state`/`set_state` (JSON), so a
killed search resumes where it stopped. Each declares its options in
`OPTIONS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras_tuner

from metasearch import options as options_lib
from metasearch import registry
from metasearch.errors import UsageError
from metasearch.strategies.base import (
    IDLE,
    MAX_FILTER_ATTEMPTS,
    RUNNING,
    STOPPED,
    CandidateFilter,
    ConstraintMixin,
    StrategyOracle,
)

__all__ = [
    "IDLE",
    "MAX_FILTER_ATTEMPTS",
    "RUNNING",
    "STOPPED",
    "CandidateFilter",
    "ConstraintMixin",
    "StrategyOracle",
    "make_oracle",
    "strategy_class",
]


def strategy_class(strategy: str) -> type[StrategyOracle]:
    """The class registered as `strategy`; unknown names raise `UsageError` listing the known."""
    cls = registry.load("strategy", strategy, "strategy")
    if not (isinstance(cls, type) and issubclass(cls, StrategyOracle)):
        raise TypeError(
            f"metasearch.strategies: {strategy!r} is registered as {cls!r}, which is not a "
            "subclass of metasearch.strategies.StrategyOracle"
        )
    return cls


def make_oracle(
    strategy: str,
    *,
    objective: keras_tuner.Objective,
    max_trials: int | None,
    seed: int,
    hyperparameters: keras_tuner.HyperParameters | None,
    options: Mapping[str, Any] | None = None,
) -> StrategyOracle:
    """The oracle of `strategy` (a name registered under `metasearch.strategies`).

    `seed` must not be 0 (keras-tuner replaces a falsy seed by a random one).
    `options` override the strategy's defaults (its `OPTIONS`); unknown
    strategies, unknown options and bad values raise `UsageError`.
    """
    cls = strategy_class(strategy)
    if not seed:
        raise ValueError("make_oracle: seed must not be 0 (derive it from --seed)")
    where = f"--strategy={strategy}"
    resolved = options_lib.resolve(cls.OPTIONS, options, where, flag_prefix=strategy)
    try:
        return cls.from_options(
            resolved,
            objective=objective,
            max_trials=max_trials,
            seed=seed,
            hyperparameters=hyperparameters,
        )
    except ValueError as error:
        raise UsageError(f"{where}: {error}") from None
