"""Faults a long search meets: a full disk, damaged files, failing trials, killed writes.

Each test damages a copy of one tiny finished run, checks the one line, the
exit status and that every intact trial and export is unchanged (by hash),
then runs the documented recovery command and checks that it finishes the
search and exports the best intact trial. Commands run in process
(`run_cli_in_process`); signals and two concurrent searches, which need real
processes, are in `test_interrupts.py`.
"""

import errno
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import TINY, read_json, run_cli_in_process

pytestmark = pytest.mark.xdist_group("faults")

FULL_DISK = "No space left on device"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    result = run_cli_in_process(*TINY, "--max_trials=2", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _copy(finished_run, where: Path) -> Path:
    copy = where / "copy"
    shutil.copytree(finished_run, copy)
    return copy


def _args(out, *more):
    return [*TINY, "--max_trials=2", f"--output_dir={out}", *more]


def _hashes(folder: Path, *parts: str) -> dict:
    files = [p for part in parts for p in sorted((folder / part).rglob("*")) if p.is_file()]
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _best(out: Path) -> str:
    return read_json(out / "results.json")["best_trial"]


def _other(out: Path) -> str:
    return next(
        t["trial_id"]
        for t in read_json(out / "results.json")["trials"]
        if t["trial_id"] != _best(out)
    )


def _one_line(result, exit_code: int, *fragments: str) -> str:
    assert result.returncode == exit_code, (result.returncode, result.stderr[-3000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("metasearch: error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _no_trial_running(out: Path) -> None:
    for path in (out / "keras_tuner").glob("trial_*/trial.json"):
        assert read_json(path)["status"] != "RUNNING", path
    assert read_json(out / "keras_tuner" / "oracle.json")["ongoing_trials"] == {}
    assert all(t["status"] != "RUNNING" for t in read_json(out / "results.json")["trials"])


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --------------------------------------------------------------------------- a full disk


@pytest.fixture(params=["tmpfs", "patched writer"])
def full_disk(request, tmp_path, monkeypatch):
    """`(folder on the full disk, free())`: the disk fills when weights are written."""
    if request.param == "patched writer":
        from metasearch import files

        original = files._write_bytes

        def writer(stream, data):
            if data[:2] == b"PK" and not free.done:  # a .npz: the weights
                raise OSError(errno.ENOSPC, FULL_DISK)
            original(stream, data)

        def free():
            free.done = True

        free.done = False
        monkeypatch.setattr(files, "_write_bytes", writer)
        yield tmp_path, free
        return
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)])
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    filler = disk / "filler"

    def free():
        filler.unlink()

    try:
        yield disk, free
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_a_full_disk_stops_the_search_in_one_line_and_loses_nothing(finished_run, full_disk):
    where, free = full_disk
    out = _copy(finished_run, where)
    kept = _hashes(out, "keras_tuner/trial_0", "keras_tuner/trial_1", "export")
    if (where / "copy").stat().st_dev != Path(finished_run).stat().st_dev:  # the tmpfs
        left = shutil.disk_usage(where).free
        (where / "filler").write_bytes(b"\0" * (left - 40 * 1024))  # the weights need more
    result = run_cli_in_process(*_args(out, "--max_trials=3"))
    line = _one_line(result, 4, f"cannot write {out / 'keras_tuner' / 'trial_2'}", FULL_DISK)
    assert "free on its file system" in line and "rerun the same command" in line
    assert _hashes(out, "keras_tuner/trial_0", "keras_tuner/trial_1", "export") == kept
    assert not list(out.rglob("*.tmp-*")), "a temporary file was left"
    assert read_json(out / "keras_tuner" / "trial_2" / "trial.json")["status"] == "IDLE"
    assert (out / ".metasearch.lock").read_text() == ""

    free()
    again = run_cli_in_process(*_args(out, "--max_trials=3"))
    assert again.returncode == 0, again.stderr[-3000:]
    trials = read_json(out / "results.json")["trials"]
    assert [t["status"] for t in trials] == ["COMPLETED"] * 3
    assert _hashes(out, "keras_tuner/trial_0", "keras_tuner/trial_1") == {
        k: v for k, v in kept.items() if k.startswith("keras_tuner")
    }
    exported = read_json(out / "export" / "best_learner" / "assets" / "metasearch.json")
    assert exported["source_trial"] == _best(out)  # the final phase's learner of the best


# --------------------------------------------------------------------------- damaged files


def test_a_damaged_oracle_state_is_rebuilt_from_the_trials(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    kept = _hashes(out, "keras_tuner/trial_0", "keras_tuner/trial_1", "export")
    _truncate(out / "keras_tuner" / "oracle.json")
    result = run_cli_in_process(*_args(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"note: {out / 'keras_tuner' / 'oracle.json'} is damaged (" in result.stdout
    assert "rebuilt from the intact trial records" in result.stdout
    assert _hashes(out, "keras_tuner/trial_0", "keras_tuner/trial_1", "export") == kept
    assert sorted(read_json(out / "keras_tuner" / "oracle.json")["end_order"]) == ["0", "1"]
    _no_trial_running(out)


@pytest.mark.parametrize("which", ["best", "other"])
@pytest.mark.parametrize("name", ["trial.json", "metasearch_trial.json"])
def test_a_damaged_trial_is_set_aside_and_the_intact_best_exported(
    finished_run, tmp_path, which, name
):
    out = _copy(finished_run, tmp_path)
    best, other = _best(out), _other(out)
    damaged = best if which == "best" else other
    intact = other if which == "best" else best
    kept_intact = _hashes(out, f"keras_tuner/trial_{intact}")
    kept_export = _hashes(out, "export/best_learner")
    path = out / "keras_tuner" / f"trial_{damaged}" / name
    _truncate(path)
    kept_damaged = _hashes(out, f"keras_tuner/trial_{damaged}")

    result = run_cli_in_process(*_args(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"note: trial {damaged} set aside: {path} is damaged (" in result.stdout
    statuses = {t["trial_id"]: t["status"] for t in read_json(out / "results.json")["trials"]}
    assert statuses == {damaged: "DAMAGED", intact: "COMPLETED"}
    assert _hashes(out, f"keras_tuner/trial_{intact}") == kept_intact
    assert _hashes(out, f"keras_tuner/trial_{damaged}") == kept_damaged, "the damaged files changed"
    metadata = read_json(out / "export" / "best_learner" / "assets" / "metasearch.json")
    assert metadata["source_trial"] == intact  # the final phase's learner of the intact best
    if which == "best":
        # The export of the trial now set aside is intact: kept under its trial's name.
        moved = {
            k.replace("trial_" + damaged + "_learner", "best_learner"): v
            for k, v in _hashes(out, f"export/trial_{damaged}_learner").items()
        }
        assert moved == kept_export
    else:
        assert _hashes(out, "export/best_learner") == kept_export
    exported = run_cli_in_process("export", f"--output_dir={out}")
    assert exported.returncode == 0, exported.stderr[-3000:]
    refused = run_cli_in_process("export", f"--output_dir={out}", f"--trial={damaged}")
    _one_line(refused, 2, f"--trial={damaged}: set aside: {path} is damaged")


def test_damaged_weights_of_the_best_trial_pass_the_export_to_the_next_best(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    best, other = _best(out), _other(out)
    weights = out / "keras_tuner" / f"trial_{best}" / "learner.weights.npz"
    _truncate(weights)
    refused = run_cli_in_process("export", f"--output_dir={out}", f"--trial={best}")
    _one_line(refused, 2, f"{weights} is damaged (")
    assert not (out / "export" / f"trial_{best}_learner").exists()
    # The final learner (its own weights) is intact: the search exports it again.
    shutil.rmtree(out / "export")
    result = run_cli_in_process(*_args(out))
    assert result.returncode == 0, result.stderr[-3000:]
    metadata = read_json(out / "export" / "best_learner" / "assets" / "metasearch.json")
    assert metadata["source_trial"] == best
    # Without the final learner and the export, the final phase starts from the next best trial.
    shutil.rmtree(out / "export")
    shutil.rmtree(out / "final")
    result = run_cli_in_process(*_args(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"note: trial {best} set aside: {weights} is damaged (" in result.stdout
    metadata = read_json(out / "export" / "best_learner" / "assets" / "metasearch.json")
    assert metadata["source_trial"] == other


def test_a_damaged_config_is_named_with_the_command_that_rebuilds_it(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    kept = _hashes(out, "keras_tuner", "export")
    _truncate(out / "config.json")
    flagfile = out / "flags.txt"
    refused = run_cli_in_process("export", f"--output_dir={out}")
    _one_line(refused, 2, f"{out / 'config.json'} is damaged (", f"--flagfile={flagfile}")
    other = run_cli_in_process(*_args(out, "--n_way=3"))
    _one_line(other, 2, f"{out / 'config.json'} is damaged (", "--n_way: 5 -> 3", str(flagfile))
    assert "--overwrite" not in other.stderr
    # flags.txt damaged too: the intact trial records decide.
    flags = flagfile.read_text()
    flagfile.write_text(flags[: len(flags) // 2])
    first = read_json(out / "results.json")["trials"][0]["hyperparameters"]["protonet/metric"]
    metric = "cosine" if first == "sqeuclidean" else "sqeuclidean"
    fixed = next(a for a in TINY if a.startswith("--fix_hparams")) + f",protonet/metric={metric}"
    args = [a for a in _args(out) if not a.startswith("--fix_hparams")] + [fixed]
    contradicted = run_cli_in_process(*args)
    _one_line(contradicted, 2, "flags.txt is damaged too", f"where this command fixes '{metric}'")
    flagfile.write_text(flags)
    assert _hashes(out, "keras_tuner", "export") == kept

    # The recovery: the run's own flags (the copy's flags.txt names the original folder).
    again = run_cli_in_process(f"--flagfile={flagfile}", f"--output_dir={out}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "was damaged" in again.stdout and "rebuilt from this command" in again.stdout
    assert read_json(out / "config.json")["config"]["n_way"] == 5
    assert _hashes(out, "keras_tuner/trial_0", "keras_tuner/trial_1", "export") == {
        k: v for k, v in kept.items() if "trial_" in k or k.startswith("export")
    }
    assert run_cli_in_process("export", f"--output_dir={out}").returncode == 0


def test_a_damaged_data_description_is_named_and_rebuilt_by_the_search(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    _truncate(out / "dataset.json")
    refused = run_cli_in_process("export", f"--output_dir={out}", "--trial=0")
    _one_line(refused, 2, f"{out / 'dataset.json'} is damaged (", "--flagfile=")
    again = run_cli_in_process(*_args(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert read_json(out / "dataset.json")["channels"] == 1


def test_a_killed_export_leaves_nothing_behind_and_its_stale_lock_is_taken_over(
    finished_run, tmp_path
):
    out = _copy(finished_run, tmp_path)
    kept = _hashes(out, "export/best_learner")
    staging = out / "export" / ".trial_0_learner.tmp-x1y2" / "model"
    staging.mkdir(parents=True)
    (staging / "saved_model.pb").write_bytes(b"half an export")
    (out / ".results.json.tmp-abc").write_text("{")
    # The killed export held the lock: its file names a process that is gone.
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    holder = {"host": socket.gethostname(), "pid": int(gone.stdout), "what": "export", "since": "x"}
    (out / ".metasearch.lock").write_text(json.dumps(holder))
    result = run_cli_in_process("export", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        f"took over the lock of {out}: its holder (metasearch export pid {holder['pid']}"
        in result.stdout
    )
    assert "cleared what killed writes left" in result.stdout
    assert not list(out.rglob("*.tmp-*"))
    assert _hashes(out, "export/best_learner") == kept


# --------------------------------------------------------------------------- honest exit codes


@pytest.fixture
def failing_trials(monkeypatch):
    from metasearch.tuner import FewShotTuner

    def broken(self, *args, **kwargs):
        raise TypeError("'float' object cannot be interpreted as an integer")

    monkeypatch.setattr(FewShotTuner, "_meta_train_and_score", broken)
    return monkeypatch


def test_a_search_whose_trials_all_fail_exits_3(failing_trials, tmp_path):
    out = tmp_path / "out"
    result = run_cli_in_process(*_args(out))
    _one_line(result, 3, "all 2 trials failed (last: TypeError: 'float' object", "leaderboard.txt")
    assert [t["status"] for t in read_json(out / "results.json")["trials"]] == ["FAILED"] * 2
    _no_trial_running(out)


def test_a_stop_by_consecutive_failures_exits_3_and_the_rerun_finishes(failing_trials, tmp_path):
    out = tmp_path / "out"
    result = run_cli_in_process(*_args(out, "--max_trials=5"))
    _one_line(result, 3, "stopped after 3 consecutive failed trials (last: TypeError")
    assert [t["status"] for t in read_json(out / "results.json")["trials"]] == ["FAILED"] * 3
    _no_trial_running(out)
    failed = _hashes(out, "keras_tuner/trial_0")

    failing_trials.undo()  # the cause is fixed; the same command goes on
    again = run_cli_in_process(*_args(out, "--max_trials=5"))
    assert again.returncode == 0, again.stderr[-3000:]
    statuses = [t["status"] for t in read_json(out / "results.json")["trials"]]
    assert statuses == ["FAILED"] * 3 + ["COMPLETED"] * 2
    assert _hashes(out, "keras_tuner/trial_0") == failed
    assert (out / "export" / "best_learner" / "saved_model.pb").is_file()


def test_a_fixed_hyperparameter_of_the_wrong_type_is_refused_before_anything_runs(tmp_path):
    args = [a for a in TINY if not a.startswith("--fix_hparams")]
    result = run_cli_in_process(
        *args, "--fix_hparams=conv_blocks/depth=3.0", f"--output_dir={tmp_path / 'o'}"
    )
    _one_line(result, 2, "--fix_hparams: conv_blocks/depth=3.0 is a number", "integer values")
    assert not (tmp_path / "o" / "config.json").exists()
