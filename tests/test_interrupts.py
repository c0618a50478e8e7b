"""Ctrl-C and SIGTERM stop a search at a clean point; one writer per run folder.

The end-to-end test runs a real search process (signals and the lock need
one): a second search into its folder is refused naming it, Ctrl-C stops it
with one line and exit status 130, nothing finished is touched and no
record is left RUNNING, and rerunning the same command finishes the search.
"""

import hashlib
import os
import signal
import socket
import subprocess
import time

import pytest

from cli_support import METASEARCH, TINY, read_json, run_cli_in_process
from metasearch import interrupts


def test_a_signal_outside_interruptible_code_waits_for_a_clean_point():
    # What SIGINT did before: Python's handler, or ignored when the suite runs as a
    # background job of a non-interactive shell.
    before = signal.getsignal(signal.SIGINT)
    with interrupts.watch():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # delivered, noted, nothing raised
        assert interrupts.received() == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
    assert interrupts.exit_code() == 130
    assert signal.getsignal(signal.SIGINT) is before


def test_interruptible_code_is_interrupted_at_once_and_sigterm_counts_too():
    with interrupts.watch():
        with pytest.raises(KeyboardInterrupt), interrupts.interruptible():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            pytest.fail("not interrupted")
    assert interrupts.exit_code() == 143
    # Without watch() nothing is deferred: Python's own handling applies.
    interrupts.check()


def _hashes(folder) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_a_second_search_is_refused_and_ctrl_c_stops_the_first_cleanly(tmp_path):
    out = tmp_path / "out"
    args = [a for a in TINY if not a.startswith("--episodes_per_trial")]
    # Trials long enough to be interrupted mid-way (progress every quarter).
    args += ["--max_trials=2", "--episodes_per_trial=400", f"--output_dir={out}"]
    first = subprocess.Popen(
        [*METASEARCH, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen = []
    try:
        deadline = time.time() + 240
        for line in first.stdout:
            seen.append(line)
            assert time.time() < deadline, "".join(seen)
            if line.startswith("trial 0 (1 of 2)"):
                # The first search holds the folder: a second one is refused, naming it.
                second = run_cli_in_process(*args)
                assert second.returncode == 2, second.stderr
                lines = second.stderr.strip().splitlines()
                assert len(lines) == 1 and lines[0].startswith("metasearch: error: --output_dir:")
                assert f"pid {first.pid} on host {socket.gethostname()}" in lines[0]
                exporting = run_cli_in_process("export", f"--output_dir={out}")
                assert exporting.returncode == 2 and "is in use by" in exporting.stderr
            if (
                len(seen) >= 2
                and seen[-2].startswith("trial 1 (2 of 2)")
                and line.strip().startswith("[")
            ):
                break  # trial 1 is training
        else:
            pytest.fail("search ended before the second trial trained:\n" + "".join(seen))
        finished = _hashes(out / "keras_tuner" / "trial_0")
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines() == [
        "metasearch: error: stopped after 1 trials; rerun the same command to resume"
    ]
    assert _hashes(out / "keras_tuner" / "trial_0") == finished
    statuses = {t["trial_id"]: t["status"] for t in read_json(out / "results.json")["trials"]}
    assert statuses == {"0": "COMPLETED", "1": "IDLE"}
    assert read_json(out / "keras_tuner" / "trial_1" / "trial.json")["status"] == "IDLE"
    oracle = read_json(out / "keras_tuner" / "oracle.json")
    assert oracle["ongoing_trials"] == {} and oracle["retry_queue"] == ["1"]
    assert not list(out.rglob("*.tmp-*"))
    assert (out / ".metasearch.lock").read_text() == "", "the lock was not released"

    again = run_cli_in_process(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming after 1 finished trials" in again.stdout
    assert "trial 0 (1 of 2)" not in again.stdout and "trial 1 (2 of 2)" in again.stdout
    trials = read_json(out / "results.json")["trials"]
    assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"]
    assert _hashes(out / "keras_tuner" / "trial_0") == finished
    assert (out / "export" / "best_learner" / "saved_model.pb").is_file()
