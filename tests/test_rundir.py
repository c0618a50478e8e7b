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
