"""`metasearch compare RUN1 RUN2 ...`: several runs' best learners side by side.

One row per run: what it searched (plugin, search space, data set, strategy),
how far it got, and its best trial's score with its 95% interval (and the
meta-test score when there is one), parameters, FLOPs and adaptation
latency. `table` is the text printed on stdout; `render` an HTML page with
the same table, the best score so far against trial number for every run
and each run's Pareto front, self-contained like the run report
(`metasearch.html_report`).
"""

from __future__ import annotations

from typing import Any

from metasearch import html_report, pareto, plots
from metasearch.errors import UsageError
from metasearch.html_report import RunView, escape

COLUMNS = (
    "run",
    "plugin",
    "search space",
    "dataset",
    "strategy",
    "trials",
    "state",
    "best",
    "score (95% CI)",
    "test (95% CI)",
    "params",
    "FLOPs",
    "latency",
    "best architecture / learner",
)


def load_runs(paths: list[str]) -> list[RunView]:
    """The runs at `paths` (UsageError naming the first folder holding no run)."""
    if not paths:
        raise UsageError("compare: name the run folders to compare (metasearch compare RUN1 RUN2)")
    return [html_report.load_run(path, what="compare") for path in paths]


def summary(run: RunView) -> dict[str, str]:
    """A run's row: column name -> text."""
    config, best = run.config, run.best
    done = sum(1 for r in run.results if r["state"] == "COMPLETED")
    row = {
        "run": run.path,
        "plugin": str(config.get("plugin")) if config.get("evaluator") != "table" else "(table)",
        "search space": str(config.get("search_space")),
        "dataset": str(config.get("dataset")) if config.get("evaluator") != "table" else "-",
        "strategy": str(config.get("strategy")),
        "trials": f"{done}/{config.get('max_trials') or len(run.results)}",
        "state": run.state,
        "best": "-",
        "score (95% CI)": "-",
        "test (95% CI)": "-",
        "params": "-",
        "FLOPs": "-",
        "latency": "-",
        "best architecture / learner": "-",
    }
    if best is not None:
        params, flops, latency = html_report.cost_texts(best)
        row.update(
            {
                "best": f"trial {best['trial_id']}",
                "score (95% CI)": html_report.score_text(run.kind, best),
                "test (95% CI)": html_report.score_text(run.kind, best, "test"),
                "params": params,
                "FLOPs": flops,
                "latency": latency,
                "best architecture / learner": html_report.learner_text(best),
            }
        )
    return row


def _shown_columns(rows: list[dict[str, str]]) -> list[str]:
    # The test column only when some run has meta-test scores.
    return [c for c in COLUMNS if c != "test (95% CI)" or any(r[c] != "-" for r in rows)]


def table(runs: list[RunView]) -> str:
    """The runs side by side as a plain-text table (one row per run)."""
    rows = [summary(run) for run in runs]
    columns = _shown_columns(rows)
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    last = columns[-1]

    def line(values: dict[str, str]) -> str:
        cells = [values[c] if c == last else values[c].ljust(widths[c]) for c in columns]
        return "  ".join(cells).rstrip()

    header = line({c: c for c in columns})
    scores = {run.kind.leaderboard_title(run.config) for run in runs if run.best is not None}
    title = "Comparison of the best learners" + (
        f" ({next(iter(scores)).removeprefix('Leaderboard: ')})" if len(scores) == 1 else ""
    )
    return "\n".join([title, header, "-" * len(header), *(line(r) for r in rows)]) + "\n"


def render(runs: list[RunView]) -> str:
    """The comparison as a self-contained HTML page."""
    rows = [summary(run) for run in runs]
    # What each run searched goes in one column, so that the table fits a laptop's width.
    merged = ("plugin", "search space", "dataset", "strategy")
    columns = ["run", "searched", *(c for c in _shown_columns(rows)[1:] if c not in merged)]
    for row in rows:
        row["searched"] = (
            f"{row['plugin']} × {row['search space']} on {row['dataset']}, {row['strategy']}"
        )
    cells = [("", [escape(r[c]) for c in columns]) for r in rows]
    body = [
        "<h1>metasearch: runs compared</h1>",
        f'<p class="sub">{len(runs)} runs, each by its best trial</p>',
        "<section><h2>Best learners</h2>",
        html_report.table(columns, cells, text_columns=(0, 1, len(columns) - 1)),
        "</section>",
    ]
    kinds = {run.kind.metric for run in runs}
    if len(kinds) == 1:
        labelled = [{"label": run.name, "records": run.results} for run in runs]
        _label_uniquely(labelled, runs)
        body += [
            "<section><h2>Best score so far</h2>",
            html_report.picture(
                lambda path: plots.plot_run_comparison(labelled, path, "Best score so far"),
                "best score so far of every run",
            ),
            "</section>",
        ]
        fronts = []
        for run, labels in zip(runs, labelled):
            for cost, (_, words) in pareto.COSTS.items():
                ids = pareto.front(run.results, cost)
                fronts.append(
                    ("", [escape(labels["label"]), escape(words), escape(", ".join(ids) or "-")])
                )
        body += [
            "<section><h2>Pareto-optimal trials</h2>",
            html_report.table(
                ["run", "cost", "trials, cheapest first"], fronts, text_columns=(0, 2)
            ),
            "</section>",
        ]
    else:
        body.append('<p class="note">The runs score different kinds of task; no common plot.</p>')
    return html_report.page("metasearch: runs compared", "\n".join(body))


def _label_uniquely(labelled: list[dict[str, Any]], runs: list[RunView]) -> None:
    names = [entry["label"] for entry in labelled]
    for entry, run in zip(labelled, runs):
        if names.count(entry["label"]) > 1:
            entry["label"] = run.path
