"""A plugin from another package, installed with pip, runs with no edit to metasearch."""

import os
import shutil
import subprocess
import sys

import pytest

from cli_support import FIXTURES, TINY, pip_install_fixture, python_path_env, read_json, run_cli

# One worker runs the module, so the pip install fixture runs once, not once per worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("third_party_plugin")]


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """pip-installs tests/fixtures/toy_plugin into a private folder; returns it."""
    return pip_install_fixture(
        "toy_plugin", tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("build")
    )


def _env(plugin_path):
    return python_path_env(plugin_path)


def test_installed_plugin_runs_through_the_cli(plugin_path, tmp_path):
    out = tmp_path / "out"
    result = run_cli(
        *TINY,
        "--plugin=toy_centroid",
        "--max_trials=1",
        f"--output_dir={out}",
        env=_env(plugin_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = read_json(out / "results.json")
    assert results["trials"][0]["status"] == "COMPLETED"
    assert results["trials"][0]["plugin"] == "toy_centroid"
    assert "toy_centroid/scale" in results["trials"][0]["hyperparameters"]
    assert (out / "export" / "best_learner" / "saved_model.pb").is_file()


def test_unknown_plugin_lists_third_party_names_too(plugin_path, tmp_path):
    result = run_cli(
        *TINY, "--plugin=nope", f"--output_dir={tmp_path / 'o'}", env=_env(plugin_path)
    )
    assert result.returncode == 2
    assert "toy_centroid" in result.stderr and "protonet" in result.stderr


def test_nan_and_raising_trials_fail_and_the_search_goes_on(plugin_path, tmp_path):
    out = tmp_path / "out"
    result = run_cli(
        *TINY,
        "--plugin=toy_flaky",
        "--strategy=grid",
        "--max_trials=3",
        f"--output_dir={out}",
        env=_env(plugin_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = read_json(out / "results.json")["trials"]
    assert len(trials) == 3
    by_mode = {t["hyperparameters"]["toy_flaky/mode"]: t for t in trials}
    assert set(by_mode) == {"ok", "nan", "raise"}
    assert by_mode["ok"]["status"] == "COMPLETED"
    assert by_mode["nan"]["status"] == "FAILED" and "nan" in by_mode["nan"]["error"]
    assert by_mode["raise"]["status"] == "FAILED" and "asked to fail" in by_mode["raise"]["error"]
    # keras-tuner recorded the failures itself (FailedTrialError), not just our files.
    for mode in ("nan", "raise"):
        trial_json = read_json(
            out / "keras_tuner" / f"trial_{by_mode[mode]['trial_id']}" / "trial.json"
        )
        assert trial_json["status"] == "FAILED"
    board = (out / "leaderboard.txt").read_text()
    assert board.count("FAILED") == 2
    assert read_json(out / "results.json")["best_trial"] == by_mode["ok"]["trial_id"]


def test_conformance_suite_runs_the_third_party_plugin_too(plugin_path):
    tests_dir = FIXTURES.parent
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tests_dir / "test_conformance.py"),
            "-k",
            "toy_centroid",
            "--rootdir",
            str(tests_dir.parent),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **_env(plugin_path)},
        cwd=tests_dir.parent,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    # The suite's seven classification checks (colour episodes and pooled evaluation
    # included); no regression check.
    assert "7 passed, 1 skipped" in result.stdout, result.stdout[-1000:]


def test_the_packages_own_conformance_suite_passes_against_the_installed_package(
    plugin_path, tmp_path
):
    # The package's tests/ (metasearch.testing's suite on its learner), copied out
    # of its source tree, so `toy_metasearch_plugin` can only come from the install.
    tests = tmp_path / "tests"
    shutil.copytree(FIXTURES / "toy_plugin" / "tests", tests)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **_env(plugin_path)},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    # The six cheap checks pass (colour episodes and pooled evaluation included); no
    # regression check to run.
    assert "6 passed, 1 skipped" in result.stdout, result.stdout[-1000:]
