"""The final phase: train the best candidates further, keep one, meta-test it.

After the search, `run_final_phase` turns the best trials into the learner a
run ships, with a number the search never looked at:

1. The default configuration's trial and the best trial are scored on
   `--test_episodes` meta-test episodes of the test classes (never used by
   the search) at `--n_way`; timing that first pass tells how long the rest
   of the evaluation will take, which is set aside from the time budget.
2. The `--final_top_k` best trials train further from their weights, each on
   training episodes of a stream of its own (not the ones its trial saw),
   with the rest of `--time_budget` split between them, or for
   `--final_episodes` episodes each without a budget.
3. They are scored on the same meta-validation episodes as every trial and
   the best of them is kept: the test classes play no part in the choice.
4. The kept learner is meta-tested on the same episodes at `--n_way` and at
   the data set's standard ways (`Dataset.TEST_WAYS`, e.g. 5- and 20-way for
   Omniglot). Every learner meets the very same test episodes, so the
   differences reported are paired (mean and 95% interval of the
   per-episode difference).

The record (`RUN/final/final.json`) and weights (`RUN/final/`) are written
atomically through the run folder; `metasearch export --trial=best` then
exports this learner.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from metasearch.budget import TimeBudget, format_duration
from metasearch.components import sampled_training
from metasearch.data import episodes
from metasearch.errors import DamagedFileError
from metasearch.job import Job, derived_seed
from metasearch.rundir import FinishedRun, ranked_trials, save_weights
from metasearch.strategies.base import default_values
from metasearch.training import MetaTrainer

# Extra room on the measured evaluation speed, so the final printout lands inside the budget.
EVALUATION_MARGIN = 1.25
# Steps between learning-rate updates (and time checks) when training for a time budget.
TIME_CHUNK_STEPS = 20


def format_score(kind, value: float, ci95: float | None) -> str:
    """`95.12 ± 0.40%` (accuracy) or `0.0123 ± 0.0010` (MSE), without padding."""
    return " ".join(kind.format_score(value, ci95).split())


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean and 95% half-width of `a - b` over the same episodes."""
    return episodes.mean_and_ci95(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def default_hyperparameters(job: Job) -> dict[str, Any]:
    """The default configuration's values, as the oracle proposes it (fixed ones as fixed)."""
    hp = job.fixed.copy()
    job.components.sample(hp)  # declares the joint space, as the tuner does
    return default_values(hp)


def default_trial(job: Job, results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed trial that ran the default configuration, if the search ran it."""
    defaults = default_hyperparameters(job)
    for record in results:
        if record["status"] == "COMPLETED" and record.get("hyperparameters") == defaults:
            return record
    return None


class _Tester:
    """Scores learners on the run's fixed meta-test episodes, at each way, and times it."""

    def __init__(self, job: Job, ways: tuple[int, ...]):
        self.job, self.ways = job, ways
        self.seconds_per_episode: dict[int, float] = {}

    def score(self, learner, n_way: int) -> np.ndarray:
        config = self.job.config
        stream = self.job.kind.test_episodes(
            self.job.data, config, n_way, config.seed, episodes.TEST_STREAM, config.test_episodes
        )
        trainer = MetaTrainer(
            learner, self.job.normalization, 1e-3, 1, jit_compile=self.job.jit_compile
        )
        started = time.monotonic()
        scores = trainer.evaluate(stream, self.job.kind.eval_classes(n_way))
        self.seconds_per_episode[n_way] = (time.monotonic() - started) / max(1, len(scores))
        return scores

    def estimate(self, n_way: int) -> float:
        """Seconds one test episode at `n_way` takes (scaled from the ways measured)."""
        if n_way in self.seconds_per_episode:
            return self.seconds_per_episode[n_way]
        measured_way, seconds = next(iter(self.seconds_per_episode.items()))
        return seconds * n_way / max(1, measured_way)


def run_final_phase(
    job: Job,
    results: list[dict[str, Any]],
    budget: TimeBudget | None,
    report: Callable[[str], None],
) -> dict[str, Any] | None:
    """Trains the best candidates further, keeps one, meta-tests it; returns the record.

    None when no trial completed. `report(line)` hears what happens.
    """
    config = job.config
    run = FinishedRun(config.output_dir)
    kind = job.kind
    images = getattr(job.data, "images", None) or {}
    test_classes = images["test"].num_classes if "test" in images else 0
    ways = kind.test_ways(job.components.dataset, config, test_classes)
    n_way = ways[0]
    tester = _Tester(job, ways)
    started = time.monotonic()
    damaged: set[str] = set()

    def rebuilt(record):
        """The trial's learner with its weights; None (set aside, with a note) if damaged."""
        try:
            return run.rebuild(record)[0]
        except DamagedFileError as error:  # as the export sets such a trial aside
            report(f"note: trial {record['trial_id']} set aside: {error}")
            damaged.add(record["trial_id"])
            return None

    # 1. The default configuration and the best trial, as the search left them.
    trial_scores: dict[str, np.ndarray] = {}
    default = default_trial(job, results)
    learner = rebuilt(default) if default is not None else None
    if learner is None:
        default = None
    else:
        trial_scores[default["trial_id"]] = tester.score(learner, n_way)
    best = None
    for record in ranked_trials(results):
        if record["trial_id"] not in trial_scores:  # not the default, scored already
            learner = rebuilt(record)
            if learner is None:
                continue
            trial_scores[record["trial_id"]] = tester.score(learner, n_way)
        best, best_learner = record, learner
        break
    if best is None:
        return None
    ranked = [r for r in ranked_trials(results) if r["trial_id"] not in damaged]

    # 2. Further training of the top k, within what the budget leaves.
    candidates = ranked[: config.final_top_k]
    per_candidate = _training_allowance(job, budget, tester, ways, candidates)
    training = candidates
    if candidates and per_candidate is not None and per_candidate[1] <= 0:
        report(
            "final phase: the time budget leaves no time to train further; the best trial "
            "is meta-tested as it is"
        )
        training = []
    if training and per_candidate is not None and per_candidate[0] == "seconds":
        report(
            f"final phase: {len(training)} candidate(s) train {format_duration(per_candidate[1])}"
            " each, then the chosen one is meta-tested"
        )
    trained = []
    for index, record in enumerate(training):
        learner = rebuilt(record)
        if learner is None:
            continue
        summary = _train_further(job, learner, record, per_candidate, index)
        val = MetaTrainer(learner, job.normalization, 1e-3, 1, jit_compile=job.jit_compile)
        val_scores = val.evaluate(
            job.validation_episodes(config.eval_episodes), kind.eval_classes(config.n_way)
        )
        mean, ci95 = episodes.mean_and_ci95(val_scores)
        trained.append((kind.goodness(mean), -index, record, learner, summary, mean, ci95))
        report(
            f"final phase: trial {record['trial_id']} trained {summary['episodes']} more episodes "
            f"({format_duration(summary['train_seconds'])}); meta-validation "
            f"{format_score(kind, record[kind.objective], record.get('val_ci95'))} -> "
            f"{format_score(kind, mean, ci95)}"
        )

    # 3. The kept learner: the best on meta-validation (the best trial itself untrained).
    if trained:
        _, _, chosen, learner, summary, val_mean, val_ci95 = max(trained, key=lambda t: t[:2])
        if not np.isfinite(val_mean):
            raise FloatingPointError(f"final phase: meta-validation score is {val_mean}")
    else:
        chosen, summary, learner = best, {"episodes": 0, "train_seconds": 0.0}, best_learner
        val_mean, val_ci95 = chosen[kind.objective], chosen.get("val_ci95")
    save_weights(learner.weights, job.run_dir.final_weights_path())

    # 4. Meta-test at every way; paired comparisons at --n_way.
    tests = []
    for way in ways:
        if not trained and way == n_way:
            scores = trial_scores[chosen["trial_id"]]  # the same learner, already tested
        else:
            scores = tester.score(learner, way)
        mean, ci95 = episodes.mean_and_ci95(scores)
        tests.append({"n_way": way, "k_shot": config.k_shot, "mean": mean, "ci95": ci95})
        if way == n_way:
            final_scores = scores
    comparisons = {}
    if default is not None:
        comparisons["final_vs_default"] = _comparison(
            final_scores, trial_scores[default["trial_id"]], kind
        )
        if best["trial_id"] != default["trial_id"]:
            comparisons["best_trial_vs_default"] = _comparison(
                trial_scores[best["trial_id"]], trial_scores[default["trial_id"]], kind
            )
    record = {
        "trial_id": "final",
        # Stamps exports (`rundir.export_identity`): a later final phase is a new learner.
        "final_id": f"{chosen['trial_id']}-{time.time_ns()}",
        "source_trial": chosen["trial_id"],
        "status": "COMPLETED",
        "architecture": chosen.get("architecture"),
        "architecture_config": chosen["architecture_config"],
        "genotype": chosen.get("genotype"),
        "plugin": chosen.get("plugin"),
        "plugin_config": chosen["plugin_config"],
        "hyperparameters": chosen["hyperparameters"],
        "parameters": chosen.get("parameters"),
        "flops": chosen.get("flops"),
        "candidates": [r["trial_id"] for r in candidates],
        "episodes": int(chosen.get("episodes") or 0) + int(summary["episodes"]),
        "final_episodes": int(summary["episodes"]),
        "final_train_seconds": float(summary["train_seconds"]),
        kind.objective: float(val_mean),
        "val_ci95": None if val_ci95 is None else float(val_ci95),
        kind.objective.replace("val_", "test_"): tests[0]["mean"],
        "test_ci95": tests[0]["ci95"],
        "test_episodes": int(config.test_episodes),
        "meta_test": tests,
        "trial_tests": {
            trial_id: dict(zip(("mean", "ci95"), episodes.mean_and_ci95(scores)))
            for trial_id, scores in trial_scores.items()
        },
        "default_trial": None if default is None else default["trial_id"],
        "comparisons": comparisons,
        "wall_seconds": time.monotonic() - started,
    }
    job.run_dir.write_final_record(record)
    return record


def _comparison(a: np.ndarray, b: np.ndarray, kind) -> dict[str, float]:
    mean, ci95 = paired_difference(a, b)
    return {"difference": mean, "ci95": ci95, "better": bool(kind.goodness(mean) - ci95 > 0)}


def _training_allowance(job: Job, budget, tester: _Tester, ways, candidates: list[dict]):
    """`("seconds", s)` or `("episodes", n)` of further training per candidate, or None."""
    config = job.config
    if not candidates:
        return None
    if budget is None:
        if config.trial_seconds is not None and not config.final_episodes:
            return ("seconds", config.trial_seconds)
        return ("episodes", int(config.final_episodes or config.episodes_per_trial))
    # What evaluation still costs: the candidates' meta-validation (as long as their
    # trials' took, or scaled from the meta-tests), the kept one's tests.
    evaluation = sum(config.test_episodes * tester.estimate(way) for way in ways)
    for record in candidates:
        measured = record.get("seconds", {}).get("validation")
        scaled = config.eval_episodes * tester.estimate(config.n_way)
        evaluation += measured if measured is not None else scaled
    seconds = (budget.left() - EVALUATION_MARGIN * evaluation) / len(candidates)
    return ("seconds", max(0.0, seconds))


def _train_further(job: Job, learner, record, allowance, index: int) -> dict[str, Any]:
    """Meta-trains `learner` on a fresh training stream; returns episodes and seconds.

    A fresh Adam restarts the trial's learning rate and decays it (cosine)
    over the allowance: a warm restart from the trial's weights.
    """
    config = job.config
    if allowance is None or allowance[1] <= 0:
        return {"episodes": 0, "train_seconds": 0.0}
    rate = record["hyperparameters"].get("train/learning_rate") or 1e-3
    stream = job.episode_stream(
        "train",
        derived_seed(config.seed, f"final {index}"),
        episodes.TRAIN_STREAM,
        training=sampled_training(record["hyperparameters"]),
    )
    by_time = allowance[0] == "seconds"
    steps = None if by_time else max(1, math.ceil(allowance[1] / config.meta_batch_size))
    trainer = MetaTrainer(
        learner,
        job.normalization,
        rate,
        steps,
        jit_compile=job.jit_compile,
        meta_batch_size=config.meta_batch_size,
        devices=config.devices,
    )
    trainer.optimizer.build(learner.trainable_variables)
    if by_time:
        summary = trainer.train_for(stream, allowance[1], chunk=TIME_CHUNK_STEPS)
        steps = int(summary["steps"])
    else:
        summary = trainer.train(stream, steps)
    return {"episodes": steps * config.meta_batch_size, "train_seconds": summary["train_seconds"]}
