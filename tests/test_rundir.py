"""The run folder: atomic writes and weights saved and loaded by variable name."""

import os

import numpy as np
import pytest

from metasearch.errors import UsageError
from metasearch.rundir import RunDir, load_weights, save_weights, write_atomic


def test_atomic_write_leaves_no_temporary_file_and_replaces_the_old(tmp_path):
    path = tmp_path / "deep" / "file.json"
    write_atomic(str(path), "one")
    write_atomic(str(path), b"two")
    assert path.read_text() == "two"
    assert os.listdir(path.parent) == ["file.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "file.txt"
    write_atomic(str(path), "intact")

    def broken_replace(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomic(str(path), "half")
    monkeypatch.undo()
    assert path.read_text() == "intact"
    assert os.listdir(tmp_path) == ["file.txt"]


def _variables(names_and_shapes):
    import keras

    layer = keras.layers.Layer(name="learner")
    return [
        layer.add_weight(name=name, shape=shape, initializer="zeros")
        for name, shape in names_and_shapes
    ]


def test_weights_are_matched_by_name_not_by_position(tmp_path):
    path = str(tmp_path / "w.npz")
    saved = _variables([("a", (2,)), ("b", (3,))])
    saved[0].assign([1.0, 2.0])
    saved[1].assign([3.0, 4.0, 5.0])
    save_weights(saved, path)
    # The same variables in another order get their own values back.
    loaded = list(reversed(_variables([("a", (2,)), ("b", (3,))])))
    load_weights(loaded, path)
    np.testing.assert_array_equal(loaded[1].numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(loaded[0].numpy(), [3.0, 4.0, 5.0])


def test_a_name_given_twice_is_matched_by_its_order(tmp_path):
    path = str(tmp_path / "w.npz")
    saved = _variables([("a", (2,)), ("a", (2,)), ("b", (1,))])
    for index, variable in enumerate(saved):
        variable.assign(np.full(variable.shape, index, np.float32))
    save_weights(saved, path)
    loaded = _variables([("a", (2,)), ("b", (1,)), ("a", (2,))])
    load_weights(loaded, path)
    assert [float(v.numpy()[0]) for v in loaded] == [0.0, 2.0, 1.0]
    with pytest.raises(UsageError, match="missing: learner/c; unexpected: learner/a#1"):
        load_weights(_variables([("a", (2,)), ("b", (1,))]) + _variables([("c", (2,))]), path)


@pytest.mark.parametrize(
    "other, message",
    [
        ([("a", (2,)), ("c", (3,))], r"missing: learner/c; unexpected: learner/b"),
        ([("a", (2,)), ("b", (4,))], r"weight learner/b has shape \(3,\), the learner's \(4,\)"),
        ([("a", (2,))], r"unexpected: learner/b"),
    ],
)
def test_weights_of_another_learner_are_refused_naming_the_file(tmp_path, other, message):
    path = str(tmp_path / "w.npz")
    save_weights(_variables([("a", (2,)), ("b", (3,))]), path)
    with pytest.raises(UsageError, match=message) as error:
        load_weights(_variables(other), path)
    assert str(error.value).startswith(path)


def test_layout_paths(tmp_path):
    run = RunDir(str(tmp_path))
    assert run.weights_path("03") == str(
        tmp_path / "keras_tuner" / "trial_03" / "learner.weights.npz"
    )
    run.write_json("results.json", {"b": np.float32(0.5), "a": 1})
    assert (tmp_path / "results.json").read_text() == '{\n  "a": 1,\n  "b": 0.5\n}\n'


# --------------------------------------------------------------------------- faults


def test_a_full_disk_is_one_storage_error_naming_the_path_and_the_free_space(tmp_path, monkeypatch):
    import errno

    from metasearch import files
    from metasearch.errors import StorageError

    path = tmp_path / "trial_1" / "learner.weights.npz"
    write_atomic(str(path), b"intact")

    def full(stream, data):
        stream.write(data[:3])  # a part reaches the disk before it fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_write_bytes", full)
    with pytest.raises(StorageError) as error:
        write_atomic(str(path), b"the new weights")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"cannot write {path}: No space left on device (")
    assert " free on its file system)" in message and "rerun the same command" in message
    assert error.value.errno == errno.ENOSPC and error.value.exit_code == 4
    assert path.read_bytes() == b"intact"
    assert os.listdir(path.parent) == ["learner.weights.npz"]


def test_files_get_the_permissions_open_gives(tmp_path):
    path = tmp_path / "results.json"
    write_atomic(str(path), "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_damaged_weights_are_named_not_a_traceback(tmp_path):
    from metasearch.errors import DamagedFileError

    path = str(tmp_path / "w.npz")
    save_weights(_variables([("a", (200,))]), path)
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)
    with pytest.raises(DamagedFileError) as error:
        load_weights(_variables([("a", (200,))]), path)
    assert str(error.value).startswith(f"{path} is damaged (")


def _trial_files(project, trial_id, status="COMPLETED", record=True):
    import json

    folder = project / f"trial_{trial_id}"
    folder.mkdir(parents=True)
    trial = {"trial_id": trial_id, "status": status, "hyperparameters": {"values": {"a": 1}}}
    (folder / "trial.json").write_text(json.dumps(trial))
    if record:
        (folder / "metasearch_trial.json").write_text(
            json.dumps(
                {
                    "val_accuracy": 0.5,
                    "architecture_config": {},
                    "plugin_config": {},
                    "status": status,
                }
            )
        )
    return folder


@pytest.mark.parametrize(
    "damage, fragment",
    [
        ("trial.json", "trial.json is damaged (JSONDecodeError"),
        ("metasearch_trial.json", "metasearch_trial.json is damaged (JSONDecodeError"),
        ("no record", "metasearch_trial.json is damaged (missing, though the trial completed)"),
    ],
)
def test_a_damaged_trial_is_set_aside_and_the_others_stay(tmp_path, damage, fragment):
    project = tmp_path / "keras_tuner"
    _trial_files(project, "0")
    folder = _trial_files(project, "1", record=damage != "no record")
    if damage != "no record":
        (folder / damage).write_text((folder / damage).read_text()[:20])
    before = {p: p.read_bytes() for p in folder.iterdir()}
    results = RunDir(str(tmp_path)).trial_results()
    assert [(r["trial_id"], r["status"]) for r in results] == [("0", "COMPLETED"), ("1", "DAMAGED")]
    assert results[1]["error"].startswith("set aside: ") and fragment in results[1]["error"]
    assert RunDir(str(tmp_path)).damaged_trials() == {"1": results[1]["error"]}
    assert {p: p.read_bytes() for p in folder.iterdir()} == before, "a damaged file was changed"


def test_debris_of_killed_writes_is_cleared_and_a_replaced_export_put_back(tmp_path):
    run = RunDir(str(tmp_path))
    (tmp_path / "keras_tuner" / "trial_0").mkdir(parents=True)
    (tmp_path / "keras_tuner" / "trial_0" / ".learner.weights.npz.tmp-abc").write_bytes(b"half")
    (tmp_path / ".results.json.tmp-x1").write_text("{")
    (tmp_path / "results.json").write_text("{}")
    staging = tmp_path / "export" / ".best_learner.tmp-q" / "model"
    staging.mkdir(parents=True)
    (staging / "saved_model.pb").write_bytes(b"half")
    # A replacement killed between its two renames: the old export is aside, none in place.
    (tmp_path / "export" / "trial_1_learner.old-1234abcd").mkdir()
    (tmp_path / "export" / "trial_1_learner.old-1234abcd" / "saved_model.pb").write_bytes(b"ok")
    # A replacement killed after both renames: the old one is left over.
    (tmp_path / "export" / "best_learner").mkdir()
    (tmp_path / "export" / "best_learner.old-99").mkdir()
    notes = run.clean_debris()
    assert len(notes) == 1 and notes[0].startswith(f"cleared what killed writes left in {tmp_path}")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        "best_learner",
        "trial_1_learner",
    ]
    assert (tmp_path / "export" / "trial_1_learner" / "saved_model.pb").read_bytes() == b"ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "keras_tuner", "results.json"]
    assert not list((tmp_path / "keras_tuner" / "trial_0").iterdir())
    assert run.clean_debris() == []


# --------------------------------------------------------------------------- the lock

HOLDER = """
import fcntl, json, os, socket, sys, time
handle = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(handle, fcntl.LOCK_EX)
os.write(handle, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "what": "search",
                             "since": "2030-01-01T00:00:00"}).encode())
print("locked", flush=True)
time.sleep(120)
"""


def test_the_lock_refuses_a_second_writer_naming_it_and_takes_over_a_dead_ones(tmp_path):
    import socket
    import subprocess
    import sys

    from metasearch.errors import RunLockedError
    from metasearch.rundir import RunLock

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / RunLock.FILE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError) as refused:
            with RunLock(str(tmp_path)):
                pass
        message = str(refused.value)
        assert message.startswith(f"--output_dir: {tmp_path} is in use by metasearch search ")
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert refused.value.exit_code == 2
    finally:
        holder.kill()
        holder.wait()
    # Killed: the kernel released the lock; the file still names the dead holder.
    with RunLock(str(tmp_path)) as lock:
        assert lock.acquired
        assert lock.notes == [
            f"took over the lock of {tmp_path}: its holder (metasearch search pid {holder.pid} "
            f"on host {socket.gethostname()}, since 2030-01-01T00:00:00) is no longer running"
        ]
        with RunLock(str(tmp_path), "export") as nested:  # the same process may nest
            assert not nested.acquired
    # Released cleanly: the next one takes it without a word.
    with RunLock(str(tmp_path)) as lock:
        assert lock.notes == []
