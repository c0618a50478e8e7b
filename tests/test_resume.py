"""A search killed with SIGKILL mid-trial resumes: finished trials kept, none counted twice."""

import signal

import pytest

from cli_support import TINY, kill_cli_when, read_json, run_cli

pytestmark = pytest.mark.slow


def test_sigkill_mid_trial_then_rerun_finishes_without_double_counting(tmp_path):
    out = tmp_path / "out"
    args = [a for a in TINY if not a.startswith("--episodes_per_trial")]
    # Long enough trials to be killed mid-way (progress every 8 episodes), and no longer.
    args += ["--max_trials=2", "--episodes_per_trial=160", f"--output_dir={out}"]

    def second_trial_under_way(seen):
        # The first progress line of the second trial: it is running, 8 of 160 episodes in.
        return (
            len(seen) >= 2
            and seen[-2].startswith("trial 1 (2 of 2)")
            and seen[-1].strip().startswith("[")
        )

    returncode, _ = kill_cli_when(args, second_trial_under_way)
    assert returncode == -signal.SIGKILL

    first_record = (out / "keras_tuner" / "trial_0" / "metasearch_trial.json").read_bytes()
    assert not (out / "keras_tuner" / "trial_1" / "metasearch_trial.json").exists()

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming after 1 finished trials" in again.stdout
    assert "trial 0 (1 of 2)" not in again.stdout, "the finished trial ran again"
    results = read_json(out / "results.json")
    ids = [t["trial_id"] for t in results["trials"]]
    assert ids == ["0", "1"]
    assert all(t["status"] == "COMPLETED" for t in results["trials"])
    # The trial finished before the kill is kept exactly as it was.
    assert (out / "keras_tuner" / "trial_0" / "metasearch_trial.json").read_bytes() == first_record
    assert (out / "export" / "best_learner" / "saved_model.pb").is_file()
    oracle = read_json(out / "keras_tuner" / "oracle.json")
    assert sorted(oracle["end_order"]) == ["0", "1"]
    assert len(set(oracle["end_order"])) == 2
    # The trial run again replaced its TensorBoard folder: one HParams record, one ending.
    from metasearch import summaries

    resumed = summaries.read_trial(str(out / "tensorboard" / "trial_1"))
    assert len(resumed.hparams) == 1 and resumed.statuses == ["STATUS_SUCCESS"]


def test_sigkill_mid_trial_resumes_the_trial_from_its_checkpoint(tmp_path):
    import re

    from metasearch import summaries

    out = tmp_path / "out"
    total = 600
    args = [a for a in TINY if not a.startswith("--episodes_per_trial")]
    args += [
        "--max_trials=1",
        f"--episodes_per_trial={total}",
        "--checkpoint_seconds=1",
        "--final_top_k=0",
        "--test_episodes=10",
        f"--output_dir={out}",
    ]
    checkpoint = out / "keras_tuner" / "trial_0" / "checkpoint.npz"
    progress = re.compile(r"\] (\d+)/(\d+) steps")

    def halfway_and_checkpointed(seen):
        # Progress lines come every quarter of the trial (stdout is not a terminal).
        match = progress.search(seen[-1])
        return bool(match) and int(match.group(1)) >= total // 2 and checkpoint.exists()

    returncode, seen = kill_cli_when(args, halfway_and_checkpointed)
    assert returncode == -signal.SIGKILL
    assert not (out / "keras_tuner" / "trial_0" / "metasearch_trial.json").exists()

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    note = re.search(r"trial 0 resumes from its checkpoint at episode (\d+) of (\d+)", again.stdout)
    assert note, again.stdout
    resumed_at = int(note.group(1))
    assert 0 < resumed_at < total and int(note.group(2)) == total
    (trial,) = read_json(out / "results.json")["trials"]
    assert trial["status"] == "COMPLETED"
    assert trial["episodes"] == total and trial["resumed_from_episode"] == resumed_at
    assert not checkpoint.exists(), "a finished trial keeps no checkpoint"
    # The rerun trained only the episodes left (one per step): its progress bar and its
    # TensorBoard curve start after the checkpoint and end at the requested total.
    left = total - resumed_at
    bars = [m.groups() for m in map(progress.search, again.stdout.splitlines()) if m]
    assert bars and bars[-1] == (str(left), str(left)), again.stdout
    steps = [
        step
        for step, _ in summaries.read_trial(str(out / "tensorboard" / "trial_0")).scalars[
            "train/loss"
        ]
    ]
    assert min(steps) > resumed_at and max(steps) == total


def test_sigkill_mid_trial_with_a_training_time_resumes_from_its_checkpoint_seconds(tmp_path):
    import re

    out = tmp_path / "out"
    args = [
        *TINY,
        "--max_trials=1",
        "--trial_time=12s",
        "--checkpoint_seconds=1",
        "--final_top_k=0",
        "--test_episodes=10",
        f"--output_dir={out}",
    ]
    checkpoint = out / "keras_tuner" / "trial_0" / "checkpoint.npz"
    progress = re.compile(r"\] (\d+) steps, (\d+)/12 s")

    def halfway_and_checkpointed(seen):
        match = progress.search(seen[-1])
        return bool(match) and int(match.group(2)) >= 6 and checkpoint.exists()

    returncode, _ = kill_cli_when(args, halfway_and_checkpointed)
    assert returncode == -signal.SIGKILL
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    note = re.search(
        r"trial 0 resumes from its checkpoint at episode (\d+) after (\d+) s", again.stdout
    )
    assert note, again.stdout
    resumed_at, after = int(note.group(1)), int(note.group(2))
    assert resumed_at > 0 and 1 <= after < 12  # the last checkpoint before the kill
    (trial,) = read_json(out / "results.json")["trials"]
    assert trial["status"] == "COMPLETED" and trial["resumed_from_episode"] == resumed_at
    assert trial["episodes"] > resumed_at
    # The rerun trained only the seconds left of the 12.
    assert 12 - after - 1 <= trial["seconds"]["training"] < 12 - after + 3
    assert trial["train_seconds"] >= 12
