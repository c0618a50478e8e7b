"""Tabular evaluation: look an architecture's score up in a CSV instead of training it.

Tabular benchmarks such as NAS-Bench-201 list every architecture of a search
space with its accuracy, so a search strategy can be run in seconds. `Table`
reads such a CSV once; `lookup(key)` returns the chosen column's value for the
row whose key column (a string, leading zeros kept) equals `key`.

A table need not hold every cell of its search space: `fit_space` restricts a
space that can (`use_table`) to the operations the table has, and gives the
constraint (`MissingCells`) that keeps any cell still missing from becoming a
trial: the strategy proposes another instead.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from metasearch.errors import UsageError

if TYPE_CHECKING:
    import keras_tuner

DEFAULT_KEY_COLUMN = "op_indices"


class Table:
    """One numeric column of a CSV table, indexed by a key column.

    `Table(path, column, key_column)` fails with `UsageError` naming the flag at
    fault (`--table`, `--table_column`) for a missing file, a missing key column
    or an unknown value column. Keys are kept as the strings in the file.
    """

    def __init__(self, path: str, column: str, key_column: str = DEFAULT_KEY_COLUMN):
        self.path, self.column, self.key_column = path, column, key_column
        # What keeps cells missing from the table from becoming trials (`fit_space` sets it).
        self.candidate_filter: MissingCells | None = None
        if not os.path.isfile(path):
            raise UsageError(f"--table: no such file {path}")
        try:
            with open(path, encoding="utf-8", newline="") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                rows = list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise UsageError(f"--table: cannot read {path} ({error})") from None
        if not header:
            raise UsageError(f"--table: {path} is empty")
        header = [name.strip() for name in header]
        if key_column not in header:
            raise UsageError(
                f"--table: {path} has no column {key_column!r} (its columns: {', '.join(header)})"
            )
        key_index = header.index(key_column)
        self.columns = tuple(
            name
            for index, name in enumerate(header)
            if index != key_index and rows and all(_is_number(row, index) for row in rows)
        )
        if column not in self.columns:
            raise UsageError(
                f"--table_column: unknown column {column!r}; known: {', '.join(self.columns)}"
            )
        value_index = header.index(column)
        self._values: dict[str, float] = {}
        for line, row in enumerate(rows, start=2):
            if len(row) != len(header):
                raise UsageError(
                    f"--table: {path} line {line} has {len(row)} fields, the header {len(header)}"
                )
            self._values[row[key_index].strip()] = float(row[value_index])

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: str) -> bool:
        return str(key) in self._values

    def keys(self) -> list[str]:
        """Every architecture's key, in file order (a key listed twice counts once)."""
        return list(self._values)

    def lookup(self, key: str) -> float:
        """The column's value for architecture `key`; unknown keys raise `UsageError`."""
        try:
            return self._values[str(key)]
        except KeyError:
            raise UsageError(f"--table: no row for architecture {key} in {self.path}") from None

    def best(self) -> tuple[str, float]:
        """The key and value of the row with the highest value."""
        key = max(self._values, key=self._values.__getitem__)
        return key, self._values[key]


# A cheap check may reject this many times the candidates a trial needs on average
# (the space's size over the table's cells) before the search stops.
_ATTEMPTS_PER_HIT = 20
MAX_ATTEMPTS = 20_000


class MissingCells:
    """The constraint of a search on a table lacking cells of its space: those never become trials.

    A strategy oracle's `candidate_filter` (see `metasearch.strategies`):
    called with a candidate's values, it answers None when the candidate's
    cell is in the table, else why not. The strategy then proposes another, up to `max_attempts` in a
    row (more the sparser the table: the check is a dictionary lookup); past
    that the search stops, saying so (`name` starts that message).
    """

    name = "the table"

    def __init__(self, table: Table, space, space_size: int | None):
        self.table, self.space = table, space
        cells = max(len(table), 1)
        per_hit = math.ceil(space_size / cells) if space_size else 1
        self.max_attempts = min(MAX_ATTEMPTS, max(100, _ATTEMPTS_PER_HIT * per_hit))
        self._where = f"--table={table.path}" + (
            f", {len(table):,} of the space's {space_size:,} cells" if space_size else ""
        )

    def key(self, values: Mapping[str, Any]) -> str:
        """The table key of the candidate `values` (hyperparameter name -> value)."""
        import keras_tuner

        hp = keras_tuner.HyperParameters()
        hp.values = dict(values)
        return self.space.table_key(self.space.sample_config(hp))

    def __call__(self, values: Mapping[str, Any]) -> str | None:
        key = self.key(values)
        return None if key in self.table else f"cell {key} is not in {self._where}"


def fit_space(table: Table, space, ops: Sequence[str] | None = None) -> MissingCells | None:
    """Fits `space` to `table`; sets and returns `table.candidate_filter` (None: no cell missing).

    A space with `use_table(keys, ops)` (e.g. `nasbench201`) is restricted
    to the operations the table's keys use, `ops` naming what each key digit
    stands for (None: the space's own numbering); it returns the number of
    cells left, so a complete table needs no constraint and searches exactly
    as before. A space without it may still lack cells: the constraint
    applies. Raises `ValueError` for keys or `ops` the space cannot read.
    """
    use_table = getattr(space, "use_table", None)
    if use_table is None:
        if ops:
            raise ValueError(f"{type(space).__name__}'s table keys name no operations")
        table.candidate_filter = MissingCells(table, space, None)
        return table.candidate_filter
    size = use_table(table.keys(), list(ops) if ops else None)
    table.candidate_filter = MissingCells(table, space, size) if len(table) < size else None
    return table.candidate_filter


def _is_number(row: list[str], index: int) -> bool:
    if index >= len(row):
        return False
    try:
        return math.isfinite(float(row[index]))
    except ValueError:
        return False


def keep_in_memory(oracle) -> None:
    """Puts `oracle` in its in-memory mode: no trial or state files, for simulated searches.

    keras-tuner's oracles save after every change, which needs a project
    directory and dominates the cost of a tabular query. Every strategy
    oracle (and every `metasearch.kt_adapter` oracle) has the mode
    (`persist = False`); its behaviour is otherwise unchanged (`get_state`
    still returns everything). Other oracles raise `TypeError`.
    """
    if not isinstance(getattr(type(oracle), "persist", None), bool):
        raise TypeError(
            f"keep_in_memory: {type(oracle).__name__} has no in-memory mode (use a "
            "metasearch.strategies or metasearch.kt_adapter oracle)"
        )
    oracle.persist = False
    oracle.verbose = 0


def simulate(
    oracle,
    evaluate: Callable[[keras_tuner.HyperParameters], float],
    queries: int,
    metric: str,
    tuner_id: str = "tabular",
) -> list[float]:
    """Drives `oracle` like a tuner for `queries` trials scored by `evaluate(hyperparameters)`.

    Each query is one keras-tuner trial (create, report `metric`, end), run
    one after the other. Returns the scores in query order; fewer than
    `queries` if the oracle stops early.
    """
    scores: list[float] = []
    while len(scores) < queries:
        trial = oracle.create_trial(tuner_id)
        if trial.status != "RUNNING":
            if trial.status == "IDLE":
                raise RuntimeError("simulate: a sequential search should never wait (IDLE)")
            break
        score = float(evaluate(trial.hyperparameters))
        oracle.update_trial(trial.trial_id, {metric: score})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
        scores.append(score)
    return scores
