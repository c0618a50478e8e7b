"""Mirrored classes as new meta-training classes: `--class_augment`, searched by `--class_augments`."""

import re

import numpy as np
import pytest
import tensorflow as tf

from metasearch.api import ClassSet
from metasearch.components import Components
from metasearch.config import RunConfig
from metasearch.data import episodes
from metasearch.errors import UsageError
from metasearch.job import Job
from tests.cli_support import random_search_with_final_phase, run_cli_in_process

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _lopsided_class_set(num_classes=6, per_class=8, size=4):
    # Image j of class c holds c * 100 + j + 1 in its left column and 0 elsewhere:
    # a mirrored image has it in its right column instead.
    images = np.zeros((num_classes, per_class, size, size, 1), np.float32)
    images[:, :, :, 0, 0] = (np.arange(num_classes)[:, None] * 100 + np.arange(per_class) + 1)[
        :, :, None
    ]
    return ClassSet(images, [f"c{i}" for i in range(num_classes)])


def _classes_seen(episode, n_way):
    """Per label: (class, mirrored) read back from the support images (1 shot)."""
    seen = []
    for image in episode.support_images.numpy().reshape(n_way, -1, 4, 4)[:, 0]:
        left, right = image[:, 0], image[:, -1]
        mirrored = bool(right.any())
        value = int((right if mirrored else left)[0]) - 1
        # The whole image is one column: nothing else was moved or lost.
        assert np.count_nonzero(image) == 4 and not (left.any() and right.any())
        seen.append((value // 100, mirrored))
    return seen


def test_mirror_draws_each_class_or_its_mirror_image_as_a_class_of_its_own():
    class_set = _lopsided_class_set()
    stream = episodes.episode_dataset(
        class_set, 5, 1, 2, seed=1, stream=1, count=60, class_augment="mirror"
    )
    drawn = set()
    for episode in stream:
        seen = _classes_seen(episode, 5)
        assert len(set(seen)) == 5  # five different classes, a mirror counting as one
        # Queries show the same class, mirrored or not, as their label's support image.
        queries = episode.query_images.numpy().reshape(5, 2, 4, 4)
        for label, (_, mirrored) in enumerate(seen):
            assert all(bool(q[:, -1].any()) == mirrored for q in queries[label])
        drawn.update(seen)
    # Twelve classes drawn from: all six, each both ways.
    assert drawn == {(c, m) for c in range(6) for m in (False, True)}


def test_without_class_augment_no_image_is_mirrored_and_episodes_are_unchanged():
    class_set = _lopsided_class_set()
    plain = list(episodes.episode_dataset(class_set, 5, 1, 2, seed=1, stream=1, count=20))
    for episode in plain:
        assert not any(mirrored for _, mirrored in _classes_seen(episode, 5))
    # "none" is the stream from before --class_augment existed: the indices it documents.
    stream = episodes.EvaluationEpisodes(class_set, 5, 1, 2, seed=1, stream=1, count=20)
    support_rows, _ = stream.indices()
    for row, episode in zip(support_rows, plain):
        np.testing.assert_array_equal(stream.pool.images(tf.constant(row)), episode.support_images)


def test_an_unknown_class_augment_is_refused():
    with pytest.raises(ValueError, match="class_augment must be one of"):
        episodes.episode_dataset(_lopsided_class_set(), 5, 1, 2, 0, 1, class_augment="flip")


def test_the_class_augment_is_declared_only_when_searched():
    assert (
        "train/class_augment"
        not in Components("protonet", "conv_blocks", "glyphs").hyperparameters()
    )
    searched = Components(
        "protonet", "conv_blocks", "glyphs", class_augments=("none", "mirror")
    ).hyperparameters()
    assert list(searched["train/class_augment"].values) == ["none", "mirror"]
    assert searched["train/class_augment"].default == "none"
    searched = Components(
        "protonet",
        "conv_blocks",
        "glyphs",
        class_augments=("none", "mirror"),
        class_augment="mirror",
    ).hyperparameters()
    assert searched["train/class_augment"].default == "mirror"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"class_augment": "flip"}, "--class_augment=flip: must be one of none, mirror"),
        ({"class_augments": ("none", "flip")}, "--class_augments=none,flip: 'flip' is not one of"),
        (
            {"class_augments": ("mirror",)},
            "--class_augments=mirror: must include --class_augment=none",
        ),
        (
            {"class_augments": ("none", "mirror", "none")},
            "--class_augments=none,mirror,none: a value is listed twice",
        ),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(UsageError, match=message):
        RunConfig(**settings)


def test_a_bad_flag_is_one_line_and_writes_nothing(tmp_path):
    result = run_cli_in_process(f"--output_dir={tmp_path / 'run'}", "--class_augments=none,turn")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "metasearch: error: --class_augments=none,turn: 'turn' is not one of none, mirror"
    ]
    assert not (tmp_path / "run").exists()


def test_regression_data_sets_refuse_it(tmp_path):
    config = RunConfig(
        output_dir=str(tmp_path / "out"), dataset="sinusoid", plugin="maml", search_space="mlp"
    )
    for settings in ({"class_augment": "mirror"}, {"class_augments": ("none", "mirror")}):
        with pytest.raises(
            UsageError, match=r"--class_augment.*: applies only with a classification"
        ):
            Job(config.replace(**settings))
    assert not (tmp_path / "out" / "config.json").exists()


def test_the_job_draws_a_trials_training_episodes_at_its_class_augment(tmp_path, monkeypatch):
    asked = []
    original = episodes.episode_dataset

    def spy(*args, **kwargs):
        asked.append(kwargs.get("class_augment"))
        return original(*args, **kwargs)

    monkeypatch.setattr(episodes, "episode_dataset", spy)
    job = Job(RunConfig(output_dir=str(tmp_path / "out"), class_augments=("none", "mirror")))
    job.episode_stream(
        "train", 0, episodes.TRAIN_STREAM, training={"train_class_augment": "mirror"}
    )
    job.episode_stream("train", 0, episodes.TRAIN_STREAM)
    job.episode_stream("val", 0, episodes.VAL_STREAM)  # evaluation: never new classes
    assert asked == ["mirror", "none", "none"]


@pytest.mark.slow
def test_each_trial_and_the_final_learner_train_at_their_searched_class_augment(
    tmp_path, monkeypatch
):
    streams = []  # the class augment each training stream was asked for
    original = Job.episode_stream

    def spy(self, split, *args, training=None, **kwargs):
        if split == "train":
            streams.append((training or {}).get("train_class_augment"))
        return original(self, split, *args, training=training, **kwargs)

    monkeypatch.setattr(Job, "episode_stream", spy)
    out = tmp_path / "run"
    trials, final = random_search_with_final_phase(out, 1, "--class_augments=none,mirror")
    augments = [r["hyperparameters"]["train/class_augment"] for r in trials]
    assert augments[0] == "none"  # the default configuration first
    assert set(augments) == {"none", "mirror"}, augments  # this seed draws both
    source = next(r for r in trials if r["trial_id"] == final["source_trial"])
    # One training stream per trial, then the final phase's, each at its configuration's.
    assert streams == [*augments, source["hyperparameters"]["train/class_augment"]]
    leaderboard = (out / "leaderboard.txt").read_text()
    assert "no mirrored classes" in leaderboard
    assert re.search(r"(?<!no )mirrored classes", leaderboard)
    assert "--class_augments=none,mirror" in (out / "flags.txt").read_text()
