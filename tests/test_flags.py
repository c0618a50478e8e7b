"""Flag resolution that is not covered by running the CLI."""

import pytest

from metasearch import flags
from metasearch.errors import UsageError


def test_inner_optimizer_pins_the_plugins_hyperparameter():
    assert flags.with_inner_optimizer({}, "maml", None) == {}
    fixed = flags.with_inner_optimizer({"maml/inner_steps": 3}, "maml", "learned")
    assert fixed == {"maml/inner_steps": 3, "maml/inner_optimizer": "learned"}
    assert flags.with_inner_optimizer({}, "anil", "sgd") == {"anil/inner_optimizer": "sgd"}


@pytest.mark.parametrize("plugin", ["protonet", "metasgd"])
def test_inner_optimizer_is_refused_where_there_is_no_choice(plugin):
    with pytest.raises(UsageError, match=f"--inner_optimizer: plugin '{plugin}'"):
        flags.with_inner_optimizer({}, plugin, "learned")


def test_inner_optimizer_contradicting_fix_hparams_is_refused():
    with pytest.raises(UsageError, match="contradicts --fix_hparams=maml/inner_optimizer=sgd"):
        flags.with_inner_optimizer({"maml/inner_optimizer": "sgd"}, "maml", "learned")


@pytest.fixture
def parse():
    """Parses a command line into the global flags; resets them afterwards."""

    def parse_args(*args):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["metasearch", *args])

    yield parse_args
    flags.FLAGS.unparse_flags()


def test_flags_of_other_data_sets_are_refused_away_from_their_defaults(parse):
    parse("--dataset=omniglot", "--glyphs_classes=60")
    with pytest.raises(UsageError, match="--glyphs_classes: applies only with --dataset=glyphs"):
        flags.check_unused_flags()
    parse("--dataset=sinusoid", "--search_space=mlp", "--image_size=40")
    with pytest.raises(UsageError, match="--image_size: applies only with a classification"):
        flags.check_unused_flags()
    # Flagfiles of earlier runs list every data set's flags at their defaults.
    parse("--dataset=omniglot", "--glyphs_classes=1200", "--sinusoid_phase=0,3.141592653589793")
    flags.check_unused_flags()
    parse("--dataset=sinusoid", "--search_space=mlp", "--n_way=5", "--image_size=28")
    flags.check_unused_flags()
