"""Tests for metasearch.strategies: the search strategies as keras-tuner oracles."""

from __future__ import annotations

import ast
import inspect
import json
import random
import shutil
import time
from pathlib import Path

import keras_tuner
import numpy as np
import pytest

from metasearch import distributed, registry, strategies, tabular
from metasearch.errors import UsageError
from metasearch.options import Option
from metasearch.strategies.base import StrategyOracle
from metasearch.strategies.controller import ControllerOracle
from metasearch.strategies.evolution import EvolutionOracle

OPS = ["skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3"]
EDGES = ["edge_1_2", "edge_1_3", "edge_1_4", "edge_2_3", "edge_2_4", "edge_3_4"]
NB201_TABLE = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "nasbench201"
    / "nb201_val_accuracy.csv"
)
OBJECTIVE = keras_tuner.Objective("score", "max")
STRATEGIES = registry.names("strategy")
BUILT_INS = ["bayesian", "controller", "evolution", "grid", "hyperband", "random"]


def cell_space(fixed: bool = True) -> keras_tuner.HyperParameters:
    """NAS-Bench-201's six operation Choices, plus a Fixed one that must never change."""
    hp = keras_tuner.HyperParameters()
    for edge in EDGES:
        hp.Choice(f"nasbench201/{edge}", OPS)
    if fixed:
        hp.Fixed("train/width", 16)
    return hp


def small_space() -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    for name in "abc":
        hp.Choice(name, [0, 1, 2])
    return hp


def oracle_for(strategy, hp, seed=7, max_trials=200, **options):
    oracle = strategies.make_oracle(
        strategy,
        objective=OBJECTIVE,
        max_trials=max_trials,
        seed=seed,
        hyperparameters=hp,
        options=options or None,
    )
    tabular.keep_in_memory(oracle)
    return oracle


def first_op_fraction(values) -> float:
    return sum(values[f"nasbench201/{e}"] == OPS[0] for e in EDGES) / len(EDGES)


def run_trial(oracle, score_fn, tuner_id="t0"):
    trial = oracle.create_trial(tuner_id)
    if trial.status != "RUNNING":
        return trial
    oracle.update_trial(trial.trial_id, {"score": score_fn(trial)})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
    oracle.save()  # as BaseTuner.on_trial_end does (a no-op for oracles kept in memory)
    return trial


def differences(a, b) -> list[str]:
    return [name for name in set(a) | set(b) if a.get(name) != b.get(name)]


# --------------------------------------------------------------------------- make_oracle


def test_make_oracle_builds_every_strategy_with_the_constraint_hook():
    assert set(BUILT_INS) <= set(STRATEGIES)
    for name in STRATEGIES:
        oracle = oracle_for(name, cell_space())
        assert isinstance(oracle, keras_tuner.Oracle), name
        assert isinstance(oracle, StrategyOracle), name
        assert oracle.candidate_filter is None and oracle.rejected == []
    assert isinstance(oracle_for("evolution", cell_space()), EvolutionOracle)
    assert isinstance(oracle_for("controller", cell_space()), ControllerOracle)


def test_make_oracle_rejects_unknown_names_and_options():
    with pytest.raises(
        UsageError,
        match=r"--strategy: unknown strategy 'x'; known: bayesian, controller, evolution, grid, "
        r"hyperband, random",
    ):
        oracle_for("x", cell_space())
    with pytest.raises(
        UsageError,
        match=r"--strategy=evolution: unknown option.* population_size; "
        r"known: population, sample_size",
    ):
        oracle_for("evolution", cell_space(), population_size=3)
    with pytest.raises(UsageError, match="sample_size"):
        oracle_for("evolution", cell_space(), population=3, sample_size=5)
    with pytest.raises(UsageError, match=r"--evolution_population: 'many' is not an integer"):
        oracle_for("evolution", cell_space(), population="many")
    with pytest.raises(UsageError, match=r"--strategy=random: unknown option.* x; known: none"):
        oracle_for("random", cell_space(), x=1)


# Every option each strategy had before they declared them (the CLI's flags
# `--<strategy>_<option>` are named after them).
DECLARED_OPTIONS = {
    "random": [],
    "grid": [],
    "bayesian": [
        "num_initial_points",
        "alpha",
        "beta",
        "pool_size",
        "neighbour_parents",
        "gp_restarts",
        "rank_scores",
    ],
    "hyperband": ["max_epochs", "factor", "hyperband_iterations"],
    "evolution": ["population", "sample_size"],
    "controller": [
        "learning_rate",
        "hidden_size",
        "embedding_size",
        "baseline_decay",
        "entropy_weight",
        "temperature",
        "tanh_constant",
        "grid_points",
        "max_resamples",
        "clip_norm",
        "advantage_clip",
    ],
}
# Defaults that differ from the constructors' (product choices), or mean "unset".
PRODUCT_DEFAULTS = {("hyperband", "max_epochs"): 9, ("hyperband", "hyperband_iterations"): None}


def _constructor_default(cls, argument):
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            parameter = inspect.signature(klass.__init__).parameters.get(argument)
            if parameter is not None and parameter.default is not inspect.Parameter.empty:
                return parameter.default
    raise AssertionError(f"{cls.__name__} takes no argument {argument}")


@pytest.mark.parametrize("strategy", BUILT_INS)
def test_strategies_declare_their_options_with_the_constructors_defaults(strategy):
    cls = strategies.strategy_class(strategy)
    assert all(isinstance(option, Option) for option in cls.OPTIONS)
    assert [option.name for option in cls.OPTIONS] == DECLARED_OPTIONS[strategy]
    for option in cls.OPTIONS:
        argument = cls.OPTION_ARGUMENTS.get(option.name, option.name)
        expected = PRODUCT_DEFAULTS.get(
            (strategy, option.name), _constructor_default(cls, argument)
        )
        assert option.default == expected, (strategy, option.name)
        assert option.help, (strategy, option.name)


def test_options_reach_the_constructor():
    evolution = oracle_for("evolution", cell_space(), population=7, sample_size=3)
    assert (evolution.population_size, evolution.sample_size) == (7, 3)
    assert (oracle_for("evolution", cell_space()).population_size, evolution.sample_size) == (20, 3)
    controller = oracle_for("controller", cell_space(), learning_rate=0.5, tanh_constant=None)
    assert controller.settings["learning_rate"] == 0.5
    assert controller.settings["tanh_constant"] is None
    hyperband = oracle_for("hyperband", cell_space())
    assert (hyperband.max_epochs, hyperband.factor) == (9, 3)
    assert hyperband.hyperband_iterations == float("inf")  # max_trials caps it instead
    bayesian = oracle_for("bayesian", cell_space(), pool_size=50, beta=1.0, rank_scores=False)
    assert (bayesian.pool_size, bayesian.beta, bayesian.rank_scores) == (50, 1.0, False)
    assert (bayesian.num_initial_points, bayesian.alpha) == (10, 1e-4)


def test_a_strategy_written_from_scratch_needs_only_propose():
    class Defaults(StrategyOracle):
        """Proposes the defaults, then stops."""

        OPTIONS = (Option("repeat", int, 1, "how often"),)

        def __init__(self, repeat=1, **kwargs):
            super().__init__(**kwargs)
            self.repeat = repeat

        def propose(self, trial_id):
            if len(self.trials) >= self.repeat or self.is_duplicate({"a": 0, "b": 0, "c": 0}):
                return {"status": "STOPPED", "values": None}
            return {"status": "RUNNING", "values": {"a": 0, "b": 0, "c": 0}}

    oracle = Defaults.from_options(
        {"repeat": 1}, objective=OBJECTIVE, max_trials=5, seed=1, hyperparameters=small_space()
    )
    tabular.keep_in_memory(oracle)
    assert tabular.simulate(oracle, lambda hp: 1.0, 5, "score") == [1.0]
    assert distributed.with_liveness(oracle) is oracle


def test_hyperband_stops_at_max_trials_and_its_state_is_json():
    oracle = oracle_for("hyperband", cell_space(), max_trials=40, max_epochs=9, factor=3)
    trials = [run_trial(oracle, lambda t: random.random()) for _ in range(41)]
    assert len(oracle.trials) == 40 and trials[-1].status == "STOPPED"
    assert all(t.status == "COMPLETED" for t in trials[:-1])
    # Hyperband promoted some trials: their values repeat an earlier trial's.
    assert any(t.hyperparameters.values.get("tuner/round", 0) > 0 for t in trials[:-1])
    json.dumps(oracle.get_state(), allow_nan=False)


def test_strategies_import_neither_flags_nor_absl():
    package = Path(strategies.__file__).parent
    imported = [package.parent / "kt_adapter.py", package.parent / "distributed.py"]
    for module in [*sorted(package.glob("*.py")), *imported]:
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(("absl", "metasearch.flags")), (module.name, name)


# --------------------------------------------------------------------------- evolution


def test_evolution_mutates_exactly_one_hyperparameter_of_a_living_member():
    oracle = oracle_for("evolution", cell_space(), population=5, sample_size=2)
    rng = random.Random(0)
    for index in range(60):
        population = [t.hyperparameters.values for t in oracle.population()]
        trial = run_trial(oracle, lambda t: rng.random())
        values = trial.hyperparameters.values
        assert values["train/width"] == 16  # Fixed never mutates
        if index >= 5:
            assert any(differences(values, member) for member in population)
            assert min(len(differences(values, member)) for member in population) == 1


def test_evolution_ages_out_the_oldest_member():
    # Tournament = whole population: the parent is always the best living member.
    oracle = oracle_for("evolution", cell_space(fixed=False), population=3, sample_size=3)
    first = run_trial(oracle, lambda t: 100.0)  # by far the best, until it ages out
    for _ in range(2):
        run_trial(oracle, lambda t: 1.0 + random.random())
    assert [t.trial_id for t in oracle.population()][0] == first.trial_id
    child = run_trial(oracle, lambda t: 0.5)  # born of the best, then scored low
    assert differences(child.hyperparameters.values, first.hyperparameters.values) != []
    assert len(differences(child.hyperparameters.values, first.hyperparameters.values)) == 1
    living = oracle.population()
    assert first.trial_id not in [t.trial_id for t in living]
    assert [t.trial_id for t in living] == oracle.end_order[-3:]
    best_living = max(living, key=lambda t: t.score)
    grandchild = oracle.create_trial("t0")
    assert (
        len(differences(grandchild.hyperparameters.values, best_living.hyperparameters.values)) == 1
    )


def test_evolution_never_idles_parallel_workers():
    oracle = oracle_for("evolution", cell_space(), population=5, sample_size=2)
    trials = [oracle.create_trial(f"worker{i}") for i in range(8)]
    assert all(t.status == "RUNNING" for t in trials)
    assert len({json.dumps(t.hyperparameters.values, sort_keys=True) for t in trials}) == 8


@pytest.mark.parametrize("strategy", ["random", "bayesian", "evolution", "controller"])
def test_no_duplicate_proposals(strategy):
    options = {"population": 4, "sample_size": 2} if strategy == "evolution" else {}
    oracle = oracle_for(strategy, small_space(), max_trials=27, **options)
    seen = []
    for _ in range(27):
        trial = run_trial(oracle, lambda t: sum(t.hyperparameters.values[n] for n in "abc"))
        if trial.status == "STOPPED":
            break
        seen.append(tuple(sorted(trial.hyperparameters.values.items())))
    assert len(seen) == len(set(seen)) and len(seen) >= 15


# --------------------------------------------------------------------------- controller


def test_controller_gradient_matches_finite_differences():
    hp = keras_tuner.HyperParameters()
    hp.Choice("a", [1, 2, 3])
    hp.Boolean("b")
    hp.Int("c", 1, 100, sampling="log")
    hp.Float("d", 0.0, 1.0)
    oracle = ControllerOracle(
        objective=OBJECTIVE,
        seed=3,
        hyperparameters=hp,
        hidden_size=4,
        embedding_size=3,
        entropy_weight=0.2,
        temperature=1.5,
    )
    steps = oracle._steps()
    assert [len(vocabulary) for _, vocabulary in steps] == [3, 2, 8, 8]
    tokens, cache = oracle._forward(steps)
    analytic = oracle._gradients(tokens, cache, 0.7).copy()

    def loss():
        _, forward = oracle._forward(steps, tokens)
        total = 0.0
        for token, entry in zip(tokens, forward):
            probs = entry[-1]
            total += -0.7 * np.log(probs[token]) + 0.2 * (probs * np.log(probs)).sum()
        return total

    numeric = np.zeros_like(analytic)
    for k in range(len(numeric)):
        kept = oracle._flat[k]
        oracle._flat[k] = kept + 1e-6
        up = loss()
        oracle._flat[k] = kept - 1e-6
        numeric[k] = (up - loss()) / 2e-6
        oracle._flat[k] = kept
    np.testing.assert_allclose(analytic, numeric, atol=1e-7)


def test_controller_learns_a_synthetic_reward():
    # Reward: the fraction of edges choosing the first operation (1/5 at random).
    oracle = oracle_for("controller", cell_space(fixed=False), max_trials=200)
    before = np.mean([first_op_fraction(oracle.sample()) for _ in range(300)])
    rewards = []
    for _ in range(200):
        trial = run_trial(oracle, lambda t: first_op_fraction(t.hyperparameters.values))
        rewards.append(first_op_fraction(trial.hyperparameters.values))
    after = np.mean([first_op_fraction(oracle.sample()) for _ in range(300)])
    assert before < 0.3
    assert after > 0.6, (before, after)
    # Trials, not just the policy, improve (the best cells get used up, hence the margin).
    assert np.mean(rewards[-100:]) > 0.4, rewards
    assert oracle.updates >= 200


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize(
    "strategy", ["evolution", "controller", "bayesian", "hyperband", "grid", "random"]
)
def test_state_round_trip_resumes_identically(strategy, tmp_path):
    def make(directory):
        oracle = strategies.make_oracle(
            strategy, objective=OBJECTIVE, max_trials=60, seed=11, hyperparameters=cell_space()
        )
        oracle.verbose = 0
        oracle.set_project_dir(str(directory), "project")
        return oracle

    def score(trial):
        return first_op_fraction(trial.hyperparameters.values) + 0.01 * int(trial.trial_id)

    original = make(tmp_path / "original")
    # The last edge: grid search varies it first, so every strategy meets rejections.
    original.candidate_filter = lambda v: "no" if v["nasbench201/edge_3_4"] == "none" else None
    for _ in range(30):
        run_trial(original, score)
    assert original.rejected  # the filter's verdicts are part of the state too
    # As if the search were killed now: a fresh oracle reloads a copy of its files.
    shutil.copytree(tmp_path / "original", tmp_path / "copy")
    resumed = make(tmp_path / "copy")
    resumed.reload()
    resumed.candidate_filter = original.candidate_filter
    assert resumed.rejected == original.rejected
    for _ in range(10):
        a, b = run_trial(original, score), run_trial(resumed, score)
        assert a.trial_id == b.trial_id
        assert a.hyperparameters.values == b.hyperparameters.values
    json.dumps(original.get_state(), allow_nan=False)


# --------------------------------------------------------------------------- constraint


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_candidate_filter_rejects_records_and_never_trains_rejected(strategy):
    oracle = oracle_for(strategy, cell_space(), max_trials=40)
    checked = []

    def no_none_last_edge(values):
        checked.append(json.dumps(values, sort_keys=True))
        return "last edge is none" if values["nasbench201/edge_3_4"] == "none" else None

    oracle.candidate_filter = no_none_last_edge
    for _ in range(40):
        trial = run_trial(oracle, lambda t: first_op_fraction(t.hyperparameters.values))
        assert trial.status == "COMPLETED"
    assert all(
        t.hyperparameters.values["nasbench201/edge_3_4"] != "none" for t in oracle.trials.values()
    )
    assert oracle.rejected, "40 trials of a space with 1/5 'none' should meet some"
    assert all(r["reason"] == "last edge is none" for r in oracle.rejected)
    assert all(r["values"]["nasbench201/edge_3_4"] == "none" for r in oracle.rejected)
    assert len(checked) == len(set(checked)), "a candidate was checked twice"
    assert oracle.get_state()["constraint"]["rejected"] == oracle.rejected


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_candidate_filter_rejecting_everything_stops_the_search(strategy):
    oracle = oracle_for(strategy, cell_space(), max_trials=40)
    oracle.candidate_filter = lambda values: "too big"
    trial = oracle.create_trial("t0")
    assert trial.status == "STOPPED" and not oracle.trials
    assert len(oracle.rejected) == strategies.MAX_FILTER_ATTEMPTS
    assert "rejected 100 candidates in a row (last: too big)" in oracle.stop_reason


class NamedFilter:
    """A filter as `metasearch.tabular.MissingCells` is: a name and its own attempt budget."""

    name = "the table"

    def __init__(self, reject, max_attempts=250):
        self.reject, self.max_attempts = reject, max_attempts

    def __call__(self, values):
        return "not in it" if self.reject(values) else None


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_filter_may_allow_more_attempts_and_names_itself(strategy):
    oracle = oracle_for(strategy, cell_space(), max_trials=40)
    oracle.candidate_filter = NamedFilter(lambda values: True)
    assert oracle.max_filter_attempts == 250
    assert oracle.create_trial("t0").status == "STOPPED" and not oracle.trials
    assert len(oracle.rejected) == 250
    assert oracle.stop_reason == (
        "the table rejected 250 candidates in a row (last: not in it); the search stops"
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_search_that_runs_out_of_accepted_candidates_stops_saying_so(strategy):
    # 12 of the 27 candidates pass; Bayesian optimisation proposes after 3 of them.
    options = {"num_initial_points": 3} if strategy == "bayesian" else {}
    oracle = oracle_for(strategy, small_space(), max_trials=40, **options)
    oracle.candidate_filter = NamedFilter(lambda v: v["a"] == 2 or v["b"] == 1)
    trials = []
    for _ in range(40):
        trial = run_trial(oracle, lambda t: sum(t.hyperparameters.values[n] for n in "abc"))
        if trial.status != "COMPLETED":
            break
        trials.append({n: trial.hyperparameters.values[n] for n in "abc"})
    assert trial.status == "STOPPED"
    assert trials and all(v["a"] != 2 and v["b"] != 1 for v in trials)
    if strategy != "hyperband":  # Hyperband's promotions rerun candidates
        assert len({json.dumps(v, sort_keys=True) for v in trials}) == len(trials) <= 12
    assert oracle.stop_reason.startswith("no untried candidate is left that the table accepts ("), (
        oracle.stop_reason
    )


def test_controller_learns_from_rejections():
    oracle = oracle_for("controller", cell_space())
    oracle.candidate_filter = lambda v: "no" if v["nasbench201/edge_1_2"] != OPS[0] else None
    for _ in range(10):
        run_trial(oracle, lambda t: 1.0)
    # Each rejection was a policy update with the penalty reward.
    assert oracle.updates >= 10 + len(oracle.rejected)
    assert len(oracle.rejected) > 0


# --------------------------------------------------------------------------- liveness


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_has_liveness_by_construction(strategy):
    oracle = oracle_for(strategy, small_space(), max_trials=1)
    assert isinstance(oracle, distributed.LivenessMixin)
    assert distributed.with_liveness(oracle) is oracle
    trial = oracle.create_trial("w0")
    assert trial.status == "RUNNING"
    # A heartbeat only records that the worker lives: no metric, no score.
    oracle.update_trial(trial.trial_id, {distributed.HEARTBEAT_METRIC: time.time()})
    assert not oracle.trials[trial.trial_id].metrics.exists(distributed.HEARTBEAT_METRIC)
    # Nothing left to propose, but a trial runs: the other worker waits instead of stopping.
    assert oracle.create_trial("w1").status == "IDLE"
    assert "w1" in oracle.tuner_ids
    # w0 falls silent: its trial goes to the next worker that asks.
    assert oracle.hand_over_stale_trials(timeout=-1.0) == [(trial.trial_id, "w0")]
    assert oracle.retry_queue == [trial.trial_id] and not oracle.ongoing_trials
    taken = oracle.create_trial("w1")
    assert (taken.status, taken.trial_id) == ("RUNNING", trial.trial_id)
    run_trial(oracle, lambda t: 1.0, tuner_id="w1")
    assert oracle.create_trial("w1").status == "STOPPED"


def test_with_liveness_refuses_an_oracle_without_it():
    with pytest.raises(TypeError, match="RandomSearchOracle has no liveness"):
        distributed.with_liveness(keras_tuner.oracles.RandomSearchOracle(objective=OBJECTIVE))


def test_the_base_class_adds_no_name_keras_tuner_has():
    added = {
        name
        for klass in (StrategyOracle, strategies.ConstraintMixin, distributed.LivenessMixin)
        for name in vars(klass)
        if not name.startswith("__")
    }
    overridden = {"create_trial", "update_trial", "populate_space", "get_state", "set_state"}
    for kt_class in (
        keras_tuner.Oracle,
        keras_tuner.oracles.RandomSearchOracle,
        keras_tuner.oracles.GridSearchOracle,
        keras_tuner.oracles.HyperbandOracle,
        keras_tuner.oracles.BayesianOptimizationOracle,
    ):
        assert not (added - overridden) & set(dir(kt_class)), kt_class


# --------------------------------------------------------------------------- the table


@pytest.mark.skipif(not NB201_TABLE.exists(), reason=f"{NB201_TABLE} not found")
def test_evolution_beats_random_on_nasbench201():
    table = tabular.Table(str(NB201_TABLE), "cifar10_val")

    def evaluate(hp):
        key = "".join(str(OPS.index(hp.get(f"nasbench201/{e}"))) for e in EDGES)
        return table.lookup(key)

    best = {}
    for strategy in ("random", "evolution"):
        finals = []
        for seed in (1, 2, 3):
            oracle = oracle_for(strategy, cell_space(fixed=False), seed=seed, max_trials=100)
            finals.append(max(tabular.simulate(oracle, evaluate, 100, "score")))
        best[strategy] = float(np.mean(finals))
    assert best["evolution"] > best["random"], best


# --------------------------------------------------------------------------- the default first


def default_space(hp=None) -> keras_tuner.HyperParameters:
    """Choices whose defaults are not their first values, a float, and a conditional one."""
    hp = hp or keras_tuner.HyperParameters()
    hp.Choice("depth", [2, 3, 4], default=4)
    hp.Choice("metric", ["cosine", "sqeuclidean"], default="sqeuclidean")
    hp.Float("rate", 1e-4, 1e-2, sampling="log", default=1e-3)
    with hp.conditional_scope("metric", ["cosine"]):
        hp.Float("temperature", 1.0, 30.0, default=10.0)
    return hp


DEFAULTS = {"depth": 4, "metric": "sqeuclidean", "rate": 1e-3}


@pytest.mark.parametrize("strategy", ["random", "bayesian", "evolution", "controller"])
def test_a_trained_search_starts_from_the_default_configuration(strategy):
    oracle = oracle_for(strategy, default_space(), max_trials=6)
    oracle.start_from_default = True
    first = run_trial(oracle, lambda t: 0.5)
    assert first.hyperparameters.values == DEFAULTS  # the inactive temperature is left out
    later = [run_trial(oracle, lambda t: 0.5).hyperparameters.values for _ in range(5)]
    assert DEFAULTS not in later  # proposed once, then the strategy's own proposals
    assert oracle.get_state()["default_first"] == {"proposed": True}


def test_the_default_first_is_off_unless_asked_and_survives_a_resume():
    oracle = oracle_for("random", default_space(), seed=3, max_trials=4)
    assert run_trial(oracle, lambda t: 0.5).hyperparameters.values != DEFAULTS
    resumed = oracle_for("random", default_space(), seed=3, max_trials=4)
    resumed.start_from_default = True
    resumed.set_state({**resumed.get_state(), "default_first": {"proposed": True}})
    assert run_trial(resumed, lambda t: 0.5).hyperparameters.values != DEFAULTS


def test_fixed_hyperparameters_stay_fixed_in_the_default_configuration():
    fixed = keras_tuner.HyperParameters()
    fixed.Fixed("depth", 2)  # as --fix_hparams does: fixed first, then the space declared
    hp = default_space(fixed)
    oracle = oracle_for("random", hp, max_trials=3)
    oracle.start_from_default = True
    assert run_trial(oracle, lambda t: 0.5).hyperparameters.values == {**DEFAULTS, "depth": 2}


@pytest.mark.parametrize("strategy", ["hyperband", "grid"])
def test_strategies_with_their_own_order_do_not_start_from_the_default(strategy):
    oracle = oracle_for(strategy, small_space(), max_trials=3)
    oracle.start_from_default = True
    assert type(oracle).STARTS_FROM_DEFAULT is False
    trial = run_trial(oracle, lambda t: 0.5)
    assert trial.status in ("RUNNING", "COMPLETED")
