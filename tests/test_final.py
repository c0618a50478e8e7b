"""The final phase: the best candidate trains further, is meta-tested, and is what ships."""

import json

import numpy as np
import pytest

from tests.cli_support import TINY, read_json, run_cli_in_process

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _weights(path):
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files if key != "__names__"}


@pytest.mark.slow
def test_search_ends_with_a_retrained_meta_tested_learner(tmp_path):
    out = tmp_path / "run"
    args = [
        *TINY,
        "--final_top_k=1",
        f"--output_dir={out}",
        "--max_trials=2",
        "--final_episodes=6",
        "--test_episodes=12",
        "--noprogress",
    ]
    result = run_cli_in_process(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = read_json(out / "results.json")
    trials = {r["trial_id"]: r for r in results["trials"]}
    # The first trial is the default configuration (what --fix_hparams leaves free at defaults).
    assert trials["0"]["plugin_config"] == {"metric": "sqeuclidean", "embedding_dim": 0}
    final = results["final"]
    source = trials[final["source_trial"]]
    assert final["source_trial"] == results["best_trial"]
    assert final["episodes"] == source["episodes"] + 6 == 14
    assert final["final_episodes"] == 6
    assert final["test_episodes"] == 12
    test_classes = read_json(out / "dataset.json")["classes"]["test"]
    ways = [t["n_way"] for t in final["meta_test"]]
    assert ways == [5] + ([20] if test_classes >= 20 else [])
    assert all(0.0 <= t["mean"] <= 1.0 and t["ci95"] >= 0.0 for t in final["meta_test"])
    assert final["test_accuracy"] == final["meta_test"][0]["mean"]
    # The default trial was meta-tested on the same episodes: a paired comparison.
    assert final["default_trial"] == "0"
    assert trials["0"]["test_episodes"] == 12 and "test_accuracy" in trials["0"]
    comparison = final["comparisons"]["final_vs_default"]
    assert set(comparison) == {"difference", "ci95", "better"}
    # Further training changed the weights; the export is that learner, with its numbers.
    retrained = _weights(out / "final" / "learner.weights.npz")
    trained = _weights(
        out / "keras_tuner" / f"trial_{final['source_trial']}" / "learner.weights.npz"
    )
    assert retrained.keys() == trained.keys()
    assert any(not np.array_equal(retrained[k], trained[k]) for k in trained)
    metadata = json.loads(
        (out / "export" / "best_learner" / "assets" / "metasearch.json").read_text()
    )
    assert metadata["trial_id"] == f"final:{final['final_id']}"
    assert metadata["source_trial"] == final["source_trial"]
    assert metadata["metrics"]["test_accuracy"] == final["test_accuracy"]
    assert metadata["metrics"]["meta_training_episodes"] == 14
    board = (out / "leaderboard.txt").read_text()
    assert "Final learner: trial" in board and "Default configuration (trial 0" in board
    assert "final learner - default:" in board
    assert "Final learner exported to" in result.stdout

    # Run again: nothing new to search, and the final phase of the same candidates is kept.
    again = run_cli_in_process(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "the final phase of these candidates is done; kept as it is" in again.stdout
    assert read_json(out / "results.json")["final"]["final_id"] == final["final_id"]


@pytest.mark.slow
def test_final_top_k_zero_meta_tests_the_best_trial_as_trained(tmp_path):
    out = tmp_path / "run"
    result = run_cli_in_process(
        f"--output_dir={out}", "--max_trials=1", "--final_top_k=0", "--noprogress", *TINY
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = read_json(out / "results.json")["final"]
    assert final["final_episodes"] == 0 and final["candidates"] == []
    retrained = _weights(out / "final" / "learner.weights.npz")
    trained = _weights(out / "keras_tuner" / "trial_0" / "learner.weights.npz")
    assert all(np.array_equal(retrained[k], trained[k]) for k in trained)
    # The best trial is the default: its test score is the final learner's, exactly.
    assert final["trial_tests"]["0"]["mean"] == final["test_accuracy"]


@pytest.mark.slow
def test_a_time_budget_ends_the_search_and_feeds_the_final_phase(tmp_path):
    out = tmp_path / "run"
    # The learning rate is searched too: a space no budget of seconds exhausts.
    result = run_cli_in_process(
        *TINY,
        "--final_top_k=1",
        f"--output_dir={out}",
        "--time_budget=30s",
        "--final_share=0.3",
        "--episodes_per_trial=40",
        "--fix_hparams=conv_blocks/depth=3,conv_blocks/filters=32,conv_blocks/growth=1.0",
        "--noprogress",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "trials for 21s of a 30s budget" in result.stdout
    assert "search stopped early: --time_budget:" in result.stdout
    results = read_json(out / "results.json")
    statuses = [r["status"] for r in results["trials"]]
    assert statuses and set(statuses) == {"COMPLETED"}
    final = results["final"]
    assert final["final_train_seconds"] > 0 and final["final_episodes"] > 0
    assert "left of 30s, ends about" in result.stdout
    assert read_json(out / "budget.json")["spent_seconds"] > 0


@pytest.mark.parametrize(
    "flag, message",
    [
        (
            "--time_budget=soon",
            "--time_budget: 'soon' is not a duration (e.g. 90s, 30m, 2h, 1h30m)",
        ),
        ("--time_budget=0m", "--time_budget: '0m' is not a positive duration"),
    ],
)
def test_bad_budgets_are_one_line(tmp_path, flag, message):
    result = run_cli_in_process(f"--output_dir={tmp_path / 'run'}", flag)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"metasearch: error: {message}"]
    assert not (tmp_path / "run").exists()
