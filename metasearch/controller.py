"""The story of a search: validate, describe the run, let keras-tuner run trials, export.

`search(config)` validates every input (`metasearch.job.Job`) before anything
is written, writes the run's description, builds the `--strategy` oracle and
runs keras-tuner's search through `metasearch.tuner.FewShotTuner` (each trial
meta-trains and scores one candidate). After every trial `results.json` and
the leaderboard are rewritten (`metasearch.report`); at the end the best
trial is exported as a SavedModel (`metasearch.export`). The run folder's
layout is in `metasearch.rundir`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, TextIO

import keras_tuner

from metasearch import (
    devices,
    distributed,
    final,
    html_report,
    interrupts,
    plots,
    report,
    strategies,
    threads,
)
from metasearch.budget import TimeBudget
from metasearch.config import RunConfig
from metasearch.errors import Interrupted, MetasearchError, SearchFailedError
from metasearch.export import export_kinds
from metasearch.job import Job, derived_seed
from metasearch.progress import Progress
from metasearch.rundir import (
    BUDGET_FILE,
    FINISHED,
    LEADERBOARD_FILE,
    PROGRESS_PICTURE,
    FinishedRun,
    RunLock,
    best_trial,
    ranked_trials,
    read_json,
)
from metasearch.tuner import FewShotTuner


@dataclasses.dataclass
class SearchResult:
    """What a search leaves: every trial's record, the leaderboard and the exports.

    `results` are the trial records of `results.json` (trial order);
    `best_trial` the best completed one (None when none completed);
    `export_dir`/`cell_export_dir` the exported best learner and cells (None
    when nothing was exported, e.g. on a worker or for a table-scored run).
    """

    output_dir: str
    results: list[dict[str, Any]]
    leaderboard: str
    best_trial: dict[str, Any] | None
    export_dir: str | None = None
    cell_export_dir: str | None = None
    config: RunConfig | None = None
    report_path: str | None = None  # the HTML report (`metasearch.html_report`)

    def __getitem__(self, key: str) -> Any:
        # Reads like the summary dict `search` returned before.
        return getattr(self, key)


def make_oracle(job: Job) -> keras_tuner.Oracle:
    """The job's `--strategy` oracle, seeded from `--seed`, able to serve a distributed search.

    A trained search starts from the default configuration (`--start_from_default`).
    """
    config = job.config
    oracle = strategies.make_oracle(
        config.strategy,
        objective=keras_tuner.Objective(*job.objective),
        max_trials=config.max_trials,
        seed=derived_seed(config.seed, "oracle"),
        hyperparameters=job.fixed,
        options=config.strategy_options,
    )
    oracle.start_from_default = job.trains and config.start_from_default
    return oracle


def search(config: RunConfig, out: TextIO = sys.stdout) -> SearchResult:
    """Runs (or resumes, or joins as a worker) a search; returns its `SearchResult`.

    The run folder gets the resolved configuration (`config.json`) and the
    flagfile that repeats the run (`flags.txt`), from Python as from the CLI.
    In a distributed search (see `metasearch.distributed`) the chief serves
    the oracle and exports at the end; workers only run trials.

    A local search or the chief holds the run folder's lock (`RunLock`) from
    the start to the end: a second search into it is refused naming the
    holder. Raises `SearchFailedError` when the search did not do what was
    asked (every trial failed, consecutive failures stopped it, or nothing
    completed; the leaderboard and any export are written first),
    `StorageError` when a write fails, and `Interrupted` on Ctrl-C/SIGTERM
    (the running trial is handed back; rerunning resumes).
    """
    role = distributed.role()
    # Before any TensorFlow op runs: splitting the CPU into --devices logical devices,
    # and the intra-op thread count (`metasearch.threads`).
    devices.configure(config.devices)
    intra_op_threads = threads.configure_run(config)
    job = Job(config, role)
    job.intra_op_threads = intra_op_threads
    if role == "worker":  # workers coordinate through the chief, which holds the lock
        return _search(job, role, out)
    with RunLock(job.config.output_dir, "search") as lock:
        for line in [*lock.notes, *job.run_dir.clean_debris(), *job.notes]:
            out.write(f"note: {line}\n")
        return _search(job, role, out)


def _search(job: Job, role: str, out: TextIO) -> SearchResult:
    config = job.config
    if role != "worker":
        job.start()
    budget = job_budget(job)
    progress = Progress(
        config.max_trials,
        enabled=config.progress,
        stream=out,
        metric=job.kind.metric,
        budget=budget,
    )
    oracle = make_oracle(job)
    tuner = FewShotTuner(job, oracle, progress, budget)
    done = 0
    if role != "worker":
        done = sum(
            1
            for t in tuner.oracle.trials.values()
            if t.status in FINISHED and t.trial_id not in oracle.set_aside
        )
        if oracle.rebuilt_state:
            out.write(
                f"note: {oracle.rebuilt_state}: rebuilt from the intact trial records "
                "(the strategy's own state starts afresh)\n"
            )
        for trial_id, why in job.run_dir.damaged_trials().items():
            out.write(f"note: trial {trial_id} {why}; the search goes on without it\n")
    progress.search_started(
        config,
        job.jit_compile,
        done=done,
        role=role,
        precision=job.components.precision,
        intra_op_threads=job.intra_op_threads,
    )
    final_record = None
    try:
        with interrupts.watch():
            tuner.search()
            if role != "worker":
                _report_search_end(job, oracle, out)
            if role != "worker" and job.trains:
                results, _ = report.write_results(job.run_dir, config.to_json())
                with interrupts.interruptible():
                    final_record = final_phase(job, results, budget, out)
    except KeyboardInterrupt:
        results, _ = report.write_results(job.run_dir, config.to_json())
        ended = sum(1 for r in results if r["status"] in FINISHED)
        raise Interrupted(
            f"stopped after {ended} trials; rerun the same command to resume",
            interrupts.exit_code(),
        ) from None
    results, board = report.write_results(job.run_dir, config.to_json())
    result = SearchResult(config.output_dir, results, board, best_trial(results), config=config)
    if role == "worker":
        out.write(f"worker {tuner.tuner_id}: no trials left\n")
        out.flush()
        return result
    failure = search_failure(results, oracle)
    out.write("\n" + board)  # with the final phase's meta-test numbers at its end
    picture = job.run_dir.file(PROGRESS_PICTURE)
    scored_by = config.plugin if job.trains else f"table {config.table_column}"
    plots.plot_search_progress(
        results, picture, title=f"{config.search_space} / {scored_by} / {config.strategy}"
    )
    out.write(f"\nSearch progress plotted in {picture}\n")
    best = result.best_trial
    if best is None:
        out.write("No trial completed; nothing exported.\n")
    elif not job.trains:
        out.write(
            f"Best architecture: trial {best['trial_id']}, {best.get('architecture')}; "
            "table-scored trials have no weights to export.\n"
        )
    else:
        has_cells = bool(job.components.space.cell_graphs(best["architecture_config"]))
        paths = export_kinds(
            config.output_dir,
            "best",
            ("learner", "cell") if has_cells else ("learner",),
            report=lambda line: out.write(f"note: {line}\n"),
        )
        result.export_dir = paths["learner"]
        what = "Final learner" if final_record is not None else "Best learner"
        out.write(f"{what} exported to {paths['learner']}\n")
        if has_cells:
            result.cell_export_dir = paths["cell"]
            out.write(f"Best cell exported to {paths['cell']}\n")
    try:
        result.report_path = html_report.write_report(config.output_dir)
        out.write(f"Report written to {result.report_path}\n")
    except Exception as error:  # noqa: BLE001 - the search's results stand without it
        out.write(f"The HTML report was not written: {type(error).__name__}: {error}\n")
    out.flush()
    if failure:
        raise SearchFailedError(f"{failure}; see {job.run_dir.file(LEADERBOARD_FILE)}")
    return result


def _report_search_end(job: Job, oracle, out: TextIO) -> None:
    """Why the search stopped before its end, and what the constraint rejected."""
    if oracle.rejected:
        what = (
            "proposed cells missing from --table were skipped"
            if job.table is not None
            else "candidates over --max_params were rejected before training"
        )
        out.write(f"{len(oracle.rejected)} {what}\n")
    if oracle.stop_reason:
        out.write(f"search stopped early: {oracle.stop_reason}\n")


def job_budget(job: Job) -> TimeBudget | None:
    """The job's `--time_budget`, minus what earlier runs of it spent (None: no budget)."""
    spent = 0.0
    if job.config.time_budget is not None and job.role != "worker":
        try:
            spent = float(read_json(job.run_dir.file(BUDGET_FILE)).get("spent_seconds", 0.0))
        except (OSError, ValueError, AttributeError):
            spent = 0.0
    budget = TimeBudget.from_config(job.config, spent)
    if budget is not None and job.role != "worker":
        for record in job.run_dir.trial_results():
            if record["status"] in FINISHED and "wall_seconds" in record:
                budget.trial_ended(record["wall_seconds"])
    return budget


def final_phase(job: Job, results, budget: TimeBudget | None, out: TextIO):
    """The final phase's record (`metasearch.final`), reusing one that is still current."""
    if best_trial(results) is None:
        return None
    ranked = [r["trial_id"] for r in ranked_trials(results)]
    top = ranked[: job.config.final_top_k]
    held = job.run_dir.final_record()
    if (
        held is not None
        and held.get("candidates") == top
        # Without candidates (--final_top_k=0) the record is the best trial's as trained:
        # current only while that trial is still the best (not since set aside as damaged).
        and (top or held.get("source_trial") == ranked[0])
        and held.get("test_episodes") == job.config.test_episodes
        and os.path.exists(job.run_dir.final_weights_path())
    ):
        out.write("note: the final phase of these candidates is done; kept as it is\n")
        return held
    out.write("\n")
    try:
        return final.run_final_phase(job, results, budget, lambda line: out.write(line + "\n"))
    except (KeyboardInterrupt, MetasearchError):
        raise
    except Exception as error:  # noqa: BLE001 - the search's trials stand without it
        out.write(
            f"The final phase failed ({type(error).__name__}: {error}); the best trial "
            "is exported as the search left it\n"
        )
        return None


def search_failure(results: list[dict[str, Any]], oracle) -> str | None:
    """Why a finished search did not do what was asked (None: it did)."""
    ended = [r for r in results if r["status"] in FINISHED]
    failed = [r for r in ended if r["status"] != "COMPLETED"]
    last = next((r["error"] for r in reversed(failed) if r.get("error")), "no message")
    if oracle.stopped_by_failures:
        return (
            f"the search stopped after {oracle.max_consecutive_failed_trials} consecutive "
            f"failed trials (last: {last})"
        )
    if best_trial(results) is not None:
        return None
    if ended and len(failed) == len(ended):
        return f"all {len(ended)} trials failed (last: {last})"
    why = oracle.stop_reason or ", ".join(f"{r['trial_id']}: {r['status']}" for r in results)
    return f"the search ended with no completed trial ({why or 'no trial ran'})"


def load_run(output_dir: str) -> FinishedRun:
    """A finished (or interrupted) run read back: its config, trials, and learners to rebuild.

    `run.results()` lists the trial records, `run.trial("best")` picks one and
    `run.rebuild(record)` returns its trained learner and task.
    """
    if not os.path.isdir(output_dir):
        from metasearch.errors import UsageError

        raise UsageError(f"--output_dir: no such folder {output_dir}")
    return FinishedRun(output_dir)


def restore_trial(output_dir: str, trial_id: str = "best"):
    """Rebuilds a finished trial's learner with its trained weights.

    Returns `(learner, search space, architecture config)`; `trial_id` may be
    `"best"`. The run's description (`config.json`, `dataset.json`) says how.
    """
    run = FinishedRun(output_dir)
    chosen = run.trial(trial_id)
    learner, _ = run.rebuild(chosen)
    return learner, run.components.space, chosen["architecture_config"]
