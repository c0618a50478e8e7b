"""`evolution`: regularized (aging) evolution, Real et al. 2019."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras_tuner
import numpy as np
from keras_tuner.engine import hyperparameters as hp_module

from metasearch.options import Option
from metasearch.strategies.base import (
    RUNNING,
    StrategyOracle,
    draw,
    is_mutable,
    rng_from_state,
    rng_state,
)


class EvolutionOracle(StrategyOracle):
    """Regularized (aging) evolution, Real et al. 2019.

    The population is the last `population_size` completed trials in the
    order they completed: each new completion ages out the oldest member.
    Until it is full, candidates are random. Then each candidate is a child:
    `sample_size` members are drawn at random, the best of them (by the
    objective) is the parent, and exactly one of its hyperparameters changes
    (Choice and Boolean: another value; Int and Float: a fresh random value;
    Fixed never). A child equal to any tried (or rejected) candidate is
    mutated again. Only completed trials matter, so parallel workers always
    get a candidate (random while the population fills).

    Defaults (population 20, tournament 10) were tuned on NAS-Bench-201 at
    100 trials (seeds other than the benchmark's): a larger tournament than
    the paper's favours exploitation, which pays at such short budgets.
    """

    OPTIONS = (
        Option("population", int, 20, "population size.", lower_bound=2),
        Option(
            "sample_size",
            int,
            10,
            "tournament size, members sampled to pick a parent (at most the population).",
            lower_bound=1,
        ),
    )
    OPTION_ARGUMENTS = {"population": "population_size"}

    def __init__(
        self,
        objective=None,
        max_trials=None,
        hyperparameters=None,
        population_size: int = 20,
        sample_size: int = 10,
        seed=None,
        **kwargs,
    ):
        if population_size < 2 or not 1 <= sample_size <= population_size:
            raise ValueError(
                f"need population (population_size) >= 2 and 1 <= sample_size <= population, "
                f"got population {population_size} and sample_size {sample_size}"
            )
        super().__init__(
            objective=objective,
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            seed=seed,
            **kwargs,
        )
        self.population_size = population_size
        self.sample_size = sample_size
        self._rng = np.random.default_rng(self.seed)

    def population(self) -> list[keras_tuner.engine.trial.Trial]:
        """The living members, oldest first."""
        return self.completed_in_order()[-self.population_size :]

    def mutate(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """`values` with exactly one mutable hyperparameter changed (None: nothing to change)."""
        mutable = [hp for hp in self.hyperparameters.space if hp.name in values and is_mutable(hp)]
        if not mutable:
            return None
        hp = mutable[int(self._rng.integers(len(mutable)))]
        old = values[hp.name]
        if isinstance(hp, (hp_module.Choice, hp_module.Boolean)):
            others = [v for v in hp.values if v != old]
            new = others[int(self._rng.integers(len(others)))]
        else:
            new = old
            for _ in range(20):
                new = draw(hp, self._rng)
                if new != old:
                    break
            if new == old:
                return None
        return self.complete_values({**values, hp.name: new}, self._rng)

    def propose(self, trial_id):
        population = self.population()
        if len(population) < self.population_size:
            return self.random_response()
        # A few tournaments, each with a few mutations of its winner, find an
        # untried child unless the neighbourhood of the population is exhausted.
        for _ in range(10):
            members = self._rng.choice(len(population), size=self.sample_size, replace=False)
            parent = max(
                (population[int(i)] for i in members), key=lambda t: self.goodness(t.score)
            )
            for _ in range(10):
                child = self.mutate(parent.hyperparameters.values)
                if child is not None and not self.is_duplicate(child):
                    return {"status": RUNNING, "values": child}
        return self.random_response()

    def get_state(self):
        state = super().get_state()
        state.update(
            population_size=self.population_size,
            sample_size=self.sample_size,
            rng=rng_state(self._rng),
        )
        return state

    def set_state(self, state):
        super().set_state(state)
        self.population_size = state["population_size"]
        self.sample_size = state["sample_size"]
        self._rng = rng_from_state(state["rng"])
