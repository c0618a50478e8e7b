"""The joint search space: fixed hyperparameters are checked against what each declares."""

import pytest

from metasearch.components import Components, fixed_hyperparameters
from metasearch.errors import UsageError


@pytest.fixture(scope="module")
def components():
    return Components("protonet", "conv_blocks", "glyphs")


@pytest.mark.parametrize(
    "fixed, message",
    [
        # Accepted by the value check (3.0 == 3), then a TypeError in every trial.
        ({"conv_blocks/depth": 3.0}, "conv_blocks/depth=3.0 is a number, but conv_blocks/depth "),
        ({"conv_blocks/depth": True}, "conv_blocks/depth=True is a boolean"),
        ({"protonet/metric": 3}, "protonet/metric=3 is an integer, but protonet/metric takes text"),
        ({"train/learning_rate": "fast"}, "train/learning_rate='fast' is text, but"),
    ],
)
def test_a_fixed_value_of_the_wrong_type_is_refused(components, fixed, message):
    with pytest.raises(UsageError, match="--fix_hparams: ") as error:
        fixed_hyperparameters(components, fixed)
    assert message in str(error.value)


def test_values_of_the_declared_type_are_accepted_and_an_integer_may_be_a_float(components):
    hp = fixed_hyperparameters(
        components,
        {"conv_blocks/depth": 3, "protonet/metric": "cosine", "train/learning_rate": 0.001},
    )
    assert hp.values["conv_blocks/depth"] == 3
    assert fixed_hyperparameters(components, {"conv_blocks/growth": 1}).values == {
        "conv_blocks/growth": 1
    }
