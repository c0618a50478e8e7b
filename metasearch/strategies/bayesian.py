"""`bayesian`: Gaussian-process Bayesian optimisation, with a proposal step fit for discrete spaces."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import sklearn.exceptions
import sklearn.gaussian_process
from keras_tuner.engine import hyperparameters as hp_module
from scipy import stats

from metasearch import kt_adapter
from metasearch.options import Option
from metasearch.strategies.base import (
    RUNNING,
    StrategyOracle,
    draw,
    is_mutable,
    rng_from_state,
    rng_state,
    value_at,
)


def normal_scores(y: np.ndarray) -> np.ndarray:
    """Ranks mapped to standard-normal quantiles (ties share their mean rank)."""
    ranks = stats.rankdata(y)
    return stats.norm.ppf((ranks - 0.5) / len(y))


class BayesianOracle(StrategyOracle, kt_adapter.BayesianOptimizationOracle):
    """keras-tuner's Gaussian-process oracle with a proposal step fit for discrete spaces.

    keras-tuner's `BayesianOptimizationOracle` refits the GP with 20 optimiser
    restarts and maximises UCB with 50 L-BFGS runs in a relaxed [0, 1]^d
    space at every query: 100 queries on the NAS-Bench-201 space took 180-250 s
    on one CPU thread (`benchmarks/nb201_strategies.py --stock_bayesian_seeds`),
    far too slow for tabular benchmarks of hundreds of searches, and the
    relaxed optimum of an unordered Choice maps back to an arbitrary value.
    This subclass keeps its GP machinery (scikit-learn's
    `GaussianProcessRegressor`, Matern 5/2 kernel, normalised targets, UCB
    with `beta`) but:

    * encodes a Choice one-hot (unordered values are equally far apart), a
      Boolean as 0/1, Int/Float by keras-tuner's `value_to_prob`;
    * fits the GP to the scores' ranks mapped to normal quantiles
      (`rank_scores`): a few broken candidates scoring near zero otherwise
      dominate the fit and flatten the differences among good ones;
    * refits with `gp_restarts` optimiser restarts (default 2) and starts
      after `num_initial_points` random trials (default 10);
    * maximises UCB over a pool of `pool_size` random candidates plus every
      one-change neighbour of the `neighbour_parents` best trials, skipping
      tried (and rejected) ones;
    * treats running trials as observed at the GP's mean (kriging believer),
      so parallel workers get different candidates.

    About 30 ms a query on NAS-Bench-201 (up to 100 trials seen, one CPU thread).
    """

    OPTIONS = (
        Option(
            "num_initial_points",
            int,
            10,
            "random trials before the Gaussian process proposes (unset or 0: 3 per searched "
            "hyperparameter, at least 3).",
            lower_bound=0,
        ),
        Option("alpha", float, 1e-4, "noise added to the kernel's diagonal.", lower_bound=0),
        Option(
            "beta",
            float,
            2.6,
            "exploration weight of the upper confidence bound (mean + beta * std).",
        ),
        Option("pool_size", int, 500, "random candidates scored per proposal.", lower_bound=0),
        Option(
            "neighbour_parents",
            int,
            5,
            "best trials whose one-change neighbours are scored per proposal.",
            lower_bound=0,
        ),
        Option(
            "gp_restarts", int, 2, "restarts of the kernel's hyperparameter fit.", lower_bound=0
        ),
        Option(
            "rank_scores",
            bool,
            True,
            "fit the process to the scores' normal quantiles instead of the scores.",
        ),
    )
    FILTERS_ITSELF = True

    def __init__(
        self,
        *args,
        num_initial_points: int | None = 10,
        pool_size: int = 500,
        neighbour_parents: int = 5,
        gp_restarts: int = 2,
        rank_scores: bool = True,
        **kwargs,
    ):
        kwargs["num_initial_points"] = num_initial_points
        self.rank_scores = rank_scores
        self.pool_size = pool_size
        self.neighbour_parents = neighbour_parents
        self.gp_restarts = gp_restarts
        super().__init__(*args, **kwargs)
        self._rng = np.random.default_rng(self.seed)

    def make_gpr(self):
        return sklearn.gaussian_process.GaussianProcessRegressor(
            # One-hot codes of candidates differing in k Choices lie sqrt(2k)
            # apart: shorter length scales only fit noise (and hit the bound).
            kernel=sklearn.gaussian_process.kernels.Matern(
                length_scale=1.0, length_scale_bounds=(0.1, 100.0), nu=2.5
            ),
            n_restarts_optimizer=self.gp_restarts,
            normalize_y=True,
            alpha=self.alpha,
            random_state=self.seed,
        )

    def _encode(self, candidates: list[Mapping[str, Any]]) -> np.ndarray:
        """Candidates as GP inputs: Choice one-hot, Boolean 0/1, Int/Float in [0, 1]."""
        columns = []
        for hp in self.hyperparameters.space:
            if isinstance(hp, hp_module.Fixed):
                continue
            if isinstance(hp, hp_module.Choice):
                index = {value: i for i, value in enumerate(hp.values)}
                block = np.zeros((len(candidates), len(index)))
                for row, values in enumerate(candidates):
                    block[row, index.get(values.get(hp.name, hp.default), 0)] = 1.0
            elif isinstance(hp, hp_module.Boolean):
                block = np.array([[float(bool(v.get(hp.name, hp.default)))] for v in candidates])
            else:
                block = np.array(
                    [[float(hp.value_to_prob(v.get(hp.name, hp.default)))] for v in candidates]
                )
            columns.append(block.reshape(len(candidates), -1))
        return np.hstack(columns) if columns else np.zeros((len(candidates), 0))

    def _neighbours(self, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        found = []
        for hp in self.hyperparameters.space:
            if hp.name not in values or not is_mutable(hp):
                continue
            if isinstance(hp, (hp_module.Choice, hp_module.Boolean)):
                others = [v for v in hp.values if v != values[hp.name]]
            else:
                others = [draw(hp, self._rng) for _ in range(3)]
            for other in others:
                found.append(self.complete_values({**values, hp.name: other}, self._rng))
        return found

    def propose(self, trial_id):
        completed = self.completed_in_order()
        dimensions = len([hp for hp in self.hyperparameters.space if is_mutable(hp)])
        if len(completed) < (self.num_initial_points or max(3 * dimensions, 3)):
            return self.filtered_random_response()

        x = self._encode([t.hyperparameters.values for t in completed])
        y = np.array([self.goodness(t.score) for t in completed])
        y = np.nan_to_num(y, nan=np.nanmin(y), posinf=0.0, neginf=0.0)
        if self.rank_scores:
            y = normal_scores(y)
        with warnings.catch_warnings():
            # A length scale at a bound is a fine model here, not a failure.
            warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
            self.gpr.fit(x, y)
        running = [t for t in self.ongoing_trials.values() if t.status == RUNNING]
        if running:
            # Kriging believer: running trials count as observed at the GP's mean.
            x_running = self._encode([t.hyperparameters.values for t in running])
            believed = self.gpr.predict(x_running)
            fixed = type(self.gpr)(
                kernel=self.gpr.kernel_, optimizer=None, normalize_y=True, alpha=self.alpha
            )
            model = fixed.fit(np.vstack([x, x_running]), np.concatenate([y, believed]))
        else:
            model = self.gpr

        # Plain tuples of values identify candidates here: hashing each one the
        # way keras-tuner does would cost more than the GP.
        names = [hp.name for hp in self.hyperparameters.space]

        def key(values):
            return tuple(values.get(name) for name in names)

        tried = {key(t.hyperparameters.values) for t in self.trials.values()}
        tried.update(key(r["values"]) for r in self.rejected)
        pool: dict[tuple, dict[str, Any]] = {}
        best = sorted(completed, key=lambda t: self.goodness(t.score), reverse=True)
        for trial in best[: self.neighbour_parents]:
            for values in self._neighbours(trial.hyperparameters.values):
                pool.setdefault(key(values), values)
        space = self.hyperparameters.space
        if any(hp.conditions for hp in space):
            randoms = [self.complete_values({}, self._rng) for _ in range(self.pool_size)]
        else:
            probs = self._rng.random((self.pool_size, len(space)))
            randoms = [
                {hp.name: value_at(hp, p) for hp, p in zip(space, row)} for row in probs.tolist()
            ]
        for values in randoms:
            pool.setdefault(key(values), values)
        candidates = [values for k, values in pool.items() if k not in tried]
        if not candidates:
            return self.filtered_random_response()
        mean, std = model.predict(self._encode(candidates), return_std=True)
        order = np.argsort(-(mean + self.beta * std), kind="stable")
        for attempt, index in enumerate(order):
            if attempt >= self.max_filter_attempts:
                return self.stop_for_filter()
            if self.check_candidate(candidates[index]) is None:
                return {"status": RUNNING, "values": candidates[index]}
        # No candidate of the pool passed the filter: an accepted random one.
        return self.filtered_random_response()

    def get_state(self):
        state = super().get_state()
        state.update(
            pool_size=self.pool_size,
            neighbour_parents=self.neighbour_parents,
            gp_restarts=self.gp_restarts,
            rank_scores=self.rank_scores,
            rng=rng_state(self._rng),
        )
        return state

    def set_state(self, state):
        self.pool_size = state["pool_size"]
        self.neighbour_parents = state["neighbour_parents"]
        self.gp_restarts = state["gp_restarts"]
        self.rank_scores = state["rank_scores"]
        super().set_state(state)
        self._rng = rng_from_state(state["rng"])
