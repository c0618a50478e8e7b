"""Searched meta-training episodes: `--train_n_ways` (`train/n_way`), `--train_n_queries` (`train/n_query`)."""

import json

import pytest

from metasearch.components import Components
from metasearch.config import RunConfig
from metasearch.errors import UsageError
from metasearch.job import Job
from tests.cli_support import random_search_with_final_phase, run_cli_in_process

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_the_way_and_queries_are_declared_only_when_they_are_searched():
    fixed = Components("protonet", "conv_blocks", "glyphs").hyperparameters()
    assert "train/n_way" not in fixed and "train/n_query" not in fixed
    searched = Components(
        "protonet",
        "conv_blocks",
        "glyphs",
        train_n_ways=(20, 40, 60),
        train_n_way=20,
        train_n_queries=(5, 15),
        n_query=15,
    ).hyperparameters()
    assert list(searched["train/n_way"].values) == [20, 40, 60]
    # The default configuration trains at --train_n_way and --n_query.
    assert searched["train/n_way"].default == 20
    assert list(searched["train/n_query"].values) == [5, 15]
    assert searched["train/n_query"].default == 15


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"train_n_ways": (10, 20)}, "--train_n_ways=10,20: must include --train_n_way=5"),
        ({"train_n_ways": (1, 5)}, "--train_n_ways=1,5: 1 is less than 2"),
        ({"train_n_ways": (5, 10, 5)}, "--train_n_ways=5,10,5: a value is listed twice"),
        ({"train_n_queries": (5, 10)}, "--train_n_queries=5,10: must include --n_query=15"),
        ({"train_n_queries": (0, 15)}, "--train_n_queries=0,15: 0 is less than 1"),
    ],
)
def test_bad_choices_are_refused(settings, message):
    with pytest.raises(UsageError, match=message):
        RunConfig(**settings)


def test_every_searched_way_must_fit_the_training_classes(tmp_path):
    config = RunConfig(
        output_dir=str(tmp_path / "out"),
        dataset_options={"classes": 60},
        train_n_ways=(5, 500),
    )
    with pytest.raises(UsageError, match="--train_n_ways=500: the meta-train class set of glyphs"):
        Job(config)
    # Glyph classes have 20 images: 1 support + 30 queries do not fit.
    config = config.replace(train_n_ways=(), train_n_queries=(15, 30))
    with pytest.raises(UsageError, match=r"--k_shot \+ --train_n_queries = 31: the meta-train"):
        Job(config)
    assert not (tmp_path / "out" / "config.json").exists()


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--train_n_ways=5,x", "--train_n_ways: 'x' is not a whole number"),
        ("--train_n_queries=3,many", "--train_n_queries: 'many' is not a whole number"),
        (
            "--train_n_ways=10,20",
            "--train_n_ways=10,20: must include --train_n_way=5 (the default configuration, "
            "the search's first trial, trains at it)",
        ),
    ],
)
def test_bad_flags_are_one_line_and_write_nothing(tmp_path, flag, message):
    result = run_cli_in_process(f"--output_dir={tmp_path / 'run'}", flag)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"metasearch: error: {message}"]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_each_trial_and_the_final_learner_train_at_their_searched_episodes(tmp_path, monkeypatch):
    streams = []  # ((way, queries) asked for, (way, queries) of the episodes yielded)
    original = Job.episode_stream

    def spy(self, split, seed, stream, count=None, start=0, training=None):
        episodes = original(self, split, seed, stream, count, start, training)
        if split == "train":
            way = episodes.element_spec.support_labels.shape[0]  # 1-shot
            queries = episodes.element_spec.query_labels.shape[0] // way
            asked = (training or {}).get("train_n_way"), (training or {}).get("train_n_query")
            streams.append((asked, (way, queries)))
        return episodes

    monkeypatch.setattr(Job, "episode_stream", spy)
    out = tmp_path / "run"
    trials, final = random_search_with_final_phase(
        out, 3, "--train_n_ways=5,10", "--train_n_queries=2,3"
    )
    episodes = [
        (r["hyperparameters"]["train/n_way"], r["hyperparameters"]["train/n_query"]) for r in trials
    ]
    assert episodes[0] == (5, 3)  # the default configuration first (--n_query=3)
    # This seed draws both ways and both query counts.
    assert {e[0] for e in episodes} == {5, 10} and {e[1] for e in episodes} == {2, 3}, episodes
    source = next(r for r in trials if r["trial_id"] == final["source_trial"])
    chosen = (source["hyperparameters"]["train/n_way"], source["hyperparameters"]["train/n_query"])
    # One training stream per trial, then the final phase's, each at its configuration's.
    assert streams == [(e, e) for e in episodes] + [(chosen, chosen)]
    metadata = json.loads(
        (out / "export" / "best_learner" / "assets" / "metasearch.json").read_text()
    )
    assert metadata["meta_training_task"]["n_way"] == chosen[0]
    assert metadata["meta_training_task"]["n_query"] == chosen[1]
    leaderboard = (out / "leaderboard.txt").read_text()
    for way, queries in episodes:
        assert f"{way}-way {queries}-query training" in leaderboard
    # The flagfile written next to the results repeats the search's choices.
    flagfile = (out / "flags.txt").read_text()
    assert "--train_n_ways=5,10" in flagfile and "--train_n_queries=2,3" in flagfile
