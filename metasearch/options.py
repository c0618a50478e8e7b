"""Options a component declares: typed settings that shape it without being searched.

A plugin, search space, data set or strategy lists its options as a tuple of
`Option`s in its class attribute `OPTIONS`. The library resolves a plain dict
of given values against that declaration (`resolve`: defaults filled in,
types checked, unknown names refused); the CLI layer turns each declared
option of every registered component into the flag `--<component>_<option>`,
so a third-party component gets flags without any edit to metasearch.

This module imports nothing but the standard library: it is read before
TensorFlow starts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from metasearch.errors import UsageError

# The value types an option may have; `list` is a list of `item_type` values (a
# comma-separated flag).
TYPES = (int, float, str, bool, list)
ITEM_TYPES = (str, int, float)


@dataclasses.dataclass(frozen=True)
class Option:
    """One declared setting of a component.

    `type` is one of `int`, `float`, `str`, `bool` or `list` (of `item_type`:
    `str`, `int` or `float`); `default` may be None for "unset: the component
    decides". `choices` restricts a `str` option to those values;
    `lower_bound`/`upper_bound` bound an `int` or `float` option (or each item
    of a list).
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    lower_bound: float | None = None
    upper_bound: float | None = None
    item_type: type = str

    def __post_init__(self):
        if self.item_type not in ITEM_TYPES:
            raise TypeError(f"Option {self.name!r}: item_type must be one of {ITEM_TYPES}")
        if self.type not in TYPES:
            raise TypeError(f"Option {self.name!r}: type must be one of {TYPES}, not {self.type}")
        if not self.name.isidentifier():
            raise ValueError(f"Option {self.name!r}: the name must be an identifier")
        if self.default is not None:
            self.check(self.default, f"the default of option {self.name!r}", error=TypeError)

    def check(self, value: Any, where: str, error: type[Exception] = UsageError) -> Any:
        """`value` as this option's type; raises `error` (naming `where`) when it does not fit."""
        if value is None:
            return None
        checked = _coerce(self.type, value, self.item_type)
        if checked is _INVALID:
            words = _TYPE_WORDS[self.type]
            if self.type is list:
                words = f"a list of {_TYPE_WORDS[self.item_type].split(' ', 1)[1]}s"
            raise error(f"{where}: {value!r} is not {words}")
        if self.choices is not None and checked not in self.choices:
            raise error(f"{where}: {value!r} is not one of {', '.join(self.choices)}")
        for item in checked if self.type is list else [checked]:
            if isinstance(item, str):
                continue
            if self.lower_bound is not None and item < self.lower_bound:
                raise error(f"{where}: {value!r} is below its lower bound {self.lower_bound:g}")
            if self.upper_bound is not None and item > self.upper_bound:
                raise error(f"{where}: {value!r} is above its upper bound {self.upper_bound:g}")
        return checked


_INVALID = object()
_TYPE_WORDS = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    list: "a list of strings",
}


def _coerce(kind: type, value: Any, item_type: type = str) -> Any:
    if kind is list:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            return _INVALID
        coerced = []
        for item in items:
            if isinstance(item, str) and item_type is not str:
                try:
                    item = item_type(item.strip())
                except ValueError:
                    return _INVALID
            if item == "" and item_type is str:
                continue
            item = _coerce(item_type, item)
            if item is _INVALID:
                return _INVALID
            coerced.append(item)
        return coerced
    if kind is bool:
        return value if isinstance(value, bool) else _INVALID
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return _INVALID
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _INVALID
        return float(value) if math.isfinite(value) else _INVALID
    return value if isinstance(value, str) else _INVALID


def defaults(options: Iterable[Option]) -> dict[str, Any]:
    """Every option's default, by name."""
    return {option.name: option.default for option in options}


def resolve(
    options: Sequence[Option],
    given: Mapping[str, Any] | None,
    where: str,
    error: type[Exception] = UsageError,
    flag_prefix: str | None = None,
) -> dict[str, Any]:
    """The complete, checked options of a component from the values `given`.

    Options not given take their defaults; an unknown name or a value of the
    wrong type raises `error` (default `UsageError`), naming `where` (e.g.
    `--search_space=nasnet`), or with `flag_prefix` (the component's registered
    name) the option's flag (`--nasnet_blocks`).
    """
    given = dict(given or {})
    known = {option.name: option for option in options}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise error(
            f"{where}: unknown options {', '.join(unknown)}; known: "
            f"{', '.join(sorted(known)) or 'none'}"
        )
    return {
        name: option.check(
            given.get(name, option.default),
            f"--{flag_prefix}_{name}" if flag_prefix else f"{where} option {name}",
            error,
        )
        for name, option in known.items()
    }
