"""The HTML report of a run: one self-contained page that opens from disk.

`write_report(output_dir)` renders `RUN/report.html` from the run folder
alone, for a finished, a running or an interrupted run (a search writes it at
its end; `metasearch report --output_dir=RUN` renders it any time). The page
holds the leaderboard with 95% intervals and costs, the search progress, the
Pareto front (score against latency and against parameters), every trial's
learning curves (from its TensorBoard events, `metasearch.summaries`), the
best trial's cells, the flagfile that repeats the run and the versions.

Nothing is fetched: images are inlined as base64 PNG (matplotlib), the CSS is
in the page, there is no script, and a Content-Security-Policy forbids any
other source. `load_run` reads a run for this page and for
`metasearch.compare`; `page` is the shared skeleton.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import json
import math
import os
import tempfile
from collections.abc import Callable
from typing import Any

from metasearch import pareto, plots, summaries
from metasearch.config import searched_training_text
from metasearch.errors import UsageError
from metasearch.flops import format_flops
from metasearch.rundir import (
    EXPORT_DIR,
    FLAGS_FILE,
    REPORT_FILE,
    RunDir,
    best_trial,
    read_json,
    trial_score,
    write_atomic,
)
from metasearch.tasks import TaskKind

# Trial states of a trial still under way, or that was when its process died.
UNFINISHED = ("RUNNING", "INTERRUPTED", "IDLE")
# Small multiples of learning curves: at most this many trials get their own panel.
MAX_TRIAL_PANELS = 16
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1d2430; background: #f4f6f9; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 18px 22px 40px; }
h1 { font-size: 24px; margin: 4px 0 2px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #d5dbe3; padding-bottom: 4px; }
p.sub { margin: 0 0 10px; color: #4a5566; }
section { background: #fff; border: 1px solid #dde2ea; border-radius: 8px; padding: 6px 16px 14px;
          margin-top: 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0 4px; }
.card { background: #fff; border: 1px solid #dde2ea; border-radius: 8px; padding: 8px 14px;
        min-width: 150px; }
.card b { display: block; font-size: 18px; }
.card span { color: #5b6677; font-size: 12px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #e6e9ef; text-align: right;
         white-space: nowrap; vertical-align: top; }
th { background: #eef1f6; position: sticky; top: 0; }
td.text, th.text { text-align: left; white-space: normal; overflow-wrap: anywhere; min-width: 140px; }
tr:nth-child(even) td { background: #fafbfd; }
tr.best td { background: #eaf6ea; }
tr.interrupted td, tr.failed td { background: #fdf0e6; }
.badge { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 12px;
         font-weight: 600; }
.COMPLETED, .finished { background: #d9f2dc; color: #1e6b2a; }
.FAILED, .INVALID, .DAMAGED { background: #fbdcdc; color: #9b1c1c; }
.RUNNING, .running { background: #dbe9fb; color: #1f4f96; }
.INTERRUPTED, .interrupted, .stopped { background: #fde3c8; color: #8a4a00; }
.mark { font-weight: 700; color: #b3261e; }
img { max-width: 100%; height: auto; display: block; margin: 8px auto; }
pre { background: #f6f8fa; border: 1px solid #e1e4e8; border-radius: 6px; padding: 10px;
      overflow-x: auto; font-size: 12.5px; }
.note { color: #5b6677; font-size: 12.5px; }
footer { color: #6b7585; font-size: 12px; margin-top: 24px; }
"""


@dataclasses.dataclass
class RunView:
    """A run folder read for reporting: its configuration, trials and their events.

    Each record of `results` has a `state`: its keras-tuner status, or for a
    trial still marked RUNNING, `RUNNING` while the process writing its
    events lives (or cannot be checked: another machine) and `INTERRUPTED`
    once that process is gone; `state_note` says more. `state` of the run is
    `finished`, `running`, `interrupted` or `stopped`.
    """

    path: str
    config: dict[str, Any]
    results: list[dict[str, Any]]
    events: dict[str, summaries.TrialEvents]
    kind: TaskKind
    state: str
    state_note: str
    flags_text: str | None
    run_versions: dict[str, str] | None

    @property
    def name(self) -> str:
        return os.path.basename(os.path.abspath(self.path))

    @property
    def best(self) -> dict[str, Any] | None:
        return best_trial(self.results)


def load_run(path: str, what: str = "--output_dir") -> RunView:
    """Reads the run at `path` (UsageError naming `what` when it holds none)."""
    from metasearch.report import run_kind

    run_dir = RunDir(path)
    if not os.path.isdir(path):
        raise UsageError(f"{what}: no such folder {path}")
    if not run_dir.has_run():
        raise UsageError(f"{what}: {path} holds no metasearch run (no config.json)")
    try:
        config = run_dir.read_config()["config"]
    except (OSError, ValueError, KeyError) as error:
        raise UsageError(f"{what}: {run_dir.file('config.json')} is unreadable ({error})") from None
    results = [dict(record) for record in run_dir.trial_results()]
    events = {}
    for record in results:
        logdir = run_dir.tensorboard_dir(record["trial_id"])
        if os.path.isdir(logdir):
            events[record["trial_id"]] = summaries.read_trial(logdir)
        _set_state(record, events.get(record["trial_id"]))
    flags_path = run_dir.file(FLAGS_FILE)
    flags_text = None
    if os.path.exists(flags_path):
        with open(flags_path, encoding="utf-8") as handle:
            flags_text = handle.read()
    run_versions = None
    metadata = os.path.join(path, EXPORT_DIR, "best_learner", "assets", "metasearch.json")
    if os.path.exists(metadata):
        run_versions = read_json(metadata).get("versions")
    kind = run_kind(results)
    state, note = _run_state(results, config)
    return RunView(path, config, results, events, kind, state, note, flags_text, run_versions)


def _set_state(record: dict[str, Any], events: summaries.TrialEvents | None) -> None:
    status = record.get("status", "UNKNOWN")
    record["state"], record["state_note"] = status, ""
    if status != "RUNNING":  # finished (or set aside as damaged): as the run folder says
        return
    trained = ""
    if events is not None:
        curve = events.scalars.get("train/loss") or []
        if curve:
            trained = f"{curve[-1][0]} episodes trained"
    alive = [summaries.writer_alive(host, pid) for host, pid in (events.writers if events else [])]
    if alive and not any(a is not False for a in alive):
        record["state"] = "INTERRUPTED"
        record["state_note"] = "killed mid-trial" + (f" after {trained}" if trained else "")
        return
    age = summaries.seconds_since(events.last_write) if events and events.last_write else None
    parts = [trained] if trained else []
    if age is not None:
        parts.append(f"last news {_duration(age)} ago")
    if alive and all(a is None for a in alive):
        parts.append("written on another machine")
    record["state_note"] = ", ".join(parts)


def _run_state(results: list[dict[str, Any]], config: dict[str, Any]) -> tuple[str, str]:
    done = sum(1 for r in results if r["state"] not in UNFINISHED)
    total = config.get("max_trials")
    if total is None:  # a --time_budget search: as many trials as the budget held
        counted = f"{done} trials finished within --time_budget={config.get('time_budget')}"
    else:
        counted = f"{done} of {total} trials finished"
    running = [r["trial_id"] for r in results if r["state"] == "RUNNING"]
    interrupted = [r["trial_id"] for r in results if r["state"] == "INTERRUPTED"]
    if running:
        return "running", f"{counted}; trial {', '.join(running)} running"
    if interrupted:
        return "interrupted", (
            f"{counted}; trial {', '.join(interrupted)} was interrupted mid-trial "
            f"(rerun with --flagfile={os.path.join(config.get('output_dir', 'RUN'), FLAGS_FILE)} "
            "to resume)"
        )
    if total is None or done >= total:
        return "finished", counted
    return "stopped", counted


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------- page pieces


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: str) -> str:
    """A complete self-contained HTML page: inline CSS, no script, a strict CSP."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
        f"{body}\n</main>\n</body>\n</html>\n"
    )


def picture(draw: Callable[[str], Any], alt: str) -> str:
    """An `<img>` of the PNG that `draw(path)` writes, inlined as base64."""
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "figure.png")
        draw(path)
        with open(path, "rb") as handle:
            data = base64.b64encode(handle.read()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def table(headers: list[str], rows: list[tuple[str, list[str]]], text_columns=()) -> str:
    """An HTML table; cells are HTML already; `rows` are `(css class, cells)`."""
    head = "".join(
        f'<th class="text">{escape(h)}</th>' if i in text_columns else f"<th>{escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    lines = []
    for css, cells in rows:
        tds = "".join(
            f'<td class="text">{cell}</td>' if i in text_columns else f"<td>{cell}</td>"
            for i, cell in enumerate(cells)
        )
        lines.append(f'<tr class="{escape(css)}">{tds}</tr>')
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(lines)}</tbody></table></div>"
    )


def badge(state: str) -> str:
    return f'<span class="badge {escape(state)}">{escape(state)}</span>'


def score_text(kind: TaskKind, record: dict[str, Any], prefix: str = "val") -> str:
    value = record.get(f"{prefix}_{kind.metric}")
    if record.get("status") != "COMPLETED" or not isinstance(value, (int, float)):
        return "-"
    return kind.format_score(value, record.get(f"{prefix}_ci95")).strip()


def has_test_scores(results: list[dict[str, Any]], kind: TaskKind) -> bool:
    return any(score_text(kind, r, "test") != "-" for r in results)


def cost_texts(record: dict[str, Any]) -> list[str]:
    """Parameters, FLOPs and latency of a record as table cells."""
    params = f"{record['parameters']:,}" if record.get("parameters") is not None else "-"
    flops = format_flops(record["flops"]) if record.get("flops") else "-"
    latency = f"{record['latency_ms']:.1f} ms" if record.get("latency_ms") is not None else "-"
    return [params, flops, latency]


def learner_text(record: dict[str, Any]) -> str:
    """Architecture and learner settings, or the hyperparameters of an unfinished trial."""
    learner = ", ".join(f"{k}={v}" for k, v in sorted((record.get("plugin_config") or {}).items()))
    lr = (record.get("hyperparameters") or {}).get("train/learning_rate")
    if isinstance(lr, float):
        learner += (", " if learner else "") + f"lr={lr:.1e}"
    training = searched_training_text(record.get("hyperparameters") or {})
    if training:
        learner += (", " if learner else "") + training
    if record.get("architecture"):
        return str(record["architecture"]) + (f" / {learner}" if learner else "")
    values = record.get("hyperparameters") or {}
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()) if not k.startswith("tuner/"))


def ordered(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials best first (as the leaderboard), unscored ones after, by trial id."""
    return sorted(
        results,
        key=lambda r: (
            r["status"] != "COMPLETED",
            -(trial_score(r) if trial_score(r) is not None else -math.inf),
            r["trial_id"],
        ),
    )


# --------------------------------------------------------------------------- the report


def _title(run: RunView) -> str:
    config = run.config
    if config.get("evaluator") == "table":
        return f"{config['search_space']} scored from a table ({config.get('table_column')})"
    task = (
        f"{config.get('k_shot')}-shot regression"
        if run.kind.metric == "mse"
        else f"{config.get('n_way')}-way {config.get('k_shot')}-shot"
    )
    return (
        f"{config['plugin']} × {config['search_space']} on {config['dataset']}, {task}, "
        f"strategy {config['strategy']}"
    )


def _cards(run: RunView) -> str:
    best = run.best
    cards = [(badge(run.state), escape(run.state_note))]
    if best is not None:
        cards.append(
            (escape(score_text(run.kind, best)), f"best: trial {escape(best['trial_id'])}")
        )
        if score_text(run.kind, best, "test") != "-":
            cards.append((escape(score_text(run.kind, best, "test")), "best trial, meta-test"))
        params, flops, latency = cost_texts(best)
        if params != "-":
            cards.append((escape(params), "parameters of the best"))
        if latency != "-":
            cards.append((escape(latency), "its adaptation latency"))
    completed = sum(1 for r in run.results if r["state"] == "COMPLETED")
    cards.append((str(completed), f"completed of {len(run.results)} trials"))
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><b>{big}</b><span>{small}</span></div>' for big, small in cards
        )
        + "</div>"
    )


def _leaderboard(run: RunView) -> str:
    kind, results = run.kind, run.results
    marks = pareto.marks(results)
    tested = has_test_scores(results, kind)
    best = run.best
    headers = ["rank", "trial", "status", kind.column + " (95% CI)"]
    if tested:
        headers.append(kind.column.replace("val", "test") + " (95% CI)")
    headers += ["params", "FLOPs", "latency", "time", "Pareto", "architecture / learner"]
    rows = []
    for rank, record in enumerate(ordered(results), start=1):
        state = record["state"]
        cells = [
            str(rank),
            escape(record["trial_id"]),
            badge(state),
            escape(score_text(kind, record)),
        ]
        if tested:
            cells.append(escape(score_text(kind, record, "test")))
        cells += [escape(c) for c in cost_texts(record)]
        wall = record.get("wall_seconds")
        cells.append(f"{wall:.0f}s" if isinstance(wall, (int, float)) else "-")
        cells.append(f'<span class="mark">{escape(marks.get(record["trial_id"], ""))}</span>')
        what = escape(learner_text(record))
        if record.get("state_note"):
            what += f'<br><span class="note">{escape(record["state_note"])}</span>'
        if state != "COMPLETED" and record.get("error"):
            what += f'<br><span class="note">{escape(str(record["error"])[:300])}</span>'
        cells.append(what)
        css = (
            "best"
            if best is not None and record["trial_id"] == best["trial_id"]
            else {"INTERRUPTED": "interrupted", "FAILED": "failed", "DAMAGED": "failed"}.get(
                state, ""
            )
        )
        rows.append((css, cells))
    legend = (
        ""
        if not marks
        else (
            '<p class="note">Pareto: <span class="mark">L</span> no other trial is both better and '
            "faster (latency: adapting to and predicting one 5-way 1-shot task, 1 query per class, "
            'through the exported signature, median of 5 calls); <span class="mark">P</span> no '
            "other trial is both better and smaller (parameters).</p>"
        )
    )
    return table(headers, rows, text_columns=(len(headers) - 1,)) + legend


def _curves(run: RunView) -> list[dict[str, Any]]:
    metric = run.kind.metric
    best = run.best
    curves = []
    for record in run.results:
        events = run.events.get(record["trial_id"])
        if events is None:
            continue
        score = None
        value = record.get(f"val_{metric}")
        if record["state"] == "COMPLETED" and isinstance(value, (int, float)):
            score = (record.get("episodes") or 0, value, record.get("val_ci95"))
        label = f"trial {record['trial_id']}"
        state = "" if record["state"] == "COMPLETED" else f" ({record['state'].lower()})"
        shown = score_text(run.kind, record)
        highlight = best is not None and record["trial_id"] == best["trial_id"]
        curves.append(
            {
                "trial_id": record["trial_id"],
                "label": label + (" (best)" if highlight else ""),
                "title": f"{label}{state}" + (f": {shown}" if shown != "-" else ""),
                "loss": events.scalars.get("train/loss", []),
                "metric": events.scalars.get(f"train/{metric}", []),
                "score": score,
                "highlight": highlight,
                "state": record["state"],
                "goodness": trial_score(record) if record["state"] == "COMPLETED" else None,
            }
        )
    return curves


def _trial_number(trial_id: str) -> tuple[int, str]:
    return (int(trial_id) if trial_id.isdigit() else -1, trial_id)


def _learning_curves(run: RunView) -> str:
    if run.config.get("evaluator") == "table":
        return '<p class="note">Table-scored trials train nothing: no learning curves.</p>'
    curves = _curves(run)
    if not any(c["loss"] or c["score"] for c in curves):
        return '<p class="note">No learning curves: no trial has written TensorBoard events.</p>'
    metric = run.kind.metric
    parts = [
        picture(
            lambda path: plots.plot_learning_curves(curves, metric, path, "All trials"),
            "learning curves of every trial",
        )
    ]
    unfinished = [c for c in curves if c["state"] not in ("COMPLETED",)]
    scored = sorted((c for c in curves if c["goodness"] is not None), key=lambda c: -c["goodness"])
    chosen = (unfinished + scored)[:MAX_TRIAL_PANELS]
    chosen.sort(key=lambda c: _trial_number(c["trial_id"]))
    if chosen:
        parts.append(
            picture(
                lambda path: plots.plot_trial_curves(chosen, metric, path),
                "learning curve of each trial",
            )
        )
    if len(chosen) < len(curves):
        parts.append(
            f'<p class="note">Panels for {len(chosen)} of {len(curves)} trials (unfinished ones '
            "and the best); TensorBoard has them all.</p>"
        )
    return "".join(parts)


def _pareto_section(run: RunView) -> str:
    costs = {"latency_ms": "latency (ms, one 5-way 1-shot task)", "parameters": "parameters"}
    points = {
        cost: [(record, value) for record, value, _ in pareto.points(run.results, cost)]
        for cost in costs
    }
    if not any(points.values()):
        return '<p class="note">No completed trial has its costs measured yet.</p>'
    fronts = {cost: pareto.front(run.results, cost) for cost in costs}
    listed = "; ".join(
        f"{pareto.COSTS[cost][1]}: trial {', '.join(fronts[cost]) or '-'}" for cost in costs
    )
    return (
        picture(
            lambda path: plots.plot_pareto(points, fronts, costs, path, "Score against cost"),
            "Pareto front: score against latency and against parameters",
        )
        + f'<p class="note">Pareto-optimal, cheapest first: {escape(listed)}.</p>'
    )


def _cells(run: RunView) -> str:
    best = run.best
    if best is None or "architecture_config" not in best:
        return '<p class="note">No completed trial yet.</p>'
    from metasearch import registry

    config = run.config
    try:
        space_class = registry.load("search_space", config["search_space"], "search_space")
        space = space_class(config.get("space_options") or {})
        graphs = space.cell_graphs(best["architecture_config"])
    except Exception as error:  # noqa: BLE001 - an uninstalled plugin must not stop the report
        return f'<p class="note">Cannot draw the cells: {escape(error)}</p>'
    if not graphs:
        return (
            f'<p class="note">Search space {escape(config["search_space"])} has no cells; the '
            f"best architecture is {escape(best.get('architecture'))}.</p>"
        )
    parts = []
    for graph in graphs:
        title = f"trial {best['trial_id']}: {graph.name} cell"
        parts.append(
            picture(lambda path, g=graph, t=title: plots.draw_cell(g, path, title=t), title)
        )
    return "".join(parts)


def _versions(run: RunView) -> str:
    from metasearch.report import versions

    now = versions()
    names = sorted(set(now) | set(run.run_versions or {}))
    headers = ["package", "this report"] + (["the run's export"] if run.run_versions else [])
    rows = []
    for name in names:
        cells = [escape(name), escape(now.get(name, "-"))]
        if run.run_versions:
            cells.append(escape(run.run_versions.get(name, "-")))
        rows.append(("", cells))
    return table(headers, rows, text_columns=(0,))


def _board_title(run: RunView) -> str:
    config = run.config
    if config.get("evaluator") == "table":
        return f"Accuracy read from {config.get('table')} (column {config.get('table_column')})"
    return run.kind.leaderboard_title(config)


def render(run: RunView) -> str:
    """The report page of `run`."""
    config = run.config
    body = [
        f"<h1>metasearch report: {escape(run.name)}</h1>",
        f'<p class="sub">{escape(_title(run))}</p>',
        f'<p class="note">{escape(os.path.abspath(run.path))}</p>',
        _cards(run),
        "<section><h2>Leaderboard</h2>",
        f'<p class="note">{escape(_board_title(run))}</p>',
        _leaderboard(run),
        "</section><section><h2>Search progress</h2>",
        picture(
            lambda path: plots.plot_search_progress(run.results, path, title=_title(run)),
            "search progress",
        ),
        "</section><section><h2>Accuracy against cost: the Pareto front</h2>",
        _pareto_section(run),
        "</section><section><h2>Learning curves</h2>",
        _learning_curves(run),
        '<p class="note">Live curves and the HParams dashboard: '
        f"<code>tensorboard --logdir {escape(os.path.join(run.path, 'tensorboard'))}</code></p>",
        "</section><section><h2>Discovered cells</h2>",
        _cells(run),
        "</section><section><h2>Configuration</h2>",
        '<p class="note">The flagfile that repeats (or resumes) this run: '
        f"<code>metasearch --flagfile={escape(os.path.join(run.path, FLAGS_FILE))}</code></p>",
        f"<pre>{escape(run.flags_text or json.dumps(config, indent=2, sort_keys=True))}</pre>",
        "</section><section><h2>Versions</h2>",
        _versions(run),
        "</section>",
        f"<footer>Written {escape(datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S'))} by "
        "<code>metasearch report</code>. Self-contained: it opens from disk, with no server and "
        "no network.</footer>",
    ]
    return page(f"metasearch report: {run.name}", "\n".join(body))


def write_report(output_dir: str, path: str | None = None) -> str:
    """Renders the report of the run in `output_dir` to `path` (default `RUN/report.html`)."""
    run = load_run(output_dir)
    text = render(run)
    try:
        if path is None:
            return RunDir(output_dir).write_text(REPORT_FILE, text)
        return write_atomic(path, text)
    except OSError as error:
        where = "--output_dir" if path is None else "--html"
        raise UsageError(
            f"{where}: cannot write {path or RunDir(output_dir).file(REPORT_FILE)} "
            f"({error.strerror or error})"
        ) from None
