"""The command line as users run it: a search, its files, and bad input."""

import os
import shutil
from pathlib import Path

import pytest

from cli_support import TINY, read_json, run_cli, run_cli_in_process


def _assert_usage_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stdout[-1000:], result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("metasearch: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# One worker runs the module, so the finished-run fixture is computed once, not once per worker.
pytestmark = pytest.mark.xdist_group("cli")


def test_the_module_is_grouped_on_one_worker(request):
    # pytest 9.2 made --dist=loadgroup stop grouping without a word (pytest-xdist#1386):
    # every module fixture then runs once per worker and the suite slows by minutes.
    if getattr(request.config.option, "loadgroup", False):
        assert request.node.nodeid.endswith("@cli"), (
            f"pytest-xdist did not group {request.node.nodeid}: install the test extra's pytest"
        )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    result = run_cli(*TINY, "--max_trials=2", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def _snapshot(directory: Path) -> dict:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_search_writes_every_promised_file(finished_run):
    out, result = finished_run
    for name in ("config.json", "flags.txt", "dataset.json", "results.json", "leaderboard.txt"):
        assert (out / name).is_file(), name
    assert (out / "keras_tuner" / "oracle.json").is_file()
    results = read_json(out / "results.json")
    assert len(results["trials"]) == 2
    for trial in results["trials"]:
        assert trial["status"] == "COMPLETED"
        assert 0.0 <= trial["val_accuracy"] <= 1.0 and trial["val_ci95"] >= 0.0
        assert trial["parameters"] > 0 and trial["wall_seconds"] > 0
        assert trial["architecture"].startswith("conv3-32")
        assert "protonet/metric" in trial["hyperparameters"]
    export = out / "export" / "best_learner"
    assert (export / "saved_model.pb").is_file()
    metadata = read_json(export / "assets" / "metasearch.json")
    assert metadata["plugin"] == "protonet" and metadata["dataset"] == "glyphs"
    # The export is the final phase's learner: the best trial, trained further.
    assert metadata["source_trial"] == results["best_trial"]
    assert metadata["trial_id"] == f"final:{results['final']['final_id']}"
    assert {"tensorflow", "keras", "metasearch"} <= set(metadata["versions"])
    assert "Leaderboard" in result.stdout and str(export) in result.stdout
    assert "trial 0 (1 of 2)" in result.stdout  # progress display


@pytest.mark.slow  # seconds of processes or XLA: in CI, not the quick loop
def test_flagfile_repeats_the_run_and_reexport_works(finished_run, tmp_path):
    out, _ = finished_run
    flagfile = (out / "flags.txt").read_text()
    assert "--episodes_per_trial=8" in flagfile and f"--output_dir={out}" in flagfile
    # Rerunning with the flagfile is the same configuration: accepted, nothing rerun.
    before = read_json(out / "results.json")
    again = run_cli(f"--flagfile={out / 'flags.txt'}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert read_json(out / "results.json")["trials"] == before["trials"]

    exported = run_cli("export", f"--output_dir={out}", "--trial=1")
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (out / "export" / "trial_1_learner" / "saved_model.pb").is_file()
    bad = run_cli("export", f"--output_dir={out}", "--trial=7")
    _assert_usage_error(bad, "--trial=7", "trials: 0, 1")


def test_sample_needs_a_generative_plugin(finished_run, tmp_path):
    out, _ = finished_run
    result = run_cli_in_process(
        "sample", f"--output_dir={out}", f"--sample_png={tmp_path / 'g.png'}"
    )
    _assert_usage_error(result, "--output_dir", "'protonet' does not generate images")
    assert not (tmp_path / "g.png").exists()


@pytest.mark.slow
def test_different_configuration_is_refused_unless_overwrite(finished_run, tmp_path):
    out, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = _snapshot(copy)
    refused = run_cli_in_process(*TINY, "--max_trials=2", "--n_way=3", f"--output_dir={copy}")
    _assert_usage_error(
        refused, "--output_dir", "different configuration", "--n_way: 5 -> 3", "--overwrite"
    )
    assert _snapshot(copy) == before
    accepted = run_cli(*TINY, "--max_trials=1", "--n_way=3", "--overwrite", f"--output_dir={copy}")
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert len(read_json(copy / "results.json")["trials"]) == 1


@pytest.mark.parametrize(
    "flag, fragments",
    [
        ("--plugin=nope", ["--plugin", "'nope'", "known:", "protonet"]),
        ("--dataset=nope", ["--dataset", "'nope'", "glyphs", "omniglot"]),
        ("--search_space=nope", ["--search_space", "'nope'", "conv_blocks"]),
        ("--n_way=40", ["--n_way=40", "meta-val", "only 6 classes"]),
        ("--jit_compile=maybe", ["jit_compile"]),
        ("--fix_hparams=conv_blocks/depth=9", ["--fix_hparams", "conv_blocks/depth=9"]),
    ],
)
def test_bad_flags_give_one_line_and_exit_2_without_touching_a_run(
    finished_run, tmp_path, flag, fragments
):
    out, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = _snapshot(copy)
    args = [a for a in TINY if not a.startswith(flag.split("=")[0] + "=")]
    result = run_cli_in_process(*args, "--max_trials=2", flag, f"--output_dir={copy}")
    _assert_usage_error(result, *fragments)
    assert _snapshot(copy) == before


@pytest.mark.parametrize(
    "flag, fragments",
    [
        ("--plugin=nope", ["--plugin", "'nope'", "known:"]),  # refused before TensorFlow starts
        (
            "--n_way=40",
            ["--n_way=40", "meta-val", "only 6 classes"],
        ),  # refused once the data are loaded
    ],
)
def test_a_refusal_in_a_fresh_process_is_one_line_on_stderr(tmp_path, flag, fragments):
    # The other refusals run in process; this is the process-level contract: TensorFlow's
    # C++ start-up output and absl's handlers add nothing to stderr but the error.
    args = [a for a in TINY if not a.startswith(flag.split("=")[0] + "=")]
    result = run_cli(*args, flag, f"--output_dir={tmp_path / 'o'}")
    _assert_usage_error(result, *fragments)


def test_k_shot_plus_n_query_above_images_per_class(tmp_path):
    result = run_cli_in_process(
        *TINY, "--k_shot=15", "--n_query=6", f"--output_dir={tmp_path / 'o'}"
    )
    _assert_usage_error(result, "--k_shot + --n_query = 21", "only 20 images")


# TINY sizes the built-in glyphs; its --glyphs_classes would be refused with omniglot.
OMNIGLOT_TINY = [a for a in TINY if not a.startswith("--glyphs_")]


def test_missing_data_dir(tmp_path):
    result = run_cli_in_process(
        *OMNIGLOT_TINY,
        "--dataset=omniglot",
        f"--data_dir={tmp_path / 'none'}",
        f"--output_dir={tmp_path / 'o'}",
    )
    _assert_usage_error(result, "--data_dir", "is not a directory")
    result = run_cli_in_process(
        *OMNIGLOT_TINY, "--dataset=omniglot", f"--output_dir={tmp_path / 'o'}"
    )
    _assert_usage_error(result, "--data_dir")


def test_truncated_zip_and_non_image_file(omniglot_dir, tmp_path):
    data = (omniglot_dir / "images_background_small1.zip").read_bytes()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "images_background_small1.zip").write_bytes(data[: len(data) * 2 // 3])
    result = run_cli_in_process(
        *OMNIGLOT_TINY,
        "--dataset=omniglot",
        f"--data_dir={broken}",
        f"--output_dir={tmp_path / 'o1'}",
    )
    _assert_usage_error(result, "images_background_small1.zip")

    import zipfile

    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(omniglot_dir / "images_background_small1.zip") as zf:
        zf.extractall(unpacked)
    bad = unpacked / "images_background_small1" / "Greek" / "character03" / "notes.png"
    bad.write_bytes(b"\x00\x01 not a png")
    result = run_cli_in_process(
        *OMNIGLOT_TINY,
        "--dataset=omniglot",
        f"--data_dir={unpacked}",
        f"--output_dir={tmp_path / 'o2'}",
    )
    _assert_usage_error(result, "notes.png", "not a readable image")


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("I am a file, not a folder")
    result = run_cli_in_process(*TINY, f"--output_dir={blocker / 'out'}")
    _assert_usage_error(result, "--output_dir", "cannot write")
    assert blocker.read_text() == "I am a file, not a folder"
    if os.geteuid() != 0:  # root writes anywhere, so only a non-root user sees this
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = run_cli_in_process(*TINY, f"--output_dir={locked / 'out'}")
        _assert_usage_error(result, "--output_dir", "cannot write")


@pytest.mark.slow  # seconds of processes or XLA: in CI, not the quick loop
def test_unknown_command_and_help():
    _assert_usage_error(run_cli("frobnicate"), "unknown command", "search, export, sample")
    helpful = run_cli("--helpfull")
    assert helpful.returncode == 0
    for flag in (
        "--dataset",
        "--plugin",
        "--search_space",
        "--jit_compile",
        "--episodes_per_trial",
        "overwrite",
    ):
        assert flag in helpful.stdout


@pytest.mark.slow
def test_bayesian_strategy_runs(tmp_path):
    out = tmp_path / "out"
    result = run_cli(*TINY, "--strategy=bayesian", "--max_trials=2", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = read_json(out / "results.json")["trials"]
    assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"]
