"""Tests for metasearch.tabular: the CSV lookup table and the simulated search loop."""

from __future__ import annotations

import itertools
import json

import keras_tuner
import pytest

from cli_support import run_cli_in_process
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


# --------------------------------------------------------------------------- any cell table

# TransNAS-Bench-101's micro cell, numbered as that benchmark numbers it.
TRANSNAS_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")
ARCHITECTURE = [
    f"nasbench201/edge_{i}_{j}" for i, j in ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))
]


def write_cell_table(path, keep=lambda key: True) -> dict[str, float]:
    """A 4-op table (every cell `keep` accepts) with made-up accuracies; returns key -> value."""
    rows = {}
    for cell in itertools.product("0123", repeat=6):
        key = "".join(cell)
        if keep(key):
            # Distinct, repeatable scores that reward 3x3 convolutions (digit 3).
            rows[key] = round(40 + 8 * key.count("3") + int(key, 4) / 1000, 3)
    lines = ["op_indices,accuracy"] + [f"{key},{value}" for key, value in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return rows


def table_args(path, *extra):
    return [
        "--search_space=nasbench201",
        "--evaluator=table",
        f"--table={path}",
        "--table_column=accuracy",
        f"--table_ops={','.join(TRANSNAS_OPS)}",
        "--noprogress",
        *extra,
    ]


def test_fit_space_restricts_the_space_and_needs_no_check_for_a_complete_table(tmp_path):
    from metasearch.search_spaces.nasbench201 import NASBench201

    write_cell_table(tmp_path / "t.csv")
    table, space = tabular.Table(str(tmp_path / "t.csv"), "accuracy"), NASBench201()
    assert tabular.fit_space(table, space, TRANSNAS_OPS) is None
    assert table.candidate_filter is None
    hp = keras_tuner.HyperParameters()
    space.sample_config(hp)
    assert {op for parameter in hp.space for op in parameter.values} == set(TRANSNAS_OPS)


def test_missing_cells_rejects_only_cells_the_table_lacks(tmp_path):
    from metasearch.search_spaces.nasbench201 import NASBench201

    rows = write_cell_table(tmp_path / "t.csv", keep=lambda key: not key.startswith("33"))
    table, space = tabular.Table(str(tmp_path / "t.csv"), "accuracy"), NASBench201()
    check = tabular.fit_space(table, space, TRANSNAS_OPS)
    assert check is table.candidate_filter and check.max_attempts == 100
    present = dict.fromkeys(ARCHITECTURE, "nor_conv_3x3") | {ARCHITECTURE[1]: "none"}
    assert check.key(present) == "303333" and "303333" in rows
    assert check(present) is None
    missing = dict.fromkeys(ARCHITECTURE, "nor_conv_3x3")
    assert check(missing) == (
        f"cell 333333 is not in --table={tmp_path / 't.csv'}, 3,840 of the space's 4,096 cells"
    )
    # A sparse table allows more attempts in a row (the check is a lookup).
    write_cell_table(tmp_path / "s.csv", keep=lambda key: key.endswith("0000"))
    sparse = tabular.Table(str(tmp_path / "s.csv"), "accuracy")
    assert tabular.fit_space(sparse, NASBench201(), TRANSNAS_OPS) is None  # a full product
    # 64 cells (the last three edges repeat the first three) of a 4,096-cell space.
    write_cell_table(tmp_path / "s.csv", keep=lambda key: key[:3] == key[3:])
    sparse = tabular.Table(str(tmp_path / "s.csv"), "accuracy")
    assert tabular.fit_space(sparse, NASBench201(), TRANSNAS_OPS).max_attempts == 20 * 64


def _search(tmp_path, strategy, table, trials, *extra):
    out = tmp_path / f"out_{strategy}"
    result = run_cli_in_process(
        *table_args(table, *extra),
        f"--strategy={strategy}",
        f"--max_trials={trials}",
        f"--output_dir={out}",
    )
    return result, out


def subset_cell(key: str) -> bool:
    """A NAS-Bench-201-style subset: no 3x3 on the last edge, and a third of the rest gone."""
    return key[5] != "3" and int(key, 4) % 3 != 1


@pytest.mark.parametrize("strategy, trials", [("evolution", 30), ("bayesian", 14)])
@pytest.mark.parametrize("subset", [False, True], ids=["all_cells", "cells_missing"])
def test_searches_on_a_4_op_table_score_every_trial(strategy, trials, subset, tmp_path):
    rows = write_cell_table(tmp_path / "t.csv", keep=subset_cell if subset else lambda key: True)
    extra = ["--evolution_population=10"] if strategy == "evolution" else []
    result, out = _search(tmp_path, strategy, tmp_path / "t.csv", trials, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    trials_run = json.loads((out / "results.json").read_text())["trials"]
    assert len(trials_run) == trials
    for trial in trials_run:
        assert trial["status"] == "COMPLETED", trial
        assert trial["val_accuracy"] == pytest.approx(rows[trial["table_key"]] / 100)
        assert set(trial["architecture_config"].values()) <= set(TRANSNAS_OPS)
        if subset:  # the table has no 3x3 on the last edge: it is not even proposed
            assert trial["architecture_config"]["edge_3_4"] != "nor_conv_3x3"
    assert len({t["table_key"] for t in trials_run}) == trials
    oracle = json.loads((out / "keras_tuner" / "oracle.json").read_text())
    rejected = oracle["constraint"]["rejected"]
    if subset:
        assert rejected, "no proposal met a missing cell: the test proves nothing"
        assert all("is not in --table=" in r["reason"] for r in rejected)
        assert all(r["reason"].split()[1] not in rows for r in rejected)
    else:
        assert not rejected


def test_a_search_that_tried_every_cell_of_the_table_ends_saying_so(tmp_path):
    # Three cells of a four-cell space (the last two edges none or skip, but not both skip).
    rows = write_cell_table(
        tmp_path / "t.csv", keep=lambda key: key[:4] == "3333" and key[4:] in ("00", "01", "10")
    )
    result, out = _search(tmp_path, "random", tmp_path / "t.csv", 10)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = json.loads((out / "results.json").read_text())["trials"]
    assert sorted(t["table_key"] for t in trials) == sorted(rows)
    assert all(t["status"] == "COMPLETED" for t in trials)
    assert (
        "search stopped early: no untried candidate is left that the table accepts "
        "(1 rejected, last: cell 333311 is not in --table="
    ) in result.stdout
    assert "3 of the space's 4 cells" in result.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--table_ops=none,skip_connect,conv_5x5"],
            "--table_ops: unknown operation 'conv_5x5'; known: skip_connect, none, "
            "nor_conv_3x3, nor_conv_1x1, avg_pool_3x3",
        ),
        (["--table_ops=none,none"], "--table_ops: none is listed twice"),
        # The table's digits go up to 3: three names are too few.
        (["--table_ops=none,skip_connect,nor_conv_1x1"], "table key '000003' is not 6 digits 0-2"),
        (
            ["--fix_hparams=nasbench201/edge_1_2=avg_pool_3x3"],
            "--fix_hparams: nasbench201/edge_1_2='avg_pool_3x3' is in no cell of --table=",
        ),
    ],
)
def test_bad_table_operations_fail_with_one_line(args, expected, tmp_path):
    write_cell_table(tmp_path / "t.csv")
    flags = [a for a in table_args(tmp_path / "t.csv") if not a.startswith("--table_ops")]
    result = run_cli_in_process(*flags, *args, f"--output_dir={tmp_path / 'o'}")
    assert result.returncode == 2, result.stdout[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr
    assert not (tmp_path / "o" / "config.json").exists()


def test_table_ops_needs_the_table_evaluator(tmp_path):
    result = run_cli_in_process("--table_ops=none,skip_connect", f"--output_dir={tmp_path}")
    assert result.returncode == 2
    assert "--table_ops: applies only with --evaluator=table" in result.stderr
