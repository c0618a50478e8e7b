"""Search strategies as keras-tuner oracles, and `make_oracle` to pick one by name.

Every strategy is a `keras_tuner.Oracle`, so keras-tuner keeps the books
(trials, retries, resume from `oracle.json`) whatever the strategy:

* `random`, `grid`: keras-tuner's own.
* `bayesian`: keras-tuner's Gaussian-process oracle with a cheaper proposal
  step for discrete spaces (`BayesianOracle`, see there why).
* `hyperband`: keras-tuner's Hyperband, capped at `max_trials` trials.
* `evolution`: regularized (aging) evolution, Real et al. 2019 (`EvolutionOracle`).
* `controller`: NASNet's recurrent controller trained with REINFORCE
  (`ControllerOracle`), a plain-numpy LSTM.

All of them accept a constraint (`candidate_filter`, see `ConstraintMixin`):
candidates it rejects are never turned into trials and the strategy proposes
others. Every oracle keeps all of its state in keras-tuner's
`get_state`/`set_state` (JSON), so a killed search resumes where it stopped.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import keras_tuner
import numpy as np
import sklearn.exceptions
import sklearn.gaussian_process
from keras_tuner.engine import hyperparameters as hp_module
from keras_tuner.src.tuners import gridsearch
from scipy import stats

from metasearch.errors import UsageError
from metasearch.flags import STRATEGIES  # the one list, also --strategy's choices

RUNNING, IDLE, STOPPED = "RUNNING", "IDLE", "STOPPED"
# How many candidates in a row the constraint may reject before the search stops.
MAX_FILTER_ATTEMPTS = 100

CandidateFilter = Callable[[dict[str, Any]], "str | None"]


# --------------------------------------------------------------------------- helpers


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    # PCG64's state is a dict of (large) Python ints: JSON keeps them exactly.
    return rng.bit_generator.state


def _rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng


def _mutable(hp: hp_module.HyperParameter) -> bool:
    """Whether `hp` has more than one value a mutation could switch to."""
    if isinstance(hp, hp_module.Fixed):
        return False
    if isinstance(hp, hp_module.Choice):
        return len(hp.values) > 1
    if isinstance(hp, hp_module.Boolean):
        return True
    if isinstance(hp, (hp_module.Int, hp_module.Float)):
        return hp.min_value < hp.max_value
    return False


def _value_at(hp: hp_module.HyperParameter, prob: float) -> Any:
    """`hp`'s value at cumulative probability `prob` (keras-tuner's mapping: log, step...)."""
    if isinstance(hp, hp_module.Fixed):
        return hp.value
    return hp.prob_to_value(prob)


def _draw(hp: hp_module.HyperParameter, rng: np.random.Generator) -> Any:
    """A uniformly random value of `hp`."""
    return _value_at(hp, float(rng.random()))


def _normal_scores(y: np.ndarray) -> np.ndarray:
    """Ranks mapped to standard-normal quantiles (ties share their mean rank)."""
    ranks = stats.rankdata(y)
    return stats.norm.ppf((ranks - 0.5) / len(y))


class ConstraintMixin:
    """The constraint hook every oracle of `make_oracle` has.

    `candidate_filter` is None (accept all) or a callable `values -> str | None`
    returning why a candidate is rejected, or None to accept it. With a filter
    set, a rejected candidate never becomes a trial: the strategy is told
    (`on_candidate_rejected`) and proposes again, up to `MAX_FILTER_ATTEMPTS`
    times per trial; then the oracle returns STOPPED and records why in
    `stop_reason`. Verdicts are cached by value hash (a candidate is never
    checked twice), rejected candidates count as already tried, and every
    rejection is kept in `rejected` as `{"values": ..., "reason": ...}`, part of
    the oracle's saved state.
    """

    # Subclasses whose proposal step consults the filter itself set this.
    _filters_itself = False

    def __init__(self, *args, **kwargs):
        self.candidate_filter: CandidateFilter | None = None
        self.rejected: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        # Value hash -> rejection reason, derived from `rejected` (rebuilt on resume).
        self._rejected_reasons: dict[str, str] = {}
        super().__init__(*args, **kwargs)

    # keras-tuner calls `populate_space`; strategies implement `propose`.
    def populate_space(self, trial_id):
        if self.candidate_filter is None or self._filters_itself:
            return self.propose(trial_id)
        for _ in range(MAX_FILTER_ATTEMPTS):
            response = self.propose(trial_id)
            if response.get("status") != RUNNING:
                return response
            reason = self.check_candidate(response["values"])
            if reason is None:
                return response
            self.on_candidate_rejected(response["values"], reason)
        return self.stop_for_filter()

    def propose(self, trial_id) -> dict[str, Any]:
        """The strategy's next candidate, as `populate_space` returns it."""
        return super().populate_space(trial_id)

    def check_candidate(self, values: Mapping[str, Any]) -> str | None:
        """The filter's verdict on `values` (None: accepted), each candidate checked once."""
        if self.candidate_filter is None:
            return None
        key = self._compute_values_hash(values)
        if key in self._rejected_reasons:
            return self._rejected_reasons[key]
        if key in self._tried_so_far:
            return None  # already a trial: it was accepted before
        reason = self.candidate_filter(dict(values))
        if reason is not None:
            self.rejected.append({"values": dict(values), "reason": str(reason)})
            self._rejected_reasons[key] = str(reason)
            return str(reason)
        return None

    def on_candidate_rejected(self, values: Mapping[str, Any], reason: str) -> None:
        """Tells the strategy a candidate was rejected (default: nothing to learn)."""

    def stop_for_filter(self) -> dict[str, Any]:
        self.stop_reason = (
            f"the constraint rejected {MAX_FILTER_ATTEMPTS} candidates in a row "
            f"(last: {self.rejected[-1]['reason'] if self.rejected else 'none'}); "
            "the search stops"
        )
        return {"status": STOPPED, "values": None}

    def _duplicate(self, values):
        # Rejected candidates count as tried, so random sampling and mutation skip them.
        return (
            super()._duplicate(values)
            or self._compute_values_hash(values) in self._rejected_reasons
        )

    def _goodness(self, score: float) -> float:
        """The score turned so that higher is better, whatever the objective's direction."""
        return score if self.objective.direction == "max" else -score

    def _completed_in_order(self) -> list[keras_tuner.engine.trial.Trial]:
        """Completed trials with a score, in the order they ended."""
        trials = (self.trials[trial_id] for trial_id in self.end_order)
        return [t for t in trials if t.status == "COMPLETED" and t.score is not None]

    def _random_response(self) -> dict[str, Any]:
        values = self._random_values()
        if values is None:
            # The space is exhausted, unless running trials may add hyperparameters.
            return {"status": IDLE if self.ongoing_trials else STOPPED, "values": None}
        return {"status": RUNNING, "values": values}

    def _complete_values(self, values: Mapping[str, Any], rng: np.random.Generator):
        """`values` restricted to the active hyperparameters, new active ones drawn."""
        space = self.hyperparameters.space
        if not any(hp.conditions for hp in space):  # the common case, without keras-tuner's cost
            return {
                hp.name: values[hp.name] if hp.name in values else _draw(hp, rng) for hp in space
            }
        hps = hp_module.HyperParameters()
        for hp in space:
            hps.merge([hp])
            if hps.is_active(hp):
                hps.values[hp.name] = values[hp.name] if hp.name in values else _draw(hp, rng)
        return hps.values

    def get_state(self):
        state = super().get_state()
        state["constraint"] = {"rejected": self.rejected, "stop_reason": self.stop_reason}
        return state

    def set_state(self, state):
        super().set_state(state)
        constraint = state.get("constraint", {})
        self.rejected = list(constraint.get("rejected", []))
        self.stop_reason = constraint.get("stop_reason")
        self._rejected_reasons = {
            self._compute_values_hash(r["values"]): r["reason"] for r in self.rejected
        }


# --------------------------------------------------------------------------- keras-tuner's


class RandomOracle(ConstraintMixin, keras_tuner.oracles.RandomSearchOracle):
    """keras-tuner's random search, with the constraint hook."""


class GridOracle(ConstraintMixin, keras_tuner.oracles.GridSearchOracle):
    """keras-tuner's grid search, with the constraint hook.

    Grid search walks from each tried combination to the next one, so a
    rejected combination is skipped in place (the walk goes on to the
    combination after it) instead of re-asking the walk.
    """

    _filters_itself = True

    def propose(self, trial_id):
        if self.candidate_filter is None:
            return super().propose(trial_id)
        values = None
        attempts = 0
        if len(self.start_order) == 0:
            hps = self.get_space()
            values = {hp.name: hp.default for hp in hps.space if hps.is_active(hp)}
            while values is not None and self.check_candidate(values) is not None:
                attempts += 1
                if attempts >= MAX_FILTER_ATTEMPTS:
                    return self.stop_for_filter()
                values = self._get_next_combination(values)
            if values is None:
                return {"status": STOPPED, "values": None}
            self._ordered_ids.insert(trial_id)
            self._populate_next.append(trial_id)
        while self._populate_next and values is None:
            old_trial_id = self._populate_next.pop(0)
            new_values = self._get_next_combination(
                self.trials[old_trial_id].hyperparameters.values
            )
            while new_values is not None and self.check_candidate(new_values) is not None:
                attempts += 1
                if attempts >= MAX_FILTER_ATTEMPTS:
                    self._populate_next.insert(0, old_trial_id)
                    return self.stop_for_filter()
                new_values = self._get_next_combination(new_values)
            if new_values is None:
                continue
            next_id = self._ordered_ids.next(old_trial_id)
            if next_id is not None:
                if self._compare(new_values, self.trials[next_id].hyperparameters.values) >= 0:
                    continue
            self._ordered_ids.insert(trial_id, old_trial_id)
            values = new_values
        if values is not None:
            return {"status": RUNNING, "values": values}
        return {"status": IDLE if self.ongoing_trials else STOPPED, "values": None}

    def set_state(self, state):
        # keras-tuner keeps the walk (trials in grid order, trials to walk on
        # from) only in memory, so a resumed grid search stopped at once.
        # Both follow from the trials: rebuild them.
        super().set_state(state)
        self._ordered_ids = gridsearch.LinkedList()
        ordered = sorted(
            self.trials,
            key=functools.cmp_to_key(
                lambda a, b: self._compare(
                    self.trials[a].hyperparameters.values, self.trials[b].hyperparameters.values
                )
            ),
        )
        for trial_id in ordered:
            self._ordered_ids.insert(trial_id)
        self._populate_next = list(self.end_order)


class HyperbandOracle(ConstraintMixin, keras_tuner.oracles.HyperbandOracle):
    """keras-tuner's Hyperband, stopping after `max_trials` trials (None: its own budget).

    With `max_trials` set, brackets repeat until that many trials ran. Only
    brand-new random candidates meet the constraint: promotions continue trials
    it accepted already.
    """

    _filters_itself = True

    def __init__(self, *args, max_trials=None, **kwargs):
        if max_trials is not None and "hyperband_iterations" not in kwargs:
            kwargs["hyperband_iterations"] = None  # keras-tuner: None means forever
        super().__init__(*args, **kwargs)
        self.max_trials = max_trials

    def _random_values(self):
        if self.candidate_filter is None:
            return super()._random_values()
        for _ in range(MAX_FILTER_ATTEMPTS):
            values = super()._random_values()
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


# --------------------------------------------------------------------------- bayesian


class BayesianOracle(ConstraintMixin, keras_tuner.oracles.BayesianOptimizationOracle):
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

    _filters_itself = True

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

    def _make_gpr(self):
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
            if hp.name not in values or not _mutable(hp):
                continue
            if isinstance(hp, (hp_module.Choice, hp_module.Boolean)):
                others = [v for v in hp.values if v != values[hp.name]]
            else:
                others = [_draw(hp, self._rng) for _ in range(3)]
            for other in others:
                found.append(self._complete_values({**values, hp.name: other}, self._rng))
        return found

    def propose(self, trial_id):
        completed = self._completed_in_order()
        dimensions = len([hp for hp in self.hyperparameters.space if _mutable(hp)])
        if len(completed) < (self.num_initial_points or max(3 * dimensions, 3)):
            if self.candidate_filter is None:
                return self._random_response()
            for _ in range(MAX_FILTER_ATTEMPTS):
                response = self._random_response()
                if response["status"] != RUNNING:
                    return response
                if self.check_candidate(response["values"]) is None:
                    return response
            return self.stop_for_filter()

        x = self._encode([t.hyperparameters.values for t in completed])
        y = np.array([self._goodness(t.score) for t in completed])
        y = np.nan_to_num(y, nan=np.nanmin(y), posinf=0.0, neginf=0.0)
        if self.rank_scores:
            y = _normal_scores(y)
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
        best = sorted(completed, key=lambda t: self._goodness(t.score), reverse=True)
        for trial in best[: self.neighbour_parents]:
            for values in self._neighbours(trial.hyperparameters.values):
                pool.setdefault(key(values), values)
        space = self.hyperparameters.space
        if any(hp.conditions for hp in space):
            randoms = [self._complete_values({}, self._rng) for _ in range(self.pool_size)]
        else:
            probs = self._rng.random((self.pool_size, len(space)))
            randoms = [
                {hp.name: _value_at(hp, p) for hp, p in zip(space, row)} for row in probs.tolist()
            ]
        for values in randoms:
            pool.setdefault(key(values), values)
        candidates = [values for k, values in pool.items() if k not in tried]
        if not candidates:
            return self._random_response()
        mean, std = model.predict(self._encode(candidates), return_std=True)
        order = np.argsort(-(mean + self.beta * std), kind="stable")
        for attempt, index in enumerate(order):
            if attempt >= MAX_FILTER_ATTEMPTS:
                return self.stop_for_filter()
            if self.check_candidate(candidates[index]) is None:
                return {"status": RUNNING, "values": candidates[index]}
        return self._random_response()

    def get_state(self):
        state = super().get_state()
        state.update(
            pool_size=self.pool_size,
            neighbour_parents=self.neighbour_parents,
            gp_restarts=self.gp_restarts,
            rank_scores=self.rank_scores,
            rng=_rng_state(self._rng),
        )
        return state

    def set_state(self, state):
        self.pool_size = state["pool_size"]
        self.neighbour_parents = state["neighbour_parents"]
        self.gp_restarts = state["gp_restarts"]
        self.rank_scores = state["rank_scores"]
        super().set_state(state)
        self._rng = _rng_from_state(state["rng"])


# --------------------------------------------------------------------------- evolution


class EvolutionOracle(ConstraintMixin, keras_tuner.Oracle):
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
                f"need population_size >= 2 and 1 <= sample_size <= population_size, "
                f"got {population_size} and {sample_size}"
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
        return self._completed_in_order()[-self.population_size :]

    def mutate(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """`values` with exactly one mutable hyperparameter changed (None: nothing to change)."""
        mutable = [hp for hp in self.hyperparameters.space if hp.name in values and _mutable(hp)]
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
                new = _draw(hp, self._rng)
                if new != old:
                    break
            if new == old:
                return None
        return self._complete_values({**values, hp.name: new}, self._rng)

    def propose(self, trial_id):
        population = self.population()
        if len(population) < self.population_size:
            return self._random_response()
        # A few tournaments, each with a few mutations of its winner, find an
        # untried child unless the neighbourhood of the population is exhausted.
        for _ in range(10):
            members = self._rng.choice(len(population), size=self.sample_size, replace=False)
            parent = max(
                (population[int(i)] for i in members), key=lambda t: self._goodness(t.score)
            )
            for _ in range(10):
                child = self.mutate(parent.hyperparameters.values)
                if child is not None and not self._duplicate(child):
                    return {"status": RUNNING, "values": child}
        return self._random_response()

    def get_state(self):
        state = super().get_state()
        state.update(
            population_size=self.population_size,
            sample_size=self.sample_size,
            rng=_rng_state(self._rng),
        )
        return state

    def set_state(self, state):
        super().set_state(state)
        self.population_size = state["population_size"]
        self.sample_size = state["sample_size"]
        self._rng = _rng_from_state(state["rng"])


# --------------------------------------------------------------------------- controller


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class ControllerOracle(ConstraintMixin, keras_tuner.Oracle):
    """NASNet's search method: a recurrent controller trained by policy gradient.

    An LSTM emits one token per hyperparameter, in declaration order; each
    step's input is the embedding of the previous token (a learned start
    vector for the first). Tokens: a Choice's values, a Boolean's two values,
    an Int's or Float's values at `grid_points` evenly spaced quantiles of
    keras-tuner's own sampling (log scale included), duplicates dropped.
    Fixed hyperparameters emit nothing. Logits pass through
    `tanh_constant * tanh(logits / temperature)` (ENAS's sharpening control).

    Training is REINFORCE with a moving-average baseline: reward = the trial's
    score (negated for objectives to minimise), advantage = reward - baseline,
    clipped to `advantage_clip` times its moving mean magnitude (so one broken
    candidate scoring near zero cannot drag the baseline down) and divided by
    that magnitude (so the learning rate does not depend on the score's
    units), plus `entropy_weight` times the policy's entropy. One Adam step
    per scored sample. A sample equal to a completed trial is scored from that
    trial without spending one (up to `max_resamples` times per proposal);
    then the policy is sampled restricted to untried token sequences (masking
    tokens whose every continuation was tried), so late proposals still follow
    the policy. A sample the constraint rejects is learned from with the
    lowest score seen so far (0 before any). The network is plain numpy with
    a hand-written backward pass (checked against finite differences in the
    tests): under a millisecond per step. Defaults were tuned on
    NAS-Bench-201 (seeds other than the benchmark's).
    """

    def __init__(
        self,
        objective=None,
        max_trials=None,
        hyperparameters=None,
        seed=None,
        hidden_size: int = 16,
        embedding_size: int = 16,
        learning_rate: float = 0.02,
        baseline_decay: float = 0.9,
        entropy_weight: float = 0.0,
        temperature: float = 1.0,
        tanh_constant: float | None = 2.5,
        grid_points: int = 8,
        max_resamples: int = 10,
        clip_norm: float = 5.0,
        advantage_clip: float | None = 2.0,
        **kwargs,
    ):
        super().__init__(
            objective=objective,
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            seed=seed,
            **kwargs,
        )
        self.settings = {
            "hidden_size": int(hidden_size),
            "embedding_size": int(embedding_size),
            "learning_rate": float(learning_rate),
            "baseline_decay": float(baseline_decay),
            "entropy_weight": float(entropy_weight),
            "temperature": float(temperature),
            "tanh_constant": None if tanh_constant is None else float(tanh_constant),
            "grid_points": int(grid_points),
            "max_resamples": int(max_resamples),
            "clip_norm": float(clip_norm),
            "advantage_clip": None if advantage_clip is None else float(advantage_clip),
        }
        self._rng = np.random.default_rng(self.seed)
        # All parameters (and Adam's moments, and the gradient) live in flat
        # vectors; `_params` and `_grads` hold named views. One Adam step is
        # then a handful of numpy calls instead of a few per parameter.
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._allocate({}, {}, {})
        self._adam_t = 0
        self._baseline: float | None = None
        self._scale: float | None = None
        self.updates = 0
        self._init_shared()

    # -- the policy network

    def _allocate(self, params, adam_m, adam_v) -> None:
        """Lays out the flat vectors for `self._shapes`, filled from the named arrays given."""
        sizes = [int(np.prod(shape)) for shape in self._shapes.values()]
        total = sum(sizes)
        self._flat, self._grad_flat = np.zeros(total), np.zeros(total)
        self._m_flat, self._v_flat = np.zeros(total), np.zeros(total)
        self._params, self._grads = {}, {}
        offset = 0
        for (name, shape), size in zip(self._shapes.items(), sizes):
            part = slice(offset, offset + size)
            offset += size
            self._params[name] = self._flat[part].reshape(shape)
            self._grads[name] = self._grad_flat[part].reshape(shape)
            for flat, source in (
                (self._flat, params),
                (self._m_flat, adam_m),
                (self._v_flat, adam_v),
            ):
                if name in source:
                    flat[part] = np.asarray(source[name], dtype=float).ravel()

    def _named(self, flat: np.ndarray) -> dict[str, list]:
        return {name: view.tolist() for name, view in self._named_views(flat).items()}

    def _new_param(self, name: str, shape: tuple[int, ...]) -> None:
        params = {**self._params, name: self._rng.uniform(-0.1, 0.1, size=shape)}
        adam_m, adam_v = self._named_views(self._m_flat), self._named_views(self._v_flat)
        self._shapes[name] = tuple(shape)
        self._allocate(params, adam_m, adam_v)  # copies out of the old vectors

    def _named_views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        views, offset = {}, 0
        for name, shape in self._shapes.items():
            size = int(np.prod(shape))
            views[name] = flat[offset : offset + size].reshape(shape)
            offset += size
        return views

    def _init_shared(self) -> None:
        hidden, embed = self.settings["hidden_size"], self.settings["embedding_size"]
        self._new_param("lstm/kernel", (embed + hidden, 4 * hidden))
        self._new_param("lstm/bias", (4 * hidden,))
        self._new_param("start", (embed,))

    def tokens(self, hp: hp_module.HyperParameter) -> list[Any]:
        """The values the controller can emit for `hp` (empty for Fixed)."""
        if isinstance(hp, hp_module.Fixed):
            return []
        if isinstance(hp, (hp_module.Choice, hp_module.Boolean)):
            return list(hp.values)
        points = self.settings["grid_points"]
        grid: list[Any] = []
        for i in range(points):
            value = hp.prob_to_value((i + 0.5) / points)
            if value not in grid:
                grid.append(value)
        return grid

    def _steps(self) -> list[tuple[hp_module.HyperParameter, list[Any]]]:
        steps = []
        embed, hidden = self.settings["embedding_size"], self.settings["hidden_size"]
        for hp in self.hyperparameters.space:
            vocabulary = self.tokens(hp)
            if not vocabulary:
                continue
            if f"out/{hp.name}/kernel" not in self._params:  # a hyperparameter seen first now
                size = len(vocabulary)
                self._new_param(f"embed/{hp.name}", (size, embed))
                self._new_param(f"out/{hp.name}/kernel", (hidden, size))
                self._new_param(f"out/{hp.name}/bias", (size,))
            steps.append((hp, vocabulary))
        return steps

    def _forward(self, steps, chosen: list[int] | None = None, allowed=None):
        """Runs the LSTM; samples tokens unless `chosen` gives them. Returns tokens and a cache.

        `allowed(t, prefix)`, if given, returns a 0/1 mask of the tokens step
        `t` may emit after `prefix`: sampling is restricted to them (the cache
        keeps the unrestricted probabilities, which the gradient needs).
        """
        p = self._params
        hidden = self.settings["hidden_size"]
        temperature, tanh_c = self.settings["temperature"], self.settings["tanh_constant"]
        kernel, bias = p["lstm/kernel"], p["lstm/bias"]
        h, c = np.zeros(hidden), np.zeros(hidden)
        x = p["start"]
        tokens, cache = [], []
        for t, (hp, vocabulary) in enumerate(steps):
            xh = np.concatenate([x, h])
            z = xh @ kernel + bias
            gates = _sigmoid(z[: 3 * hidden])
            i, f, o = gates[:hidden], gates[hidden : 2 * hidden], gates[2 * hidden :]
            g = np.tanh(z[3 * hidden :])
            c_new = f * c + i * g
            tanh_cell = np.tanh(c_new)
            h_new = o * tanh_cell
            scaled = (h_new @ p[f"out/{hp.name}/kernel"] + p[f"out/{hp.name}/bias"]) / temperature
            squashed = np.tanh(scaled) if tanh_c is not None else None
            activation = tanh_c * squashed if tanh_c is not None else scaled
            probs = np.exp(activation - activation.max())
            probs /= probs.sum()
            if chosen is None:
                weights = probs if allowed is None else probs * allowed(t, tuple(tokens))
                # Inverse CDF: much cheaper than Generator.choice for one draw.
                cumulative = np.cumsum(weights)
                token = int(np.searchsorted(cumulative, self._rng.random() * cumulative[-1]))
                token = min(token, len(vocabulary) - 1)
            else:
                token = chosen[t]
            tokens.append(token)
            cache.append((hp.name, xh, c, i, f, o, g, tanh_cell, h_new, squashed, probs))
            h, c = h_new, c_new
            x = p[f"embed/{hp.name}"][token]
        return tokens, cache

    def _gradients(self, tokens: list[int], cache, advantage: float) -> np.ndarray:
        """d(loss)/d(params), loss = -advantage * log p(tokens) - entropy_weight * entropy."""
        p = self._params
        hidden = self.settings["hidden_size"]
        embed = self.settings["embedding_size"]
        temperature, tanh_c = self.settings["temperature"], self.settings["tanh_constant"]
        entropy_weight = self.settings["entropy_weight"]
        kernel = p["lstm/kernel"]
        self._grad_flat.fill(0.0)
        grads = self._grads
        d_kernel, d_bias = grads["lstm/kernel"], grads["lstm/bias"]
        dh_next, dc_next = np.zeros(hidden), np.zeros(hidden)
        for t in reversed(range(len(tokens))):
            name, xh, c_prev, i, f, o, g, tanh_cell, h, squashed, probs = cache[t]
            d_activation = advantage * probs
            d_activation[tokens[t]] -= advantage
            if entropy_weight:
                log_probs = np.log(probs + 1e-12)
                entropy = -(probs * log_probs).sum()
                d_activation += entropy_weight * probs * (log_probs + entropy)
            if tanh_c is not None:
                d_activation = d_activation * tanh_c * (1.0 - squashed**2)
            d_logits = d_activation / temperature
            grads[f"out/{name}/kernel"][...] = np.outer(h, d_logits)
            grads[f"out/{name}/bias"][...] = d_logits
            dh = p[f"out/{name}/kernel"] @ d_logits + dh_next
            do = dh * tanh_cell
            dc = dh * o * (1.0 - tanh_cell**2) + dc_next
            dz = np.concatenate(
                [
                    dc * g * i * (1 - i),
                    dc * c_prev * f * (1 - f),
                    do * o * (1 - o),
                    dc * i * (1 - g**2),
                ]
            )
            d_kernel += np.outer(xh, dz)
            d_bias += dz
            dxh = kernel @ dz
            dx, dh_next = dxh[:embed], dxh[embed:]
            dc_next = dc * f
            if t == 0:
                grads["start"][...] = dx
            else:
                grads[f"embed/{cache[t - 1][0]}"][tokens[t - 1]] += dx
        return self._grad_flat

    def _adam_step(self, grad: np.ndarray) -> None:
        norm = math.sqrt(float(np.dot(grad, grad)))
        clip = self.settings["clip_norm"]
        if norm > clip:
            grad = grad * (clip / norm)
        self._adam_t += 1
        lr, beta1, beta2 = self.settings["learning_rate"], 0.9, 0.999
        step = lr * math.sqrt(1 - beta2**self._adam_t) / (1 - beta1**self._adam_t)
        m, v = self._m_flat, self._v_flat
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad * grad
        self._flat -= step * m / (np.sqrt(v) + 1e-8)

    def _tokens_of(self, steps, values: Mapping[str, Any]) -> list[int]:
        tokens = []
        for hp, vocabulary in steps:
            value = values.get(hp.name, hp.default)
            if value in vocabulary:
                tokens.append(vocabulary.index(value))
            else:  # a value off the grid (e.g. a random fallback): its nearest token
                target = hp.value_to_prob(value)
                tokens.append(
                    int(np.argmin([abs(hp.value_to_prob(v) - target) for v in vocabulary]))
                )
        return tokens

    def learn(self, values: Mapping[str, Any], reward: float, _sampled=None) -> None:
        """One REINFORCE step towards (reward above baseline) or away from `values`."""
        if _sampled is None:
            steps = self._steps()
            tokens, cache = self._forward(steps, self._tokens_of(steps, values))
        else:  # drawn with the current parameters: its forward pass is still valid
            tokens, cache = _sampled
        decay, clip = self.settings["baseline_decay"], self.settings["advantage_clip"]
        if self._baseline is None:
            self._baseline = reward
        advantage = reward - self._baseline
        if self._scale and clip:
            # Robust statistics: an outlier (a broken architecture scoring near
            # zero) moves the baseline and the scale by at most `clip` scales.
            advantage = max(-clip * self._scale, min(clip * self._scale, advantage))
        self._baseline += (1 - decay) * advantage
        if self._scale is None:
            self._scale = abs(advantage) if advantage != 0 else None
        else:
            self._scale = decay * self._scale + (1 - decay) * abs(advantage)
        normalised = advantage / self._scale if self._scale else 0.0
        self._adam_step(self._gradients(tokens, cache, normalised))
        self.updates += 1

    def _sample(self, novel: bool = False):
        steps = self._steps()
        if novel and not steps:
            return None, None  # nothing to search: every proposal is the same
        allowed = self._novelty_mask(steps) if novel else None
        if allowed is not None and not allowed(0, ()).any():
            return None, None  # every token sequence was tried
        tokens, cache = self._forward(steps, allowed=allowed)
        emitted = {hp.name: vocabulary[k] for (hp, vocabulary), k in zip(steps, tokens)}
        return self._complete_values(emitted, self._rng), (tokens, cache)

    def sample(self) -> dict[str, Any]:
        """A configuration drawn from the policy (no trial is created)."""
        return self._sample()[0]

    def _novelty_mask(self, steps):
        """`allowed(t, prefix)` masking tokens whose every continuation was tried or rejected.

        Sampling with it draws from the policy conditioned on novelty (the
        token-by-token version of sampling without replacement).
        """
        tried = {
            tuple(self._tokens_of(steps, t.hyperparameters.values)) for t in self.trials.values()
        }
        tried.update(tuple(self._tokens_of(steps, r["values"])) for r in self.rejected)
        counts: dict[tuple, int] = {}
        for sequence in tried:
            for length in range(1, len(sequence) + 1):
                counts[sequence[:length]] = counts.get(sequence[:length], 0) + 1
        sizes = [len(vocabulary) for _, vocabulary in steps]
        completions = [math.prod(sizes[t + 1 :]) for t in range(len(sizes))]

        def allowed(t, prefix):
            return np.array(
                [counts.get((*prefix, k), 0) < completions[t] for k in range(sizes[t])], dtype=float
            )

        return allowed

    # -- the oracle

    def _known_scores(self) -> dict[str, float]:
        return {
            self._id_to_hash[t.trial_id]: self._goodness(t.score)
            for t in self._completed_in_order()
        }

    def _penalty(self) -> float:
        scores = [self._goodness(t.score) for t in self._completed_in_order()]
        return min(scores) if scores else 0.0

    def propose(self, trial_id):
        known = None
        for _ in range(self.settings["max_resamples"]):
            values, sampled = self._sample()
            if not self._duplicate(values):
                return {"status": RUNNING, "values": values}
            key = self._compute_values_hash(values)
            if key in self._rejected_reasons:
                self.learn(values, self._penalty(), sampled)
                continue
            known = self._known_scores() if known is None else known
            if key in known:  # a completed trial: its score teaches without a new trial
                self.learn(values, known[key], sampled)
        # Retries spent: draw from the policy restricted to untried candidates.
        values, _ = self._sample(novel=True)
        if values is not None and not self._duplicate(values):
            return {"status": RUNNING, "values": values}
        return self._random_response()

    def on_candidate_rejected(self, values, reason):
        self.learn(values, self._penalty())

    def score_trial(self, trial):
        super().score_trial(trial)
        if trial.score is not None and np.isfinite(trial.score):
            self.learn(trial.hyperparameters.values, self._goodness(trial.score))

    def get_state(self):
        state = super().get_state()
        state["controller"] = {
            "settings": self.settings,
            "params": self._named(self._flat),
            "adam_m": self._named(self._m_flat),
            "adam_v": self._named(self._v_flat),
            "adam_t": self._adam_t,
            "baseline": self._baseline,
            "scale": self._scale,
            "updates": self.updates,
            "rng": _rng_state(self._rng),
        }
        return state

    def set_state(self, state):
        super().set_state(state)
        saved = state["controller"]
        self.settings = dict(saved["settings"])
        self._shapes = {k: np.shape(v) for k, v in saved["params"].items()}
        self._allocate(saved["params"], saved["adam_m"], saved["adam_v"])
        self._adam_t = saved["adam_t"]
        self._baseline = saved["baseline"]
        self._scale = saved["scale"]
        self.updates = saved["updates"]
        self._rng = _rng_from_state(saved["rng"])


# --------------------------------------------------------------------------- by name

_OPTIONS: dict[str, tuple[str, ...]] = {
    "random": (),
    "grid": (),
    "bayesian": (
        "num_initial_points",
        "alpha",
        "beta",
        "pool_size",
        "neighbour_parents",
        "gp_restarts",
        "rank_scores",
    ),
    "hyperband": ("max_epochs", "factor", "hyperband_iterations"),
    "evolution": ("population_size", "sample_size"),
    "controller": (
        "hidden_size",
        "embedding_size",
        "learning_rate",
        "baseline_decay",
        "entropy_weight",
        "temperature",
        "tanh_constant",
        "grid_points",
        "max_resamples",
        "clip_norm",
        "advantage_clip",
    ),
}
_CLASSES = {
    "random": RandomOracle,
    "grid": GridOracle,
    "bayesian": BayesianOracle,
    "hyperband": HyperbandOracle,
    "evolution": EvolutionOracle,
    "controller": ControllerOracle,
}
# Product defaults that differ from the classes' keyword defaults.
_DEFAULTS: dict[str, dict[str, Any]] = {"hyperband": {"max_epochs": 9, "factor": 3}}


def make_oracle(
    strategy: str,
    *,
    objective: keras_tuner.Objective,
    max_trials: int | None,
    seed: int,
    hyperparameters: keras_tuner.HyperParameters | None,
    options: Mapping[str, Any] | None = None,
) -> keras_tuner.Oracle:
    """The oracle of `strategy` (one of `STRATEGIES`) with the constraint hook.

    `seed` must not be 0 (keras-tuner replaces a falsy seed by a random one).
    `options` override the strategy's defaults (see `_OPTIONS` for the names);
    unknown strategies or options raise `UsageError`.
    """
    if strategy not in _CLASSES:
        raise UsageError(
            f"--strategy: unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}"
        )
    if not seed:
        raise ValueError("make_oracle: seed must not be 0 (derive it from --seed)")
    options = {**_DEFAULTS.get(strategy, {}), **dict(options or {})}
    unknown = sorted(set(options) - set(_OPTIONS[strategy]))
    if unknown:
        known = ", ".join(_OPTIONS[strategy]) or "none"
        raise UsageError(
            f"--strategy={strategy}: unknown option(s) {', '.join(unknown)}; known: {known}"
        )
    try:
        return _CLASSES[strategy](
            objective=objective,
            max_trials=max_trials,
            seed=seed,
            hyperparameters=hyperparameters,
            **options,
        )
    except ValueError as error:
        raise UsageError(f"--strategy={strategy}: {error}") from None
