"""Seeing a search: TensorBoard events, costs and Pareto marks, the HTML report, compare.

One tiny search (module fixture, one xdist worker) feeds every test here but
the killed-run one, which needs its own search killed mid-trial.
"""

import json
import re
import shutil
import signal
from pathlib import Path

import pytest

from chromium_support import Browser, find_chromium
from cli_support import TINY, kill_cli_when, read_json, run_cli, run_cli_in_process

pytestmark = pytest.mark.xdist_group("insight")


def test_the_module_is_grouped_on_one_worker(request):
    if getattr(request.config.option, "loadgroup", False):
        assert request.node.nodeid.endswith("@insight"), request.node.nodeid


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("insight") / "out"
    result = run_cli(*TINY, "--max_trials=2", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def _trials(out: Path) -> list[dict]:
    return read_json(out / "results.json")["trials"]


# --------------------------------------------------------------------------- TensorBoard


def test_every_trial_has_its_curves_and_one_hparams_record(finished_run):
    from tensorboard.backend.event_processing import event_accumulator

    from metasearch import summaries

    out, _ = finished_run
    trials = _trials(out)
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == [
        f"trial_{t['trial_id']}" for t in trials
    ]
    for trial in trials:
        logdir = out / "tensorboard" / f"trial_{trial['trial_id']}"
        events = summaries.read_trial(str(logdir))
        # Curves: a point per chunk of steps (here every step: 8 episodes), at episodes trained.
        for tag in ("train/loss", "train/accuracy", "train/episodes_per_second"):
            points = events.scalars[tag]
            assert len(points) >= 4, (tag, points)
            steps = [step for step, _ in points]
            assert steps == sorted(steps) and steps[-1] == trial["episodes"] == 8
        assert all(value > 0 for _, value in events.scalars["train/episodes_per_second"])
        # Validation scores and costs at the last episode, equal to the trial's record.
        assert events.final("val/accuracy") == pytest.approx(trial["val_accuracy"], abs=1e-6)
        assert events.final("val/ci95") == pytest.approx(trial["val_ci95"], abs=1e-6)
        assert events.final("cost/parameters") == trial["parameters"]
        assert events.final("cost/latency_ms") == pytest.approx(trial["latency_ms"], rel=1e-5)
        assert "test/accuracy" not in events.scalars  # no meta-test scores in this run
        # One HParams record: the searched hyperparameters, and the trial's end.
        assert len(events.hparams) == 1
        record = events.hparams[0]
        assert record["protonet/metric"] == trial["hyperparameters"]["protonet/metric"]
        assert record["conv_blocks/depth"] == 3 and record["architecture"].startswith("conv3-32")
        assert events.statuses == ["STATUS_SUCCESS"]
        # TensorBoard's own loader sees the same: scalars, and the HParams plugin's data.
        loader = event_accumulator.EventAccumulator(str(logdir), size_guidance={"tensors": 0})
        loader.Reload()
        assert {"train/loss", "val/accuracy", "cost/latency_ms"} <= set(loader.Tags()["tensors"])
        hparams = loader.PluginTagToContent("hparams")
        assert set(hparams) == {summaries.SESSION_START_TAG, summaries.SESSION_END_TAG}


def test_an_hparams_record_carries_meta_test_metrics_when_the_record_has_them(tmp_path):
    # Meta-test scores come from another part of the search; a record with them is made here.
    from metasearch import summaries
    from metasearch.rundir import RunDir
    from metasearch.training import Chunk

    board = summaries.TrialBoard(RunDir(str(tmp_path)), "7", "accuracy")
    board.start({"conv_blocks/depth": 3, "protonet/metric": "cosine"}, "conv3-32")
    board.curve(episodes_before=100)(Chunk(20, 20, 0.9, 0.6, 15.0))
    record = {
        "status": "COMPLETED",
        "episodes": 120,
        "val_accuracy": 0.8,
        "val_ci95": 0.02,
        "test_accuracy": 0.77,
        "test_ci95": 0.03,
        "parameters": 1000,
        "latency_ms": 2.5,
    }
    board.finish(record)
    events = summaries.read_trial(str(tmp_path / "tensorboard" / "trial_7"))
    assert events.hparams == [
        {"conv_blocks/depth": 3.0, "protonet/metric": "cosine", "architecture": "conv3-32"}
    ]
    assert events.scalars["train/loss"] == [(120, pytest.approx(0.9))]
    assert events.scalars["test/accuracy"] == [(120, pytest.approx(0.77))]
    assert events.final("test/ci95") == pytest.approx(0.03)
    assert events.final("val/accuracy") == pytest.approx(0.8)
    # A trial started again replaces its folder: still one record.
    again = summaries.TrialBoard(RunDir(str(tmp_path)), "7", "accuracy")
    again.start({"conv_blocks/depth": 4})
    again.finish({"status": "FAILED", "error": "DivergedError: loss became nan"})
    events = summaries.read_trial(str(tmp_path / "tensorboard" / "trial_7"))
    assert len(events.hparams) == 1 and events.statuses == ["STATUS_FAILURE"]


# --------------------------------------------------------------------------- costs and Pareto


def test_each_trial_records_its_costs_and_the_leaderboard_marks_the_pareto_front(finished_run):
    from metasearch import pareto

    out, result = finished_run
    trials = _trials(out)
    for trial in trials:
        assert trial["parameters"] > 0 and trial["flops"] > 0
        assert 0 < trial["latency_ms"] < 5000
        assert trial["latency_task"] == "5-way 1-shot, 1 query per class"
        # Where the trial's wall time went, every part counted once.
        parts = trial["seconds"]
        assert set(parts) == {
            "setup",
            "tracing",
            "training",
            "callbacks",
            "validation",
            "latency",
            "saving",
            "other",
        }
        assert all(value >= 0 for value in parts.values())
        assert sum(parts.values()) == pytest.approx(trial["wall_seconds"], abs=0.05)
        assert parts["training"] == pytest.approx(trial["train_seconds"])
        assert trial["train_share"] == pytest.approx(parts["training"] / trial["wall_seconds"])
    board = (out / "leaderboard.txt").read_text()
    header = board.splitlines()[1]
    assert "latency" in header and "pareto" in header
    # The marks are the Pareto fronts, worked out here by brute force.
    for cost, mark in (("latency_ms", "L"), ("parameters", "P")):
        optimal = {
            t["trial_id"]
            for t in trials
            if not any(
                o[cost] <= t[cost]
                and o["val_accuracy"] >= t["val_accuracy"]
                and (o[cost] < t[cost] or o["val_accuracy"] > t["val_accuracy"])
                for o in trials
            )
        }
        assert set(pareto.front(trials, cost)) == optimal
        for line in board.splitlines()[3 : 3 + len(trials)]:
            trial_id = line.split()[1]
            marks = line[header.index("pareto") :].split("  ")[0].split()
            assert (mark in marks) == (trial_id in optimal), line
    assert "pareto: L = " in board
    assert "Report written to" in result.stdout


# --------------------------------------------------------------------------- the HTML report


def _leaderboard_rows(text: str) -> list[str]:
    board = text.split("<h2>Leaderboard</h2>", 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr class=\"[^\"]*\">(.*?)</tr>", board.split("<tbody>", 1)[1])


def test_the_report_opens_in_headless_chromium_with_no_error_and_no_request(finished_run, tmp_path):
    out, _ = finished_run
    assert (out / "report.html").is_file()  # the search wrote one at its end
    page_path = tmp_path / "report.html"
    result = run_cli_in_process("report", f"--output_dir={out}", f"--html={page_path}")
    assert result.returncode == 0, result.stderr
    assert str(page_path) in result.stdout
    text = page_path.read_text()
    assert 'http-equiv="Content-Security-Policy"' in text and "<script" not in text
    assert not re.search(r"(src|href)=\"(?!data:)", text), "the page refers to another file"
    trials = _trials(out)

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium not found (CI installs Debian's chromium: see .ci/run)")
    browser = Browser(chromium)
    try:
        page = browser.open(page_path.as_uri(), width=1366)
        facts = page.evaluate(
            """(() => {
              const board = [...document.querySelectorAll('h2')]
                .find(h => h.textContent === 'Leaderboard').parentElement;
              return {
                rows: [...board.querySelectorAll('tbody tr')].map(r => r.innerText),
                images: [...document.images].map(i => ({ok: i.complete && i.naturalWidth > 0,
                                                         width: i.getBoundingClientRect().width,
                                                         alt: i.alt})),
                pageWidth: document.documentElement.scrollWidth,
                viewport: window.innerWidth,
              };
            })()"""
        )
        errors = page.console_errors()
        requests = page.requests()
        screenshot = page.screenshot(tmp_path / "report.png")
        print(f"screenshot of the report: {screenshot}")

        # The same checks see a page that does misbehave (so passing them means something).
        bad = tmp_path / "bad.html"
        bad.write_text(
            '<!DOCTYPE html><img src="http://127.0.0.1:9/pixel.png">'
            '<script>console.error("broken")</script>'
        )
        probe = browser.open(bad.as_uri())
        assert any("broken" in e for e in probe.console_errors())
        assert "http://127.0.0.1:9/pixel.png" in probe.requests()

        compare_page = tmp_path / "compare.html"
        compared = run_cli_in_process("compare", out, out, f"--html={compare_page}")
        assert compared.returncode == 0, compared.stderr
        comparison = browser.open(compare_page.as_uri())
        assert comparison.console_errors() == []
        assert all(
            u.startswith("data:") or u == compare_page.as_uri() for u in comparison.requests()
        )
        assert comparison.evaluate("document.images.length") >= 1
    finally:
        browser.close()

    assert errors == [], errors
    # No request but the page itself and its inlined images.
    assert [u for u in requests if not u.startswith("data:")] == [page_path.as_uri()], requests
    assert len(facts["rows"]) == len(trials)
    for trial in trials:
        assert any(row.split("\t")[1].strip() == trial["trial_id"] for row in facts["rows"])
    assert sum("COMPLETED" in row for row in facts["rows"]) == len(trials)
    assert len(facts["images"]) >= 4  # progress, Pareto front, curves, per-trial curves
    assert all(image["ok"] and image["width"] > 300 for image in facts["images"]), facts
    # Readable at a laptop's width: nothing wider than the window.
    assert facts["pageWidth"] <= facts["viewport"] == 1366
    assert screenshot.stat().st_size > 10_000


def test_report_and_compare_refuse_what_is_not_a_run(finished_run, tmp_path):
    out, _ = finished_run
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli_in_process("report", f"--output_dir={empty}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--output_dir" in result.stderr and "no metasearch run" in result.stderr
    result = run_cli_in_process("compare", out, tmp_path / "missing")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "compare: no such folder" in result.stderr
    result = run_cli_in_process("compare")
    assert result.returncode == 2 and "name the run folders" in result.stderr


def test_compare_puts_the_best_learners_of_runs_side_by_side(finished_run, tmp_path):
    out, _ = finished_run
    other = tmp_path / "other"
    shutil.copytree(out, other)
    result = run_cli_in_process("compare", out, other)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Comparison of the best learners (protonet on glyphs")
    assert "score (95% CI)" in lines[1] and "latency" in lines[1]
    rows = lines[3:]
    assert [row.split()[0] for row in rows] == [str(out), str(other)]
    best = read_json(out / "results.json")["best_trial"]
    assert all(f"trial {best}" in row and "protonet" in row for row in rows)


def test_report_shows_meta_test_scores_when_trials_have_them(finished_run, tmp_path):
    from metasearch import html_report, report

    out, _ = finished_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    trial = _trials(out)[0]
    record_path = run / "keras_tuner" / f"trial_{trial['trial_id']}" / "metasearch_trial.json"
    record = json.loads(record_path.read_text())
    record.update(test_accuracy=0.875, test_ci95=0.0125)
    record_path.write_text(json.dumps(record))
    view = html_report.load_run(str(run))
    text = html_report.render(view)
    assert "test accuracy (95% CI)" in text and "87.50 ±  1.25%" in text
    board = report.leaderboard(view.results, view.config)
    assert "test accuracy" in board.splitlines()[1] and "87.50 ±  1.25%" in board


# --------------------------------------------------------------------------- a killed run


@pytest.mark.slow
def test_the_report_of_a_run_killed_mid_trial_marks_the_interrupted_trial(tmp_path):
    from metasearch import summaries

    out = tmp_path / "out"
    args = [a for a in TINY if not a.startswith("--episodes_per_trial")]
    args += ["--max_trials=2", "--episodes_per_trial=60", f"--output_dir={out}"]

    def second_trial_a_quarter_in(seen):
        # Two progress lines of the second trial: curves written, the trial not finished.
        second = [i for i, line in enumerate(seen) if line.startswith("trial 1 (2 of 2)")]
        return bool(second) and sum(line.strip().startswith("[") for line in seen[second[0] :]) == 2

    returncode, _ = kill_cli_when(args, second_trial_a_quarter_in)
    assert returncode == -signal.SIGKILL
    partial = summaries.read_trial(str(out / "tensorboard" / "trial_1"))
    assert partial.scalars["train/loss"] and len(partial.hparams) == 1 and not partial.statuses

    result = run_cli_in_process("report", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr
    text = (out / "report.html").read_text()
    rows = _leaderboard_rows(text)
    assert len(rows) == 2
    completed = [row for row in rows if "badge COMPLETED" in row]
    interrupted = [row for row in rows if "badge INTERRUPTED" in row]
    assert len(completed) == 1 and len(interrupted) == 1, rows
    assert "<td>1</td>" in interrupted[0] and "killed mid-trial after" in interrupted[0]
    assert 'class="interrupted"' in text
    assert "badge interrupted" in text and "1 of 2 trials finished" in text
