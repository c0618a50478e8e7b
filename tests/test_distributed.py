"""Distributed search on loopback: a chief serving the oracle and two workers, one output dir."""

import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from cli_support import METASEARCH, TINY, read_json

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Process:
    """A metasearch process in one distributed role whose output is collected as it comes."""

    def __init__(self, tuner_id: str, port: int, args: list[str]):
        env = dict(os.environ)
        env.update(
            KERASTUNER_TUNER_ID=tuner_id,
            KERASTUNER_ORACLE_IP="127.0.0.1",
            KERASTUNER_ORACLE_PORT=str(port),
        )
        self.tuner_id = tuner_id
        self.lines: list[str] = []
        self.popen = subprocess.Popen(
            [*METASEARCH, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.popen.stdout:
            self.lines.append(line)

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def output(self) -> str:
        return "".join(self.lines)

    def trials_started(self) -> list[str]:
        return [line.split()[1] for line in self.lines if line.startswith("trial ")]

    def kill(self):
        if self.popen.poll() is None:
            self.popen.kill()


def _args(out, max_trials, episodes, extra=()):
    base = [a for a in TINY if not a.startswith("--episodes_per_trial")]
    return [
        *base,
        f"--max_trials={max_trials}",
        f"--episodes_per_trial={episodes}",
        f"--output_dir={out}",
        "--worker_timeout=6",
        *extra,
    ]


def _run_all(processes, timeout=400):
    deadline = time.time() + timeout
    try:
        for process in processes:
            code = process.wait(timeout=max(1, deadline - time.time()))
            assert code == 0, f"{process.tuner_id} exited {code}:\n{process.output()[-3000:]}"
    finally:
        for process in processes:
            process.kill()


def test_workers_share_the_trials_and_a_killed_workers_trial_goes_to_the_other(tmp_path):
    # One search does both jobs (each distributed run starts three TensorFlow processes):
    # two workers draw trials from the chief at once, one is killed mid-trial, and still
    # every trial ends exactly once and the chief exports the best learner at the end.
    out = tmp_path / "out"
    port = _free_port()
    args = _args(out, max_trials=3, episodes=120)
    chief = Process("chief", port, args)
    victim = Process("worker0", port, args)
    survivor = Process("worker1", port, args)
    try:
        deadline = time.time() + 240
        # Kill the first worker once it is into its first trial (a progress bar line printed).
        while not any(line.strip().startswith("[") for line in victim.lines):
            assert victim.popen.poll() is None, victim.output()
            assert time.time() < deadline, victim.output()
            time.sleep(0.2)
        killed_trial = victim.trials_started()[0]
        os.kill(victim.popen.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        _run_all([chief, survivor])
    finally:
        for process in (victim, survivor, chief):
            process.kill()

    results = read_json(out / "results.json")
    assert [t["trial_id"] for t in results["trials"]] == ["0", "1", "2"]
    assert all(t["status"] == "COMPLETED" for t in results["trials"])
    # The survivor ran its own trials and took the victim's over; each trial ran once.
    assert sorted(survivor.trials_started()) == ["0", "1", "2"], survivor.output()
    for trial in ("0", "1", "2"):
        record = read_json(out / "keras_tuner" / f"trial_{trial}" / "metasearch_trial.json")
        assert record["worker"] == "worker1"
    assert f"trial {killed_trial} goes to the next worker" in chief.output()
    leaderboard = (out / "leaderboard.txt").read_text()
    assert sum(" COMPLETED " in line for line in leaderboard.splitlines()) == 3
    oracle = read_json(out / "keras_tuner" / "oracle.json")
    assert sorted(oracle["end_order"]) == ["0", "1", "2"]
    assert (out / "export" / "best_learner" / "saved_model.pb").is_file()
    assert "Final learner exported" in chief.output()
    # The worker running a trial writes its TensorBoard events; the killed worker's are
    # replaced when its trial starts again, so each trial keeps one HParams record.
    from metasearch import summaries

    for trial in ("0", "1", "2"):
        events = summaries.read_trial(str(out / "tensorboard" / f"trial_{trial}"))
        assert [pid for _, pid in events.writers] == [survivor.popen.pid], trial
        assert len(events.hparams) == 1 and events.statuses == ["STATUS_SUCCESS"], trial
    assert (out / "report.html").is_file()
