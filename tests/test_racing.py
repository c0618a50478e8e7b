"""Racing: clearly worse trials stop at a rung, paired over the same validation episodes."""

import json

import numpy as np
import pytest

from metasearch import racing
from tests.cli_support import TINY, read_json, run_cli_in_process


def _rival(trial_id, rung, scores):
    return {
        "trial_id": trial_id,
        "status": "COMPLETED",
        "racing": {"rungs": [{"rung": rung, "episodes": 10, "scores": list(scores)}]},
    }


def higher_is_better(score):
    return score


def test_rungs_are_distinct_steps_before_the_end():
    assert racing.rung_steps((0.111, 0.333), 90) == [10, 30]
    assert racing.rung_steps((0.1, 0.1001, 0.9), 10) == [1, 9]
    assert racing.rung_steps((0.5,), 1) == []


def test_time_rungs_are_distinct_seconds_before_the_end():
    assert racing.rung_seconds((0.333, 0.111), 90.0) == pytest.approx([9.99, 29.97])
    assert racing.rung_seconds((0.5, 0.5, 1.0), 10.0) == [5.0]


def test_a_verdict_at_a_time_rung_says_after_how_long():
    rivals = [_rival("3", 1, np.ones(20))]
    stopped = racing.verdict(1, 40, np.zeros(20), rivals, higher_is_better, seconds=9.6)
    assert stopped.stop and stopped.seconds == 9.6
    assert "than trial 3 at 10 s of training (40 episodes): -100.00" in stopped.describe()


def test_a_clearly_worse_trial_stops_and_a_close_one_goes_on():
    rng = np.random.default_rng(0)
    leader = rng.uniform(0.8, 1.0, 50)
    rivals = [_rival("0", 0, leader), _rival("1", 0, leader - 0.05)]
    worse = racing.verdict(0, 10, leader - 0.2, rivals, higher_is_better)
    assert worse.stop and worse.leader == "0"
    assert worse.difference == pytest.approx(-0.2) and worse.ci95 < 0.2
    noisy = leader + rng.normal(0, 0.05, 50) - 0.005
    close = racing.verdict(0, 10, noisy, rivals, higher_is_better)
    assert not close.stop and close.difference + close.ci95 >= 0
    assert "clearly worse than trial 0 at 10 episodes: -20.00" in worse.describe()


def test_no_rival_at_the_rung_or_other_episodes_never_stop_a_trial():
    scores = np.full(20, 0.1)
    assert not racing.verdict(0, 10, scores, [], higher_is_better).stop
    assert not racing.verdict(1, 10, scores, [_rival("0", 0, np.ones(20))], higher_is_better).stop
    assert not racing.verdict(0, 10, scores, [_rival("0", 0, np.ones(30))], higher_is_better).stop


def test_for_errors_lower_is_better():
    def negated(score):
        return -score

    rivals = [_rival("0", 0, np.full(20, 0.1))]
    assert racing.verdict(0, 10, np.full(20, 0.5), rivals, negated).stop  # MSE 0.5 vs 0.1
    assert not racing.verdict(0, 10, np.full(20, 0.05), rivals, negated).stop


@pytest.mark.slow
def test_a_raced_search_stops_a_clearly_worse_trial_and_keeps_its_weights(tmp_path):
    out = tmp_path / "run"
    args = [
        *TINY,
        f"--output_dir={out}",
        "--episodes_per_trial=18",
        "--racing=paired",
        "--racing_rungs=0.34",
        "--racing_episodes=6",
        "--final_top_k=0",
        "--noprogress",
    ]
    first = run_cli_in_process(*args, "--max_trials=1")
    assert first.returncode == 0, first.stderr[-3000:]
    record_path = out / "keras_tuner" / "trial_0" / "metasearch_trial.json"
    record = read_json(record_path)
    rungs = record["racing"]["rungs"]
    assert [r["rung"] for r in rungs] == [0] and len(rungs[0]["scores"]) == 6
    assert rungs[0]["episodes"] >= 6 and record["episodes"] == 18
    assert "stopped" not in record["racing"]
    # Trial 0 becomes a flawless leader at the rung: the next trial is clearly worse there.
    rungs[0]["scores"] = [1.0] * 6
    record_path.write_text(json.dumps(record))
    second = run_cli_in_process(*args, "--max_trials=2")
    assert second.returncode == 0, second.stderr[-3000:]
    trial = read_json(out / "keras_tuner" / "trial_1" / "metasearch_trial.json")
    stopped = trial["racing"]["stopped"]
    assert stopped["leader"] == "0" and stopped["rung"] == 0
    assert trial["status"] == "COMPLETED" and trial["episodes"] == stopped["episodes"] < 18
    assert trial["eval_episodes"] == 6
    assert (out / "keras_tuner" / "trial_1" / "learner.weights.npz").is_file()
    assert "trial 1 stops: clearly worse than trial 0" in second.stdout
    assert "raced out at" in (out / "leaderboard.txt").read_text()


@pytest.mark.slow
def test_trials_with_a_training_time_are_raced_after_equal_seconds(tmp_path):
    out = tmp_path / "run"
    result = run_cli_in_process(
        *TINY,
        f"--output_dir={out}",
        "--trial_time=3s",
        "--racing=paired",
        "--racing_rungs=0.5",
        "--racing_episodes=6",
        "--max_trials=2",
        "--final_top_k=0",
        "--noprogress",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 trials of 3s training" in result.stdout
    for trial_id in (0, 1):
        record = read_json(out / "keras_tuner" / f"trial_{trial_id}" / "metasearch_trial.json")
        assert record["status"] == "COMPLETED"
        # Both trials raced at 1.5 s of training, whatever episodes that held.
        rung = record["racing"]["rungs"][0]
        assert rung["rung"] == 0 and 1.5 <= rung["seconds"] < 3.0
        assert rung["episodes"] > 0
        if "stopped" in record["racing"]:
            # A trial raced out at the rung (clearly worse than the leader) trains no further.
            assert record["episodes"] == rung["episodes"]
        else:
            assert rung["episodes"] < record["episodes"]
            assert 3.0 <= record["seconds"]["training"] < 6.0
        assert record["episodes"] != 8  # not --episodes_per_trial
    config = read_json(out / "config.json")
    assert config["config"]["trial_time"] == config["identity"]["trial_time"] == "3s"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--trial_time=soon"], "--trial_time: 'soon' is not a duration"),
        (["--racing=paired", "--strategy=hyperband"], "--racing: hyperband stops trials early"),
        (["--racing=paired", "--racing_rungs=0.5,1.5"], "--racing_rungs: 1.5 is not a fraction"),
        (["--racing=paired", "--racing_rungs=half"], "--racing_rungs: 'half' is not a number"),
    ],
)
def test_bad_racing_settings_are_one_line(tmp_path, flags, message):
    result = run_cli_in_process(f"--output_dir={tmp_path / 'run'}", *flags)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "run").exists()
