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
