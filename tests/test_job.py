"""Validation before anything is written: seeds, options, task-kind settings."""

import os

import pytest

from metasearch.config import RunConfig
from metasearch.errors import UsageError
from metasearch.job import Job, derived_seed, resolve_config


def test_derived_seeds_are_fixed_distinct_and_never_zero():
    seeds = [derived_seed(s, p) for s in range(50) for p in ("oracle", "trial 0")]
    assert all(0 < s < 2**31 - 1 for s in seeds)
    assert len(set(seeds)) == len(seeds)
    assert derived_seed(0, "oracle") == derived_seed(0, "oracle")


def test_component_options_are_completed_and_checked():
    config = resolve_config(RunConfig(strategy="evolution", strategy_options={"population": 30}))
    assert config.strategy_options == {"population": 30, "sample_size": 10}
    assert config.dataset_options == {"classes": 1200, "images_per_class": 20}
    with pytest.raises(UsageError, match="--strategy=evolution: unknown option"):
        resolve_config(RunConfig(strategy="evolution", strategy_options={"populaton": 30}))
    with pytest.raises(UsageError, match="--glyphs_classes: 'many' is not an integer"):
        resolve_config(RunConfig(dataset_options={"classes": "many"}))
    with pytest.raises(UsageError, match="--strategy: unknown strategy 'annealing'; known: "):
        resolve_config(RunConfig(strategy="annealing"))


def test_inner_optimizer_is_folded_into_the_fixed_hyperparameters():
    config = resolve_config(RunConfig(plugin="maml", inner_optimizer="learned"))
    assert config.fix_hparams == {"maml/inner_optimizer": "learned"}
    assert config.inner_optimizer is None


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"image_size": 40}, "--image_size: applies only with a classification data set"),
        ({"n_way": 10}, "--n_way: applies only with a classification data set"),
        ({"train_n_way": 20}, "--train_n_way: applies only with a classification data set"),
        ({"train_n_ways": (5, 10)}, "--train_n_ways: applies only with a classification data set"),
        (
            {"train_n_queries": (5, 15)},
            "--train_n_queries: applies only with a classification data set",
        ),
        ({"augment": "affine"}, "--augment: applies only with a classification data set"),
    ],
)
def test_classification_settings_are_refused_on_a_regression_data_set(tmp_path, setting, message):
    config = RunConfig(
        dataset="sinusoid",
        search_space="mlp",
        plugin="maml",
        output_dir=str(tmp_path / "out"),
        **setting,
    )
    with pytest.raises(UsageError, match=message):
        Job(config)
    assert not os.path.exists(tmp_path / "out" / "config.json")
    # At their defaults they are accepted (flagfiles of regression runs list them).
    Job(
        config.replace(
            image_size=28,
            n_way=5,
            train_n_way=5,
            train_n_ways=(),
            train_n_queries=(),
            augment="none",
        )
    )


def test_the_validation_episodes_are_drawn_with_the_data_once_for_every_trial(tmp_path):
    config = RunConfig(
        output_dir=str(tmp_path / "out"), dataset_options={"classes": 60}, eval_episodes=7
    )
    job = Job(config)
    validation = job.validation_episodes(7)
    assert validation._indices is not None  # drawn when the job loaded its data
    support, query = validation.indices()
    assert support.shape == (7, 5) and query.shape == (7, 5 * config.n_query)
    assert job.validation_episodes(7) is validation  # every trial scores these
    assert job.validation_episodes(3) is not validation  # racing's fewer episodes
