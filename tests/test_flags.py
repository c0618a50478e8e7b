"""Flag resolution that is not covered by running the CLI."""

import pytest

from metasearch import flags
from metasearch.components import with_inner_optimizer
from metasearch.config import RunConfig, flagfile_text
from metasearch.errors import UsageError


def test_inner_optimizer_pins_the_plugins_hyperparameter():
    assert with_inner_optimizer({}, "maml", None) == {}
    fixed = with_inner_optimizer({"maml/inner_steps": 3}, "maml", "learned")
    assert fixed == {"maml/inner_steps": 3, "maml/inner_optimizer": "learned"}
    assert with_inner_optimizer({}, "anil", "sgd") == {"anil/inner_optimizer": "sgd"}


@pytest.mark.parametrize("plugin", ["protonet", "metasgd"])
def test_inner_optimizer_is_refused_where_there_is_no_choice(plugin):
    with pytest.raises(UsageError, match=f"--inner_optimizer: plugin '{plugin}'") as error:
        with_inner_optimizer({}, plugin, "learned")
    # The plugins that have the choice are found, not listed by hand.
    assert "(anil, fomaml, maml, meta_critic have)" in str(error.value)


def test_inner_optimizer_contradicting_fix_hparams_is_refused():
    with pytest.raises(UsageError, match="contradicts --fix_hparams=maml/inner_optimizer=sgd"):
        with_inner_optimizer({"maml/inner_optimizer": "sgd"}, "maml", "learned")


@pytest.fixture
def parse():
    """Parses a command line into the global flags; resets them afterwards."""
    flags.define_component_flags()

    def parse_args(*args):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["metasearch", *args])

    yield parse_args
    flags.FLAGS.unparse_flags()


def test_every_registered_components_options_are_flags(parse):
    generated = {spec.flag: (spec.kind, spec.component) for spec in flags.COMPONENT_FLAGS.values()}
    assert generated["nasnet_blocks"] == ("search_space", "nasnet")
    assert generated["evolution_population"] == ("strategy", "evolution")
    assert generated["hyperband_max_epochs"] == ("strategy", "hyperband")
    assert generated["glyphs_classes"] == ("dataset", "glyphs")
    assert generated["omniglot_rotations"] == ("dataset", "omniglot")
    assert generated["fabric_layers"] == ("search_space", "fabric")
    parse(
        "--search_space=nasnet",
        "--nasnet_blocks=3",
        "--strategy=evolution",
        "--evolution_population=12",
        "--fabric_layers=2,3",
    )
    with pytest.raises(
        UsageError, match="--fabric_layers: applies only with --search_space=fabric"
    ):
        flags.resolve()
    parse(
        "--search_space=nasnet",
        "--nasnet_blocks=3",
        "--strategy=evolution",
        "--evolution_population=12",
    )
    config = flags.resolve()
    assert config.space_options["blocks"] == 3 and config.space_options["stem"] == "auto"
    assert config.strategy_options == {"population": 12, "sample_size": 10}


def test_flags_of_other_data_sets_are_refused_away_from_their_defaults(parse):
    parse("--dataset=omniglot", "--glyphs_classes=60")
    with pytest.raises(UsageError, match="--glyphs_classes: applies only with --dataset=glyphs"):
        flags.check_unused_flags()
    # Flagfiles of earlier runs list every data set's flags at their defaults.
    parse("--dataset=omniglot", "--glyphs_classes=1200", "--sinusoid_phase=0,3.141592653589793")
    flags.check_unused_flags()
    parse("--dataset=sinusoid", "--search_space=mlp", "--n_way=5", "--image_size=28")
    flags.check_unused_flags()


def test_the_flagfile_of_a_config_parses_back_to_the_same_config(parse):
    config = RunConfig(
        search_space="nasnet",
        strategy="evolution",
        fix_hparams={"protonet/metric": "cosine", "train/learning_rate": 0.002},
        space_options={"blocks": 2, "cell": None},
        strategy_options={"population": 12, "sample_size": 4},
        dataset_options={"classes": 60, "images_per_class": 20},
        progress=False,
        output_dir="runs/x",
    )
    path_text = flagfile_text(config)
    lines = [line for line in path_text.splitlines() if not line.startswith("#")]
    parse(*lines)
    again = flags.resolve()
    assert again.fix_hparams == config.fix_hparams
    assert again.strategy_options == config.strategy_options
    assert again.dataset_options == config.dataset_options
    assert again.space_options["blocks"] == 2 and again.progress is False
    assert again.identity()["n_way"] == config.identity()["n_way"]
