"""Reporting a run: `results.json`, the leaderboard, and the versions it ran with.

`write_results` merges keras-tuner's trial files with metasearch's records
(through the run folder) and rewrites `results.json` and `leaderboard.txt`;
the leaderboard's wording and score format come from the run's task kind.
The leaderboard marks the Pareto-optimal trials (`metasearch.pareto`): L for
score against latency, P for score against parameters.
"""

from __future__ import annotations

import math
import platform
from typing import Any

from metasearch import pareto
from metasearch.config import searched_training_text
from metasearch.flops import format_flops
from metasearch.rundir import (
    LEADERBOARD_FILE,
    RESULTS_FILE,
    RunDir,
    best_trial,
    trial_score,
)
from metasearch.tasks import CLASSIFICATION, kind_of, kind_of_record


def run_kind(results: list[dict[str, Any]]):
    """The task kind of a run's trials (classification until a trial says otherwise)."""
    for record in results:
        kind = kind_of_record(record)
        if kind is not None:
            return kind
    return kind_of(CLASSIFICATION)


def leaderboard(results: list[dict[str, Any]], config: dict[str, Any]) -> str:
    """A plain-text table of trials, best first."""
    kind = run_kind(results)
    if config.get("evaluator") == "table":
        title = (
            f"Leaderboard: {config['search_space']} scored from {config['table']} "
            f"(column {config['table_column']})"
        )
    else:
        title = kind.leaderboard_title(config)
    ordered = sorted(
        results,
        key=lambda r: (
            r["status"] != "COMPLETED",
            -(trial_score(r) if trial_score(r) is not None else -math.inf),
            r["trial_id"],
        ),
    )
    marks = pareto.marks(results)
    tested = any(meta_test_score(r, kind) for r in results)
    test_column = f"  {kind.column.replace('val', 'test'):>16}" if tested else ""
    header = (
        f"{'rank':>4}  {'trial':>5}  {'status':<9}  {kind.column:>16}{test_column}  "
        f"{'params':>9}  {'FLOPs':>7}  {'latency':>8}  {'time':>7}  {'pareto':<6}  "
        "architecture / learner"
    )
    lines = [title, header, "-" * len(header)]
    for rank, r in enumerate(ordered, start=1):
        if r["status"] == "COMPLETED" and r.get(kind.objective) is not None:
            score = kind.format_score(r[kind.objective], r.get("val_ci95"))
        else:
            score = "-"
        params = f"{r['parameters']:,}" if r.get("parameters") is not None else "-"
        flops = format_flops(r["flops"]) if r.get("flops") else "-"
        wall = f"{r['wall_seconds']:.0f}s" if "wall_seconds" in r else "-"
        latency = f"{r['latency_ms']:.1f}ms" if r.get("latency_ms") is not None else "-"
        test = f"  {meta_test_score(r, kind) or '-':>16}" if tested else ""
        learner = ", ".join(f"{k}={v}" for k, v in sorted(r.get("plugin_config", {}).items()))
        lr = r.get("hyperparameters", {}).get("train/learning_rate")
        learner += f", lr={lr:.1e}" if isinstance(lr, float) else ""
        training = searched_training_text(r.get("hyperparameters", {}))
        learner += f", {training}" if training else ""
        what = f"{r.get('architecture', '?')}" + (f" / {learner}" if learner else "")
        if r["status"] != "COMPLETED" and r.get("error"):
            what += f"  [{r['error'][:80]}]"
        stopped = r.get("racing", {}).get("stopped")
        if stopped:
            what += (
                f"  [raced out at {stopped['episodes']} episodes: clearly worse than trial "
                f"{stopped['leader']}]"
            )
        lines.append(
            f"{rank:>4}  {r['trial_id']:>5}  {r['status']:<9}  {score:>16}{test}  {params:>9}  "
            f"{flops:>7}  {latency:>8}  {wall:>7}  {marks.get(r['trial_id'], ''):<6}  {what}"
        )
    if marks:
        lines.append(
            "pareto: L = no trial is better and faster (latency: adapting to and predicting "
            "one 5-way 1-shot task), P = no trial is better and smaller"
        )
    return "\n".join(lines) + "\n"


def meta_test_score(record: dict[str, Any], kind) -> str | None:
    """The trial's meta-test score with its 95% interval, when its record has one."""
    value = record.get(kind.objective.replace("val_", "test_"))
    if record.get("status") != "COMPLETED" or not isinstance(value, (int, float)):
        return None
    return kind.format_score(value, record.get("test_ci95"))


def write_results(run_dir: RunDir, config: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Rewrites `results.json` and `leaderboard.txt` from the run folder; returns both.

    With a final phase (`metasearch.final`), `results.json` carries its record
    under `final`, the trials it meta-tested carry `test_*` scores, and the
    leaderboard ends with the final learner's meta-test numbers.
    """
    results = run_dir.trial_results()
    kind = run_kind(results)
    final = run_dir.final_record()
    if final is not None:
        test_name = kind.objective.replace("val_", "test_")
        for record in results:
            tested = final.get("trial_tests", {}).get(record["trial_id"])
            if tested is not None and record["status"] == "COMPLETED":
                record[test_name], record["test_ci95"] = tested["mean"], tested["ci95"]
                record["test_episodes"] = final.get("test_episodes")
    best = best_trial(results)
    contents = {
        "objective": kind.objective,
        "best_trial": best["trial_id"] if best else None,
        "trials": results,
    }
    if final is not None:
        contents["final"] = final
    run_dir.write_json(RESULTS_FILE, contents)
    board = leaderboard(results, config)
    if final is not None:
        board += final_summary(final, kind)
    run_dir.write_text(LEADERBOARD_FILE, board)
    return results, board


def final_summary(final: dict[str, Any], kind) -> str:
    """The final learner's meta-test numbers, and what the search bought over the default."""
    lines = [
        "",
        f"Final learner: trial {final['source_trial']} ({final.get('architecture')}), "
        f"{final['episodes']:,} meta-training episodes ({final['final_episodes']:,} in the final "
        f"phase); meta-test on {final['test_episodes']:,} episodes of classes the search never saw:",
    ]
    for test in final["meta_test"]:
        lines.append(
            f"  {test['n_way']}-way {test['k_shot']}-shot: "
            f"{' '.join(kind.format_score(test['mean'], test['ci95']).split())}"
        )
    default_id = final.get("default_trial")
    comparisons = final.get("comparisons", {})
    if default_id is None:
        lines.append("  (the search did not run the default configuration: no comparison)")
    else:
        tested = final["trial_tests"][default_id]
        lines.append(
            f"Default configuration (trial {default_id}, as trained in its trial): "
            f"{' '.join(kind.format_score(tested['mean'], tested['ci95']).split())}"
        )
        scale = 100.0 if kind.metric == "accuracy" else 1.0
        unit = " points" if kind.metric == "accuracy" else ""
        for key, what in (
            ("final_vs_default", "final learner - default"),
            ("best_trial_vs_default", "best trial - default, at equal training"),
        ):
            if key in comparisons:
                c = comparisons[key]
                lines.append(
                    f"  {what}: {scale * c['difference']:+.2f} ± {scale * c['ci95']:.2f}{unit} "
                    f"(paired over the same episodes{', significant' if c['better'] else ''})"
                )
        if final["source_trial"] == default_id:
            lines.append("  the default configuration was the best candidate")
    return "\n".join(lines) + "\n"


def versions() -> dict[str, str]:
    """The versions of metasearch and what it runs on, for export metadata."""
    from importlib import metadata

    import keras
    import keras_tuner
    import tensorflow as tf

    return {
        "metasearch": metadata.version("metasearch"),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_tuner": keras_tuner.__version__,
        "python": platform.python_version(),
    }
