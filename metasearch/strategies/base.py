"""What every strategy shares: `StrategyOracle` (the base class), the constraint hook, helpers.

A strategy is a keras-tuner oracle, so keras-tuner keeps the books (trials,
retries, resume from `oracle.json`, distributed search) whatever the
strategy. `StrategyOracle` documents the contract a strategy implements,
including one from a third-party package registered under the
`metasearch.strategies` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import keras_tuner
import numpy as np
from keras_tuner.engine import hyperparameters as hp_module

from metasearch import kt_adapter
from metasearch.distributed import LivenessMixin
from metasearch.options import Option

RUNNING, IDLE, STOPPED = "RUNNING", "IDLE", "STOPPED"
# How many candidates in a row the constraint may reject before the search stops
# (unless the filter says otherwise: its `max_attempts`).
MAX_FILTER_ATTEMPTS = 100

CandidateFilter = Callable[[dict[str, Any]], "str | None"]


# --------------------------------------------------------------------------- helpers


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """`rng`'s state as JSON (PCG64's state is a dict of large Python ints, kept exactly)."""
    return rng.bit_generator.state


def rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    """The generator `rng_state` saved."""
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng


def is_mutable(hp: hp_module.HyperParameter) -> bool:
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


def value_at(hp: hp_module.HyperParameter, prob: float) -> Any:
    """`hp`'s value at cumulative probability `prob` (keras-tuner's mapping: log, step...)."""
    if isinstance(hp, hp_module.Fixed):
        return hp.value
    return hp.prob_to_value(prob)


def draw(hp: hp_module.HyperParameter, rng: np.random.Generator) -> Any:
    """A uniformly random value of `hp`."""
    return value_at(hp, float(rng.random()))


# --------------------------------------------------------------------------- the constraint


class ConstraintMixin:
    """The constraint hook every strategy oracle has (part of `StrategyOracle`).

    `candidate_filter` is None (accept all) or a callable `values -> str | None`
    returning why a candidate is rejected, or None to accept it. With a filter
    set, a rejected candidate never becomes a trial: the strategy is told
    (`on_candidate_rejected`) and proposes again, up to `max_filter_attempts`
    times per trial (`MAX_FILTER_ATTEMPTS`, or the filter's own `max_attempts`
    when it has one: a cheap check, such as a table's, may allow more); then,
    or when the strategy has no untried candidate left after rejections, the
    oracle returns STOPPED and records why in `stop_reason` (naming the
    filter by its `name`, default "the constraint"). Verdicts are cached by
    value hash (a candidate is never checked twice), rejected candidates
    count as already tried (`is_duplicate`), and every rejection is kept in
    `rejected` as `{"values": ..., "reason": ...}`, part of the oracle's saved
    state.

    It sits in front of a `metasearch.kt_adapter` oracle, whose public hooks it uses.
    """

    # True for strategies whose `propose` consults the filter itself
    # (`check_candidate`), e.g. to skip a rejected candidate in place.
    FILTERS_ITSELF: ClassVar[bool] = False

    def __init__(self, *args, **kwargs):
        self.candidate_filter: CandidateFilter | None = None
        self.rejected: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        # Value hash -> rejection reason, derived from `rejected` (rebuilt on resume).
        self._rejected_reasons: dict[str, str] = {}
        super().__init__(*args, **kwargs)

    @property
    def max_filter_attempts(self) -> int:
        """Candidates the filter may reject in a row before the search stops."""
        return int(getattr(self.candidate_filter, "max_attempts", MAX_FILTER_ATTEMPTS))

    # keras-tuner calls `populate_space`; strategies implement `propose`.
    def populate_space(self, trial_id):
        if self.candidate_filter is None:
            return self.propose(trial_id)
        response = self.propose(trial_id) if self.FILTERS_ITSELF else self._filtered(trial_id)
        if response.get("status") == STOPPED and self.rejected and self.stop_reason is None:
            # The strategy ran out of candidates after rejections: say so.
            return self.stop_for_filter(exhausted=True)
        return response

    def _filtered(self, trial_id) -> dict[str, Any]:
        """The strategy's first proposal the filter accepts (or why there is none)."""
        for _ in range(self.max_filter_attempts):
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
        key = self.values_hash(values)
        if key in self._rejected_reasons:
            return self._rejected_reasons[key]
        if key in self.tried_hashes:
            return None  # already a trial: it was accepted before
        reason = self.candidate_filter(dict(values))
        if reason is not None:
            self.rejected.append({"values": dict(values), "reason": str(reason)})
            self._rejected_reasons[key] = str(reason)
            return str(reason)
        return None

    def on_candidate_rejected(self, values: Mapping[str, Any], reason: str) -> None:
        """Tells the strategy a candidate was rejected (default: nothing to learn)."""

    def stop_for_filter(self, exhausted: bool = False) -> dict[str, Any]:
        """Records why the constraint stops the search; returns the STOPPED response.

        The filter rejected `max_filter_attempts` candidates in a row, or
        (`exhausted`) the strategy has no untried candidate left after rejections.
        """
        name = getattr(self.candidate_filter, "name", "the constraint")
        last = self.rejected[-1]["reason"] if self.rejected else "none"
        if exhausted:
            self.stop_reason = (
                f"no untried candidate is left that {name} accepts ({len(self.rejected)} "
                f"rejected, last: {last}); the search stops"
            )
        else:
            self.stop_reason = (
                f"{name} rejected {self.max_filter_attempts} candidates in a row "
                f"(last: {last}); the search stops"
            )
        return {"status": STOPPED, "values": None}

    def is_duplicate(self, values):
        # Rejected candidates count as tried, so random sampling and mutation skip them.
        return super().is_duplicate(values) or self.values_hash(values) in self._rejected_reasons

    def get_state(self):
        state = super().get_state()
        state["constraint"] = {"rejected": self.rejected, "stop_reason": self.stop_reason}
        return state

    def set_state(self, state):
        super().set_state(state)
        constraint = state.get("constraint", {})
        self.rejected = list(constraint.get("rejected", []))
        self.stop_reason = constraint.get("stop_reason")
        self._rejected_reasons = {self.values_hash(r["values"]): r["reason"] for r in self.rejected}


# --------------------------------------------------------------------------- the stop condition


class StopConditionMixin:
    """A condition that ends the search before the strategy runs out (part of `StrategyOracle`).

    `stop_condition` is None or a callable returning why no new trial should
    start (e.g. the time budget's search share is spent), or None to go on.
    It is asked before every proposal; when it answers, the oracle records
    the reason in `stop_reason` and returns STOPPED, so local searches and
    the workers of a distributed one stop alike. Running trials finish.
    """

    def __init__(self, *args, **kwargs):
        self.stop_condition: Callable[[], str | None] | None = None
        super().__init__(*args, **kwargs)

    def populate_space(self, trial_id):
        why = self.stop_condition() if self.stop_condition is not None else None
        if why:
            self.stop_reason = why
            return {"status": STOPPED, "values": None}
        return super().populate_space(trial_id)


# --------------------------------------------------------------------------- the default first


def default_values(hyperparameters: hp_module.HyperParameters) -> dict[str, Any]:
    """Every active hyperparameter at its declared default (a `Fixed` one at its value)."""
    hps = hp_module.HyperParameters()
    for hp in hyperparameters.space:
        hps.merge([hp])
        if hps.is_active(hp):
            hps.values[hp.name] = hp.value if isinstance(hp, hp_module.Fixed) else hp.default
    return dict(hps.values)


class DefaultFirstMixin:
    """Proposes the default configuration as the first trial (part of `StrategyOracle`).

    With `start_from_default` set (the search sets it for trained searches),
    the first candidate is every hyperparameter at its declared default: the
    search space's and the plugin's defaults and the default learning rate,
    so a search starts from a known baseline and can only add to it. Then
    the strategy proposes as usual (it sees the default trial like any other
    completed trial). A strategy whose proposals carry their own bookkeeping
    (Hyperband's brackets, the grid's walk) sets `STARTS_FROM_DEFAULT = False`.
    Whether the default was proposed is part of the saved state.
    """

    STARTS_FROM_DEFAULT: ClassVar[bool] = True

    def __init__(self, *args, **kwargs):
        self.start_from_default = False
        self.default_proposed = False
        super().__init__(*args, **kwargs)

    def populate_space(self, trial_id):
        if self.start_from_default and self.STARTS_FROM_DEFAULT and not self.default_proposed:
            self.default_proposed = True
            values = default_values(self.hyperparameters)
            if not self.is_duplicate(values) and self.check_candidate(values) is None:
                return {"status": RUNNING, "values": values}
        return super().populate_space(trial_id)

    def get_state(self):
        state = super().get_state()
        state["default_first"] = {"proposed": self.default_proposed}
        return state

    def set_state(self, state):
        super().set_state(state)
        self.default_proposed = bool(state.get("default_first", {}).get("proposed", False))


# --------------------------------------------------------------------------- the base class


class StrategyOracle(
    LivenessMixin, StopConditionMixin, DefaultFirstMixin, ConstraintMixin, kt_adapter.Oracle
):
    """The base class of every search strategy: a keras-tuner oracle metasearch can drive.

    The contract a strategy (built in or from another package) implements:

    * Subclass `StrategyOracle`. A strategy built on one of keras-tuner's
      algorithms lists the matching `metasearch.kt_adapter` oracle after it
      (`class MyOracle(StrategyOracle, kt_adapter.HyperbandOracle)`); one
      written from scratch subclasses `StrategyOracle` alone.
    * `propose(trial_id)` returns the next candidate as keras-tuner's
      `populate_space` does: `{"status": "RUNNING", "values": {name: value}}`
      with a value for every active hyperparameter of `self.hyperparameters`,
      `{"status": "IDLE", "values": None}` to wait for running trials, or
      `{"status": "STOPPED", "values": None}` when nothing is left. The
      default is the keras-tuner algorithm's own proposal. Completed trials
      are in `self.trials` (`completed_in_order()` in the order they ended,
      `goodness(score)` makes higher better whatever the objective's direction).
    * Randomness comes from a generator seeded with `self.seed` (make_oracle
      passes a non-zero seed), never from global state: the same seed gives
      the same trials.
    * Every piece of state that influences later proposals (generator
      included, see `rng_state`) is saved by `get_state()` and restored by
      `set_state(state)`, as JSON, both calling `super()`: a killed search
      resumes where it stopped.
    * `OPTIONS` declares the strategy's settings (`metasearch.options.Option`,
      named as the CLI flag `--<strategy>_<option>` will be); `make_oracle`
      resolves them (defaults filled in, types and bounds checked) and builds
      the oracle with `from_options`: the constructor takes the keyword
      arguments `objective`, `max_trials`, `seed`, `hyperparameters` and one
      keyword argument per option (`OPTION_ARGUMENTS` maps an option to a
      differently named argument). A combination of values that cannot work
      raises `ValueError` (shown to the user as a usage error).
    * The constraint (`candidate_filter`, see `ConstraintMixin`) is applied
      to what `propose` returns; a strategy that checks candidates itself
      (`check_candidate`) sets `FILTERS_ITSELF = True`, and one that learns
      from rejections overrides `on_candidate_rejected`. `is_duplicate(values)`
      counts rejected candidates as tried; `random_values()` and
      `random_response()` draw untried random candidates.
    * keras-tuner's internals are reached only through the public hooks of
      `metasearch.kt_adapter` (`is_duplicate`, `random_values`, `values_hash`,
      `tried_hashes`, `trial_hash`, ...), never through its private names.
    * Liveness for distributed searches comes with the class
      (`metasearch.distributed.LivenessMixin`): a strategy overriding
      `create_trial` or `update_trial` decorates them with
      `keras_tuner.synchronized` and calls `super()`.
    * `persist = False` keeps trials and state in memory (no files), for
      simulated searches (`metasearch.tabular.keep_in_memory`).
    * Register the class under the `metasearch.strategies` entry-point group;
      its name is the `--strategy` value.
    """

    OPTIONS: ClassVar[tuple[Option, ...]] = ()
    # Option name -> constructor argument, for options named differently.
    OPTION_ARGUMENTS: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def from_options(
        cls,
        options: Mapping[str, Any],
        *,
        objective: keras_tuner.Objective,
        max_trials: int | None,
        seed: int,
        hyperparameters: keras_tuner.HyperParameters | None,
    ) -> StrategyOracle:
        """The oracle for resolved `options` (every name of `OPTIONS`, checked)."""
        arguments = {cls.OPTION_ARGUMENTS.get(name, name): value for name, value in options.items()}
        return cls(
            objective=objective,
            max_trials=max_trials,
            seed=seed,
            hyperparameters=hyperparameters,
            **arguments,
        )

    # -- helpers for strategies

    def goodness(self, score: float) -> float:
        """The score turned so that higher is better, whatever the objective's direction."""
        return score if self.objective.direction == "max" else -score

    def completed_in_order(self) -> list[keras_tuner.engine.trial.Trial]:
        """Completed trials with a score, in the order they ended."""
        trials = (self.trials[trial_id] for trial_id in self.end_order)
        return [t for t in trials if t.status == "COMPLETED" and t.score is not None]

    def random_response(self) -> dict[str, Any]:
        """An untried random candidate, or IDLE/STOPPED when the sampler finds none."""
        values = self.random_values()
        if values is None:
            # The space is exhausted, unless running trials may add hyperparameters.
            return {"status": IDLE if self.ongoing_trials else STOPPED, "values": None}
        return {"status": RUNNING, "values": values}

    def filtered_random_response(self) -> dict[str, Any]:
        """`random_response()` the filter accepts (for a strategy that filters itself)."""
        if self.candidate_filter is None:
            return self.random_response()
        for _ in range(self.max_filter_attempts):
            response = self.random_response()
            if response["status"] != RUNNING:
                return response
            if self.check_candidate(response["values"]) is None:
                return response
        return self.stop_for_filter()

    def complete_values(self, values: Mapping[str, Any], rng: np.random.Generator):
        """`values` restricted to the active hyperparameters, new active ones drawn."""
        space = self.hyperparameters.space
        if not any(hp.conditions for hp in space):  # the common case, without keras-tuner's cost
            return {
                hp.name: values[hp.name] if hp.name in values else draw(hp, rng) for hp in space
            }
        hps = hp_module.HyperParameters()
        for hp in space:
            hps.merge([hp])
            if hps.is_active(hp):
                hps.values[hp.name] = values[hp.name] if hp.name in values else draw(hp, rng)
        return hps.values
