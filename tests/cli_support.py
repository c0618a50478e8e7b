"""Helpers for tests that run the CLI as a user would."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OMNIGLOT_DIR = (REPO / ".." / "shared" / "data" / "omniglot").resolve()
FIXTURES = Path(__file__).resolve().parent / "fixtures"
METASEARCH = [sys.executable, "-m", "metasearch.cli"]

# Tiny settings: a few seconds per trial on two CPU cores.
TINY = [
    "--glyphs_classes=60",
    "--episodes_per_trial=8",
    "--eval_episodes=4",
    "--n_query=3",
    "--test_episodes=4",
    # The best trial is meta-tested as trained: the final phase's further training is
    # tested where it is the subject (tests/test_final.py adds --final_top_k=1).
    "--final_top_k=0",
    "--fix_hparams=conv_blocks/depth=3,conv_blocks/filters=32,conv_blocks/growth=1.0,train/learning_rate=0.002",
]


def run_cli(*args, env=None, timeout=300, cwd=None) -> subprocess.CompletedProcess:
    """Runs `metasearch ARGS` in a fresh process; returns the completed process."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [*METASEARCH, *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )


def pip_install_fixture(package: str, target: Path, build: Path) -> Path:
    """pip-installs the out-of-tree package `tests/fixtures/PACKAGE` into `target`; returns it.

    A copy is built (in `build`), so pip leaves nothing behind in the repository.
    """
    import shutil

    source = build / package
    shutil.copytree(FIXTURES / package, source)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert any(p.name.endswith(".dist-info") for p in target.iterdir())
    return target


def python_path_env(*folders) -> dict[str, str]:
    """The environment in which a fresh process also imports from `folders`."""
    existing = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([*map(str, folders), *([existing] if existing else [])])}


def kill_cli_when(args, stop, kill_signal=None, timeout=240) -> tuple[int, list[str]]:
    """Runs `metasearch ARGS` in a fresh process until `stop(lines so far)` holds, then kills it.

    Sends `kill_signal` (default SIGKILL) and waits; returns the exit status and the
    stdout lines read. Fails the test if the search ends first or takes over `timeout` s.
    """
    import signal
    import time

    import pytest

    process = subprocess.Popen(
        [*METASEARCH, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    seen: list[str] = []
    try:
        deadline = time.time() + timeout
        for line in process.stdout:
            seen.append(line)
            if stop(seen):
                break
            assert time.time() < deadline, "".join(seen)
        else:
            pytest.fail("the search ended before it could be killed:\n" + "".join(seen))
        os.kill(process.pid, kill_signal or signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, seen


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())


def run_cli_in_process(*args) -> subprocess.CompletedProcess:
    """Runs `metasearch ARGS` in this process, as its console script does.

    For refusals, short commands and searches whose subject is not the process itself: a
    fresh process costs TensorFlow's start (about 6 s each). `test_cli` checks with real
    processes that a refusal is still one line on stderr once TensorFlow's own start-up
    output is there; kills, signals, locks and environment variables need real processes
    (`run_cli`). Every flag is reset before and after, so runs do not leak.
    """
    from metasearch import cli
    from metasearch import flags as ms_flags

    argv = ["metasearch", *map(str, args)]
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    ms_flags.FLAGS.unparse_flags()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            cli.main(cli._parse_flags(argv))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        ms_flags.FLAGS.unparse_flags()
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


def random_search_with_final_phase(out: Path, seed: int, *flags) -> tuple[list[dict], dict]:
    """A tiny 4-trial random search with FLAGS and a final phase, in process.

    Returns its trial records in trial order and its final record; fails on a non-zero exit.
    """
    result = run_cli_in_process(
        *TINY,
        *flags,
        "--strategy=random",
        "--max_trials=4",
        f"--seed={seed}",
        "--final_top_k=1",
        "--final_episodes=4",
        f"--output_dir={out}",
        "--noprogress",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = read_json(out / "results.json")
    trials = sorted(results["trials"], key=lambda r: int(r["trial_id"]))
    return trials, results["final"]
