"""The one registry of plugins, search spaces, data sets and strategies, fed by entry points.

Built-ins are registered exactly like third-party packages: through the
`metasearch.plugins`, `metasearch.search_spaces`, `metasearch.datasets` and
`metasearch.strategies` entry-point groups declared in a package's metadata.
"""

from __future__ import annotations

import functools
from importlib import metadata

from metasearch.errors import UsageError

GROUPS = {
    "plugin": "metasearch.plugins",
    "search_space": "metasearch.search_spaces",
    "dataset": "metasearch.datasets",
    "strategy": "metasearch.strategies",
}


class DuplicateNameError(RuntimeError):
    """Two installed packages register the same name in one group."""


@functools.cache
def _entry_points(kind: str) -> dict[str, metadata.EntryPoint]:
    group = GROUPS[kind]
    found: dict[str, metadata.EntryPoint] = {}
    for entry_point in metadata.entry_points(group=group):
        previous = found.get(entry_point.name)
        # The same distribution can be seen twice (e.g. an editable install
        # shadowing a regular one); only different targets are a conflict.
        if previous is not None and previous.value != entry_point.value:
            raise DuplicateNameError(
                f"{group}: the name {entry_point.name!r} is registered twice, by "
                f"{previous.value} and {entry_point.value}"
            )
        found[entry_point.name] = entry_point
    return found


def names(kind: str) -> list[str]:
    """Sorted names registered for `kind` ('plugin', 'search_space', 'dataset', 'strategy')."""
    return sorted(_entry_points(kind))


def check_known(kind: str, name: str, flag: str | None = None) -> None:
    """Fails with the known names unless `name` is registered for `kind` (imports nothing)."""
    if name not in _entry_points(kind):
        known = ", ".join(names(kind)) or "none installed"
        where = f"--{flag}" if flag else GROUPS[kind]
        raise UsageError(f"{where}: unknown {kind.replace('_', ' ')} {name!r}; known: {known}")


def load(kind: str, name: str, flag: str | None = None):
    """Returns the class registered as `name`; unknown names fail with the known ones."""
    check_known(kind, name, flag)
    return _entry_points(kind)[name].load()


def clear_cache() -> None:
    """Forgets the scanned entry points (after installing a package at run time)."""
    _entry_points.cache_clear()


def registered_name(kind: str, cls: type) -> str | None:
    """The name `cls` is registered under for `kind`, or None (imports nothing)."""
    target = f"{cls.__module__}:{cls.__qualname__}"
    for name, entry_point in _entry_points(kind).items():
        if entry_point.value == target:
            return name
    return None
