"""metasearch: architecture and metric search for few-shot learners.

The Python API (no flags are read or defined; TensorFlow starts at the first
call, not at import)::

    import metasearch

    config = metasearch.RunConfig(output_dir="runs/notebook", max_trials=2)
    result = metasearch.search(config)          # a SearchResult
    print(result.leaderboard, result.export_dir)
    run = metasearch.load_run("runs/notebook")  # read a run back
    learner, task = run.rebuild(run.trial("best"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from metasearch.config import RunConfig

if TYPE_CHECKING:
    from metasearch.controller import SearchResult
    from metasearch.rundir import FinishedRun

__version__ = "0.1.0"
__all__ = ["RunConfig", "search", "load_run", "__version__"]


def search(config: RunConfig, out: TextIO | None = None) -> SearchResult:
    """Runs (or resumes) the search `config` describes; returns its `SearchResult`.

    Progress and the leaderboard are written to `out` (default: standard
    output); bad input raises `metasearch.errors.UsageError`.
    """
    import sys

    from metasearch import controller

    return controller.search(config, out=out or sys.stdout)


def load_run(output_dir: str) -> FinishedRun:
    """The run in `output_dir` read back (`FinishedRun`): config, trials, rebuilt learners."""
    from metasearch import controller

    return controller.load_run(output_dir)
