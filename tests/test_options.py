"""Declared component options: types, bounds, defaults and unknown names."""

import pytest

from metasearch.errors import UsageError
from metasearch.options import Option, defaults, resolve

OPTIONS = (
    Option("layers", list, [4, 6], "depths", item_type=int, lower_bound=2),
    Option("width", int, None, "unset: the component decides", lower_bound=1),
    Option("items", list, [], "names"),
    Option("rate", float, 0.5, "a rate", upper_bound=1.0),
    Option("mode", str, "a", "a mode", choices=("a", "b")),
    Option("on", bool, True, "a switch"),
)


def test_defaults_fill_what_is_not_given_and_values_are_coerced():
    assert resolve(OPTIONS, {}, "X") == defaults(OPTIONS)
    resolved = resolve(OPTIONS, {"layers": "2,3", "items": "a,b", "rate": 1, "width": 8}, "X")
    assert resolved["layers"] == [2, 3] and resolved["items"] == ["a", "b"]
    assert resolved["rate"] == 1.0 and isinstance(resolved["rate"], float)
    assert resolved["width"] == 8 and resolved["on"] is True


@pytest.mark.parametrize(
    "given, message",
    [
        ({"layers": "1,3"}, "X option layers: '1,3' is below its lower bound 2"),
        ({"layers": "a"}, "X option layers: 'a' is not a list of integers"),
        ({"width": "3"}, "X option width: '3' is not an integer"),
        ({"width": True}, "X option width: True is not an integer"),
        ({"rate": 2.0}, "X option rate: 2.0 is above its upper bound 1"),
        ({"mode": "c"}, "X option mode: 'c' is not one of a, b"),
        ({"on": "yes"}, "X option on: 'yes' is not true or false"),
        ({"widht": 3}, "X: unknown options widht; known: items, layers, mode, on, rate, width"),
    ],
)
def test_bad_values_and_unknown_names_are_refused_naming_them(given, message):
    with pytest.raises(UsageError) as error:
        resolve(OPTIONS, given, "X")
    assert str(error.value) == message
    with pytest.raises(ValueError, match="X"):
        resolve(OPTIONS, given, "X", error=ValueError)


def test_a_declaration_is_checked_when_it_is_made():
    with pytest.raises(TypeError, match="type must be one of"):
        Option("x", dict, {}, "no dicts")
    with pytest.raises(TypeError, match="the default of option 'x'"):
        Option("x", int, "3", "a default of the wrong type")
    with pytest.raises(ValueError, match="identifier"):
        Option("not a name", int, 1, "flags need identifiers")
