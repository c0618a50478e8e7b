"""Does a search pay for itself? The preset search against the default, same time, same episodes.

Runs two jobs one after the other (or one per invocation, `--jobs`), each
with the whole machine and the same `--time_budget` (default 30m, from the
preset flagfile):

* `search`: `benchmarks/presets/omniglot_search_30m.flags` (train on
  `images_background_small1`, test on the three alphabets only
  `images_background_small2` has): trials, racing, then the final phase;
* `baseline`: the default configuration alone (conv4-64, ProtoNet with squared
  Euclidean distance, learning rate 1e-3, every hyperparameter fixed at its
  default), trained for the same budget: its one trial, then the final phase
  trains it on for the rest.

Then both final learners are scored on the same 1,000 20-way 1-shot and 5-way
1-shot meta-test episodes (paired), and the JSON reports both, the paired
difference with its 95% interval, the targets (search >= baseline + 1.0 point
with the interval above zero; >= 90% 20-way 1-shot) and the search's cost.

    python benchmarks/search_payoff.py [--budget 30m] [--output_dir /tmp/search_payoff]
    python benchmarks/search_payoff.py --jobs=baseline   # then --jobs=search: scored then

A shorter `--budget` (e.g. 5m) checks the harness; only 30m measures the issue's target.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PRESET = os.path.join(HERE, "presets", "omniglot_search_30m.flags")
TEST_EPISODES = 1000
TARGET_GAIN, TARGET_20WAY = 0.01, 0.90


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(args: list[str], log_path: str) -> float:
    """Runs `metasearch ARGS` from the repository root; returns its wall seconds."""
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        code = subprocess.call(
            [sys.executable, "-m", "metasearch.cli", *args], stdout=log, stderr=log, cwd=REPO
        )
    if code != 0:
        raise SystemExit(f"search_payoff: metasearch exited {code}; see {log_path}")
    return time.monotonic() - started


def _previous_seconds(output_dir: str) -> dict[str, float]:
    """The jobs' wall seconds measured by earlier invocations (`--jobs`)."""
    try:
        with open(os.path.join(output_dir, "seconds.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {}


def _save_seconds(output_dir: str, seconds: dict[str, float]) -> None:
    with open(os.path.join(output_dir, "seconds.json"), "w", encoding="utf-8") as handle:
        json.dump(seconds, handle)


def default_values(run_dir: str) -> dict:
    """The default configuration's hyperparameters (the search's first trial)."""
    from metasearch.rundir import FinishedRun

    run = FinishedRun(run_dir)
    first = min(run.results(), key=lambda r: int(r["trial_id"]))
    return first["hyperparameters"]


def score(run_dirs: dict[str, str]) -> dict:
    """Both final learners on the same meta-test episodes, 20-way and 5-way 1-shot, paired."""
    import numpy as np

    from metasearch.config import RunConfig
    from metasearch.data import episodes
    from metasearch.job import Job
    from metasearch.rundir import FinishedRun
    from metasearch.training import MetaTrainer

    stored = FinishedRun(run_dirs["search"]).config
    config = RunConfig.from_json({**stored, "output_dir": "/tmp/search_payoff_scoring"})
    job = Job(config.replace(overwrite=True))
    scores: dict[str, dict[int, np.ndarray]] = {}
    for name, run_dir in run_dirs.items():
        run = FinishedRun(run_dir)
        learner, _ = run.rebuild(run.trial("best"))
        trainer = MetaTrainer(learner, job.normalization, 1e-3, 1, jit_compile=job.jit_compile)
        scores[name] = {}
        for way in (20, 5):
            stream = job.kind.test_episodes(
                job.data, config, way, config.seed + 1000, episodes.TEST_STREAM, TEST_EPISODES
            )
            scores[name][way] = trainer.evaluate(stream, way)
    report = {}
    for way in (20, 5):
        entry = {}
        for name in run_dirs:
            mean, ci95 = episodes.mean_and_ci95(scores[name][way])
            entry[name] = {"mean": mean, "ci95": ci95}
        mean, ci95 = episodes.mean_and_ci95(scores["search"][way] - scores["baseline"][way])
        entry["search_minus_baseline"] = {"mean": mean, "ci95": ci95}
        report[f"{way}way_1shot"] = entry
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="30m", help="--time_budget of each job")
    parser.add_argument("--output_dir", default="/tmp/search_payoff")
    parser.add_argument(
        "--jobs",
        default="baseline,search",
        help="the jobs to run now; a job left out must have finished in --output_dir "
        "(e.g. `--jobs=baseline`, later `--jobs=search`), and the scoring needs both",
    )
    args = parser.parse_args()
    jobs = [job for job in args.jobs.split(",") if job]
    unknown = sorted(set(jobs) - {"baseline", "search"})
    if unknown:
        parser.error(f"--jobs: unknown job {unknown[0]!r}; known: baseline, search")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.makedirs(args.output_dir, exist_ok=True)
    search_dir = os.path.join(args.output_dir, "search")
    baseline_dir = os.path.join(args.output_dir, "baseline")
    load_before = os.getloadavg()
    common = [f"--flagfile={PRESET}", f"--time_budget={args.budget}", "--overwrite", "--noprogress"]
    seconds = _previous_seconds(args.output_dir)
    if "baseline" in jobs:
        # The default configuration is the search's first trial; --fix_hparams pins it
        # (the search's trial 0 must show the same values: checked below).
        _log(f"baseline: the default configuration for {args.budget}")
        seconds["baseline"] = _run(
            [*common, f"--output_dir={baseline_dir}", "--max_trials=1", "--racing=none"],
            os.path.join(args.output_dir, "baseline.log"),
        )
    if "search" in jobs:
        _log(f"search: {args.budget} with {PRESET}")
        seconds["search"] = _run(
            [*common, f"--output_dir={search_dir}"], os.path.join(args.output_dir, "search.log")
        )
    _save_seconds(args.output_dir, seconds)
    if not all(os.path.exists(os.path.join(d, "results.json")) for d in (search_dir, baseline_dir)):
        _log("scoring needs both jobs finished; run the other with --jobs")
        return
    defaults = default_values(search_dir)
    if default_values(baseline_dir) != defaults:
        raise SystemExit(
            "search_payoff: the baseline's configuration is not the search's first trial: "
            f"{default_values(baseline_dir)} != {defaults}"
        )
    search_seconds, baseline_seconds = seconds["search"], seconds["baseline"]
    _log("scoring both final learners on the same meta-test episodes")
    scored = score({"search": search_dir, "baseline": baseline_dir})
    with open(os.path.join(search_dir, "results.json"), encoding="utf-8") as handle:
        results = json.load(handle)
    trials = results["trials"]
    twenty = scored["20way_1shot"]
    gain = twenty["search_minus_baseline"]
    print(
        json.dumps(
            {
                "benchmark": "search_payoff",
                "preset": os.path.relpath(PRESET, REPO),
                "budget": args.budget,
                "test_episodes": TEST_EPISODES,
                **scored,
                "search_cost": {
                    "wall_seconds": round(search_seconds, 1),
                    "baseline_wall_seconds": round(baseline_seconds, 1),
                    "trials": len(trials),
                    "raced_out": sum(1 for t in trials if t.get("racing", {}).get("stopped")),
                    "trial_train_share": [
                        round(t["train_seconds"] / t["wall_seconds"], 3)
                        for t in trials
                        if t.get("train_seconds") and t.get("wall_seconds")
                    ],
                    "final_source_trial": results["final"]["source_trial"],
                    "final_architecture": results["final"]["architecture"],
                    "final_hyperparameters": results["final"]["hyperparameters"],
                    "final_train_seconds": round(results["final"]["final_train_seconds"], 1),
                },
                "default_hyperparameters": defaults,
                "targets": {
                    "gain_at_least_1_point": gain["mean"] >= TARGET_GAIN,
                    "gain_interval_above_zero": gain["mean"] - gain["ci95"] > 0,
                    "search_20way_at_least_90": twenty["search"]["mean"] >= TARGET_20WAY,
                },
                "measured_at_budget": args.budget == "30m",
                "load_average": {"before": load_before, "after": os.getloadavg()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
