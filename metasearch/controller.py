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

from metasearch import distributed, plots, report, strategies
from metasearch.config import RunConfig
from metasearch.export import export_kinds
from metasearch.job import Job, derived_seed
from metasearch.progress import Progress
from metasearch.rundir import PROGRESS_PICTURE, FinishedRun, best_trial
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

    def __getitem__(self, key: str) -> Any:
        # Reads like the summary dict `search` returned before.
        return getattr(self, key)


def make_oracle(job: Job) -> keras_tuner.Oracle:
    """The job's `--strategy` oracle, seeded from `--seed`, able to serve a distributed search."""
    config = job.config
    return strategies.make_oracle(
        config.strategy,
        objective=keras_tuner.Objective(*job.objective),
        max_trials=config.max_trials,
        seed=derived_seed(config.seed, "oracle"),
        hyperparameters=job.fixed,
        options=config.strategy_options,
    )


def search(config: RunConfig, out: TextIO = sys.stdout) -> SearchResult:
    """Runs (or resumes, or joins as a worker) a search; returns its `SearchResult`.

    The run folder gets the resolved configuration (`config.json`) and the
    flagfile that repeats the run (`flags.txt`), from Python as from the CLI.
    In a distributed search (see `metasearch.distributed`) the chief serves
    the oracle and exports at the end; workers only run trials.
    """
    role = distributed.role()
    job = Job(config, role)
    config = job.config
    if role != "worker":
        job.start()
    progress = Progress(
        config.max_trials, enabled=config.progress, stream=out, metric=job.kind.metric
    )
    oracle = make_oracle(job)
    tuner = FewShotTuner(job, oracle, progress)
    done = 0
    if role != "worker":
        done = sum(1 for t in tuner.oracle.trials.values() if t.status != "RUNNING")
    progress.search_started(config, job.jit_compile, done=done, role=role)
    try:
        tuner.search()
    except RuntimeError as error:
        if "consecutive failures" not in str(error):
            raise
        out.write(f"search stopped: {str(error).splitlines()[0]}\n")
    results, board = report.write_results(job.run_dir, config.to_json())
    result = SearchResult(config.output_dir, results, board, best_trial(results), config=config)
    if role == "worker":
        out.write(f"worker {tuner.tuner_id}: no trials left\n")
        out.flush()
        return result
    if oracle.rejected:
        out.write(
            f"{len(oracle.rejected)} candidates over --max_params were rejected before training\n"
        )
    if oracle.stop_reason:
        out.write(f"search stopped early: {oracle.stop_reason}\n")
    out.write("\n" + board)
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
            config.output_dir, "best", ("learner", "cell") if has_cells else ("learner",)
        )
        result.export_dir = paths["learner"]
        out.write(f"Best learner exported to {paths['learner']}\n")
        if has_cells:
            result.cell_export_dir = paths["cell"]
            out.write(f"Best cell exported to {paths['cell']}\n")
    out.flush()
    return result


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
