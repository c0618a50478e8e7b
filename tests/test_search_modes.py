"""Search modes end to end through the CLI: table scoring, --max_params, hyperband budgets."""

from pathlib import Path

import pytest

from cli_support import REPO, TINY, read_json, run_cli_in_process

NB201_TABLE = (REPO / ".." / "shared" / "data" / "nasbench201" / "nb201_val_accuracy.csv").resolve()
needs_table = pytest.mark.skipif(not NB201_TABLE.exists(), reason=f"no table at {NB201_TABLE}")
TABLE_ARGS = ["--search_space=nasbench201", "--evaluator=table", f"--table={NB201_TABLE}"]


def _table_rows(path: Path) -> dict[str, float]:
    import csv

    with open(path, newline="") as handle:
        return {row["op_indices"]: float(row["cifar10_val"]) for row in csv.DictReader(handle)}


@needs_table
@pytest.mark.parametrize("strategy", ["evolution", "controller"])
def test_table_scored_search_reads_accuracies_and_trains_nothing(strategy, tmp_path):
    out = tmp_path / "out"
    result = run_cli_in_process(
        *TABLE_ARGS, f"--strategy={strategy}", "--max_trials=25", f"--output_dir={out}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = read_json(out / "results.json")
    rows = _table_rows(NB201_TABLE)
    keys = [t["table_key"] for t in results["trials"]]
    assert len(keys) == 25 and len(set(keys)) == 25, "a table-scored search repeated a query"
    for trial in results["trials"]:
        assert trial["status"] == "COMPLETED"
        assert trial["val_accuracy"] == pytest.approx(rows[trial["table_key"]] / 100)
        assert "parameters" not in trial and not list((out / "keras_tuner").glob("*/*.npz"))
    assert "table-scored trials have no weights" in result.stdout
    assert (out / "search_progress.png").is_file()
    assert not (out / "export").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--evaluator=table"], "--table"),
        (["--evaluator=table", "--table=/nonexistent/t.csv"], "/nonexistent/t.csv"),
        (["--evaluator=table", f"--table={NB201_TABLE}", "--table_column=nope"], "--table_column"),
    ],
)
def test_bad_table_flags_fail_with_one_line(args, expected, tmp_path):
    if "--table=" + str(NB201_TABLE) in args and not NB201_TABLE.exists():
        pytest.skip("no NAS-Bench-201 table")
    result = run_cli_in_process(
        "--search_space=nasbench201", *args, f"--output_dir={tmp_path / 'o'}"
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr


def test_table_needs_a_space_with_a_table(tmp_path):
    result = run_cli_in_process(
        "--search_space=conv_blocks", "--evaluator=table", f"--table={tmp_path / 't.csv'}"
    )
    assert result.returncode == 2
    assert "conv_blocks has no tabular benchmark" in result.stderr


@pytest.mark.slow
def test_max_params_rejects_before_training_and_records_flops(tmp_path):
    out = tmp_path / "out"
    args = [a for a in TINY if not a.startswith("--fix_hparams")]
    result = run_cli_in_process(
        *args,
        "--max_trials=2",
        "--max_params=60000",
        "--fix_hparams=conv_blocks/depth=3,conv_blocks/filters=32,train/learning_rate=0.002",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = read_json(out / "results.json")["trials"]
    assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"]
    for trial in trials:
        assert trial["parameters"] <= 60000
        assert trial["flops"] > 0
    oracle = read_json(out / "keras_tuner" / "oracle.json")
    rejected = oracle["constraint"]["rejected"]
    assert rejected, "no candidate was over the budget: the test proves nothing"
    assert all("--max_params=60,000" in r["reason"] for r in rejected)
    assert "rejected before training" in result.stdout


@pytest.mark.slow
def test_hyperband_promotes_trials_that_continue_from_their_parents(tmp_path):
    out = tmp_path / "out"
    result = run_cli_in_process(
        *[a for a in TINY if not a.startswith("--episodes_per_trial")],
        "--episodes_per_trial=9",
        "--strategy=hyperband",
        "--hyperband_max_epochs=3",
        "--max_trials=4",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = {t["trial_id"]: t for t in read_json(out / "results.json")["trials"]}
    assert len(trials) == 4
    promoted = [t for t in trials.values() if t.get("continues_trial")]
    assert promoted, trials
    for trial in promoted:
        parent = trials[trial["continues_trial"]]
        assert trial["architecture_config"] == parent["architecture_config"]
        assert trial["episodes"] == 9 and parent["episodes"] == 3


@pytest.mark.slow
def test_hyperband_units_are_shares_of_the_trial_time(tmp_path):
    out = tmp_path / "out"
    result = run_cli_in_process(
        *TINY,
        "--trial_time=3s",
        "--strategy=hyperband",
        "--hyperband_max_epochs=3",
        "--max_trials=4",
        "--final_top_k=0",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = {t["trial_id"]: t for t in read_json(out / "results.json")["trials"]}
    promoted = [t for t in trials.values() if t.get("continues_trial")]
    assert promoted, trials
    for trial in promoted:
        parent = trials[trial["continues_trial"]]
        # The parent trained one unit (1 s); the child the two units it had not (2 s).
        assert 1.0 <= parent["seconds"]["training"] < 2.5
        assert 2.0 <= trial["seconds"]["training"] < 3.5
        assert trial["episodes"] > parent["episodes"] > 0


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--nasnet_blocks=3"], "--nasnet_blocks: applies only with --search_space=nasnet"),
        (["--strategy=evolution", "--hyperband_factor=2"], "--strategy=hyperband"),
        (["--table_column=cifar100_val"], "--table_column: applies only with --evaluator=table"),
        (
            ["--omniglot_rotations=train"],
            "--omniglot_rotations: applies only with --dataset=omniglot",
        ),
        (
            ["--dataset=sinusoid", "--search_space=mlp", "--plugin=maml", "--n_way=20"],
            "--n_way: applies only with a classification data set (--dataset=sinusoid is",
        ),
    ],
)
def test_flags_for_other_components_are_refused_not_ignored(args, expected, tmp_path):
    result = run_cli_in_process(*args, f"--output_dir={tmp_path / 'o'}")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr
    assert not (tmp_path / "o").exists()


@needs_table
@pytest.mark.parametrize("strategy", ["evolution", "controller"])
def test_extending_a_table_scored_search_keeps_the_strategys_state(strategy, tmp_path):
    out = tmp_path / "out"
    args = [*TABLE_ARGS, f"--strategy={strategy}", f"--output_dir={out}"]
    first = run_cli_in_process(*args, "--max_trials=12")
    assert first.returncode == 0, first.stderr[-3000:]
    state_before = read_json(out / "keras_tuner" / "oracle.json")
    more = run_cli_in_process(*args, "--max_trials=24")
    assert more.returncode == 0, more.stderr[-3000:]
    assert "resuming after 12 finished trials" in more.stdout
    trials = read_json(out / "results.json")["trials"]
    keys = [t["table_key"] for t in trials]
    assert len(keys) == 24 and len(set(keys)) == 24, "the resumed search repeated a query"
    # The first twelve trials are kept as they were.
    state_after = read_json(out / "keras_tuner" / "oracle.json")
    assert state_after["end_order"][:12] == state_before["end_order"]
