"""Search strategies compared on NAS-Bench-201's table (CIFAR-10 validation accuracy).

Each strategy's oracle (the very class `metasearch.strategies.make_oracle`
gives a search) is driven like a tuner drives it, for `--queries` trials; a
trial's score is the table's accuracy of its cell (`--evaluator=table` in a
search), so a search takes seconds. Hyperband's trials read the table whatever
their epochs: its promotions re-query cells, which costs it queries. Every
strategy runs the same `--seeds` seeds (1..N, never used to tune the
defaults) in a pool of `--workers` processes.

Prints JSON: per strategy the mean best accuracy within 100 queries with its
95% CI, the mean best after 25 and 50 queries, the worker seconds spent, and
the table's best.

    python benchmarks/nb201_strategies.py [--seeds 100] [--queries 100] [--table PATH]
"""

from __future__ import annotations

import os

# One BLAS thread per worker: the GP's small matrices get slower, not faster,
# with threads competing for two cores.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = REPO / ".." / "shared" / "data" / "nasbench201" / "nb201_val_accuracy.csv"
STRATEGIES = ("random", "bayesian", "hyperband", "evolution", "controller")
# keras-tuner's own GP oracle, which `bayesian` replaces (minutes per search).
STOCK_BAYESIAN = "keras_tuner_bayesian"
CHECKPOINTS = (25, 50)
METRIC = "val_accuracy"

_worker: dict = {}


def _init_worker(table_path: str, column: str) -> None:
    import keras_tuner

    from metasearch.search_spaces.nasbench201 import NASBench201
    from metasearch.tabular import Table

    space = NASBench201()
    declared = keras_tuner.HyperParameters()
    space.sample_config(declared)
    _worker.update(table=Table(table_path, column), space=space, declared=declared)


def _evaluate(hp) -> float:
    space = _worker["space"]
    return _worker["table"].lookup(space.table_key(space.sample_config(hp)))


def run_search(strategy: str, seed: int, queries: int) -> tuple[list[float], float]:
    """One search: the best accuracy after each query, and the seconds it took."""
    import keras_tuner

    from metasearch import kt_adapter, strategies, tabular

    started = time.perf_counter()
    common = dict(
        objective=keras_tuner.Objective(METRIC, direction="max"),
        max_trials=queries,
        seed=seed,
        hyperparameters=_worker["declared"].copy(),
    )
    if strategy == STOCK_BAYESIAN:
        # keras-tuner's own oracle; the adapter's subclass only adds the in-memory mode.
        oracle = kt_adapter.BayesianOptimizationOracle(**common)
    else:
        oracle = strategies.make_oracle(strategy, **common)
    tabular.keep_in_memory(oracle)
    scores = tabular.simulate(oracle, _evaluate, queries, METRIC)
    best, running = [], -math.inf
    for score in scores:
        running = max(running, score)
        best.append(running)
    return best, time.perf_counter() - started


def summarise(curves: list[list[float]], queries: int) -> dict:
    finals = [curve[min(queries, len(curve)) - 1] for curve in curves]
    summary = {
        "best_mean": round(statistics.fmean(finals), 3),
        "best_ci95": round(1.96 * statistics.stdev(finals) / math.sqrt(len(finals)), 3)
        if len(finals) > 1
        else None,
    }
    for point in CHECKPOINTS:
        if point <= queries:
            summary[f"best_at_{point}_mean"] = round(
                statistics.fmean(curve[min(point, len(curve)) - 1] for curve in curves), 3
            )
    summary["searches_stopped_early"] = sum(len(curve) < queries for curve in curves)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(DEFAULT_TABLE.resolve()))
    parser.add_argument("--table_column", default="cifar10_val")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument(
        "--stock_bayesian_seeds",
        type=int,
        default=0,
        help="also run keras-tuner's stock BayesianOptimizationOracle for this many seeds "
        "(about 3 minutes each)",
    )
    args = parser.parse_args()
    chosen = [name.strip() for name in args.strategies.split(",") if name.strip()]
    seeds = {name: args.seeds for name in chosen}
    if args.stock_bayesian_seeds > 0:
        chosen.append(STOCK_BAYESIAN)
        seeds[STOCK_BAYESIAN] = args.stock_bayesian_seeds

    from metasearch.tabular import Table  # fails early, naming the flag, on a bad table

    table = Table(args.table, args.table_column)
    started = time.perf_counter()
    curves: dict[str, list[list[float]]] = {name: [] for name in chosen}
    seconds: dict[str, float] = {name: 0.0 for name in chosen}
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=args.workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(args.table, args.table_column),
    ) as pool:
        # The slowest strategies first, so the two workers finish together.
        slow = (STOCK_BAYESIAN, "bayesian", "controller")
        order = sorted(chosen, key=lambda name: slow.index(name) if name in slow else len(slow))
        futures = {
            pool.submit(run_search, name, seed, args.queries): name
            for name in order
            for seed in range(1, seeds[name] + 1)
        }
        for future in concurrent.futures.as_completed(futures):
            name = futures[future]
            curve, spent = future.result()
            curves[name].append(curve)
            seconds[name] += spent
    results = {}
    for name in chosen:
        results[name] = summarise(curves[name], args.queries)
        results[name]["worker_seconds"] = round(seconds[name], 1)
        results[name]["seconds_per_search"] = round(seconds[name] / len(curves[name]), 3)
        results[name]["searches"] = len(curves[name])
    report = {
        "benchmark": "NAS-Bench-201 search strategies",
        "table": os.path.abspath(args.table),
        "column": args.table_column,
        "table_best": table.best()[1],
        "queries": args.queries,
        "seeds": args.seeds,
        "workers": args.workers,
        "strategies": results,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    if {"random", "evolution", "controller", "bayesian"} <= set(results):
        random_best = results["random"]["best_mean"]
        report["targets"] = {
            "evolution >= 91.05": results["evolution"]["best_mean"] >= 91.05,
            "controller > random": results["controller"]["best_mean"] > random_best,
            "bayesian > random": results["bayesian"]["best_mean"] > random_best,
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
