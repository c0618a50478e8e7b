"""Tests for metasearch.tabular: the CSV lookup table and the simulated search loop."""

from __future__ import annotations

import keras_tuner
import pytest

from metasearch import strategies, tabular
from metasearch.errors import UsageError

CSV = """arch,op_indices,cifar10_val,cifar100_val,note
a,000002,85.08,61.68,x
b,012340,91.5,70.1,y
c,100000,10.0,1.0,z
"""


@pytest.fixture
def table_path(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text(CSV)
    return str(path)


def test_lookup_keeps_leading_zeros_and_reads_the_column(table_path):
    table = tabular.Table(table_path, "cifar10_val", "op_indices")
    assert table.lookup("000002") == pytest.approx(85.08)
    assert table.lookup("012340") == pytest.approx(91.5)
    assert "2" not in table and "000002" in table
    assert len(table) == 3
    other = tabular.Table(table_path, "cifar100_val")
    assert other.lookup("100000") == pytest.approx(1.0)


def test_columns_lists_only_numeric_columns(table_path):
    table = tabular.Table(table_path, "cifar10_val")
    assert table.columns == ("cifar10_val", "cifar100_val")


def test_best(table_path):
    assert tabular.Table(table_path, "cifar10_val").best() == ("012340", pytest.approx(91.5))


def test_missing_file_names_the_flag(tmp_path):
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(UsageError, match=r"--table: no such file .*nope\.csv"):
        tabular.Table(missing, "cifar10_val")


def test_unknown_column_lists_the_known_ones(table_path):
    with pytest.raises(
        UsageError, match=r"--table_column: unknown column 'acc'; known: cifar10_val, cifar100_val"
    ):
        tabular.Table(table_path, "acc")
    with pytest.raises(UsageError, match="--table_column: unknown column 'note'"):
        tabular.Table(table_path, "note")  # present but not numeric


def test_missing_key_column(tmp_path):
    path = tmp_path / "keyless.csv"
    path.write_text("arch,cifar10_val\na,1.0\n")
    with pytest.raises(UsageError, match=r"--table: .*keyless\.csv has no column 'op_indices'"):
        tabular.Table(str(path), "cifar10_val")


def test_unknown_key(table_path):
    table = tabular.Table(table_path, "cifar10_val")
    with pytest.raises(
        UsageError, match=r"--table: no row for architecture 999999 in .*table\.csv"
    ):
        table.lookup("999999")


def test_simulate_runs_one_trial_per_query():
    hp = keras_tuner.HyperParameters()
    hp.Choice("x", list(range(10)))
    oracle = strategies.make_oracle(
        "random",
        objective=keras_tuner.Objective("score", "max"),
        max_trials=50,
        seed=1,
        hyperparameters=hp,
    )
    tabular.keep_in_memory(oracle)
    scores = tabular.simulate(oracle, lambda h: float(h.get("x")), 5, "score")
    assert len(scores) == 5 and len(oracle.trials) == 5
    assert all(t.status == "COMPLETED" for t in oracle.trials.values())
    assert sorted(t.score for t in oracle.trials.values()) == sorted(scores)
    # The 10-value space runs out: the search stops early instead of repeating.
    assert len(tabular.simulate(oracle, lambda h: float(h.get("x")), 50, "score")) <= 5


def test_keep_in_memory_writes_nothing_and_needs_an_in_memory_mode(tmp_path):
    hp = keras_tuner.HyperParameters()
    hp.Choice("x", list(range(10)))
    oracle = strategies.make_oracle(
        "evolution",
        objective=keras_tuner.Objective("score", "max"),
        max_trials=50,
        seed=1,
        hyperparameters=hp,
    )
    oracle.set_project_dir(str(tmp_path), "project")
    tabular.keep_in_memory(oracle)
    assert oracle.persist is False and oracle.verbose == 0
    assert len(tabular.simulate(oracle, lambda h: float(h.get("x")), 5, "score")) == 5
    assert not list(tmp_path.rglob("*.json"))
    assert oracle.get_state()["end_order"] == ["00", "01", "02", "03", "04"]
    # No method is patched: the oracle's class still defines what it does.
    assert "save" not in vars(oracle) and "_save_trial" not in vars(oracle)
    with pytest.raises(TypeError, match="RandomSearchOracle has no in-memory mode"):
        tabular.keep_in_memory(keras_tuner.oracles.RandomSearchOracle())
