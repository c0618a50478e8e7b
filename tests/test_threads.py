"""`--intra_op_threads`: one thread per op for small-op learners on small episodes (`metasearch.threads`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cli_support import REPO, TINY, run_cli_in_process
from metasearch import registry
from metasearch.config import RunConfig, flagfile_text
from metasearch.errors import UsageError
from metasearch.precision import native_bfloat16_cpu
from metasearch.threads import (
    SMALL_EPISODE_IMAGES,
    STEP_OPS,
    episode_images,
    resolve_intra_op_threads,
)


def test_auto_is_one_thread_per_op_only_for_small_ops_on_small_episodes_without_gpus():
    assert resolve_intra_op_threads(0, "small", 75, gpus=0) == 1
    assert resolve_intra_op_threads(0, "small", SMALL_EPISODE_IMAGES, gpus=0) == 1
    # Large episodes, large ops or GPUs: TensorFlow's default (0: every core per op).
    assert resolve_intra_op_threads(0, "small", SMALL_EPISODE_IMAGES + 1, gpus=0) == 0
    assert resolve_intra_op_threads(0, "large", 75, gpus=0) == 0
    assert resolve_intra_op_threads(0, "small", 75, gpus=1) == 0
    # An explicit count is used as it is.
    assert resolve_intra_op_threads(2, "small", 75, gpus=0) == 2
    assert resolve_intra_op_threads(1, "large", 300, gpus=1) == 1
    with pytest.raises(UsageError, match=r"^--intra_op_threads=-1: must be 0"):
        resolve_intra_op_threads(-1, "small", 75, gpus=0)
    with pytest.raises(ValueError, match="STEP_OPS must be one of"):
        resolve_intra_op_threads(0, "tiny", 75, gpus=0)


def test_episode_images_is_the_largest_pass_of_any_trained_episode():
    assert episode_images(RunConfig(n_way=5, k_shot=1, n_query=15), regression=False) == 75
    assert episode_images(RunConfig(n_way=5, k_shot=20, n_query=15), regression=False) == 100
    # Searched training ways and query counts: the largest of each.
    searched = RunConfig(n_way=5, train_n_ways=(5, 20), train_n_queries=(5, 15), n_query=5)
    assert episode_images(searched, regression=False) == 300
    assert episode_images(RunConfig(n_way=5, train_n_way=20, n_query=5), regression=False) == 100
    # Regression: support or query points, whatever the way.
    assert episode_images(RunConfig(n_way=5, k_shot=10, n_query=15), regression=True) == 15


def test_every_registered_plugin_declares_its_step_and_the_maml_family_is_small_ops():
    declared = {name: registry.load("plugin", name).STEP_OPS for name in registry.names("plugin")}
    assert set(declared.values()) <= set(STEP_OPS), declared
    for name in ("maml", "fomaml", "metasgd", "meta_critic"):
        assert declared[name] == "small", name
    # Whole-episode embeddings, ANIL's head-only loop, the LSTM on every coordinate.
    for name in ("protonet", "matching", "versa", "neural_statistician", "anil"):
        assert declared[name] == "large", name
    assert declared["learned_optimizer"] == "large"


def test_a_plugin_that_declares_an_unknown_step_is_refused_naming_it(monkeypatch):
    from metasearch import threads

    maml = registry.load("plugin", "maml")
    monkeypatch.setattr(maml, "STEP_OPS", "tiny")
    with pytest.raises(UsageError, match=r"^--plugin=maml: STEP_OPS must be one of"):
        threads.configure_run(RunConfig(plugin="maml"))


def test_the_setting_is_checked_and_is_not_part_of_the_identity(tmp_path):
    with pytest.raises(UsageError, match=r"^--intra_op_threads=-2: must be 0 \(auto\)"):
        RunConfig(intra_op_threads=-2)
    assert "intra_op_threads" not in RunConfig().identity()
    assert "--intra_op_threads=1\n" in flagfile_text(RunConfig(intra_op_threads=1))
    result = run_cli_in_process("--intra_op_threads=-1", f"--output_dir={tmp_path / 'run'}")
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "intra_op_threads" in line and "-1" in line, result.stderr
    assert not (tmp_path / "run").exists()


SCRIPT = r"""
import sys
import tensorflow as tf
from metasearch import threads
from metasearch.config import RunConfig
from metasearch.errors import UsageError

# Before TensorFlow starts: MAML on 5-way 1-shot 15-query episodes gets one thread per op.
assert threads.configure_run(RunConfig(plugin="maml", n_query=15)) == 1
assert tf.config.threading.get_intra_op_parallelism_threads() == 1
tf.constant(1.0) + 1.0  # TensorFlow has started
# Too late: auto keeps what it started with, an explicit other count is refused.
assert threads.configure_run(RunConfig(plugin="protonet")) == 1
assert threads.configure(1, explicit=True) == 1
try:
    threads.configure(2, explicit=True)
except UsageError as error:
    print(error)
else:
    sys.exit("an explicit count after TensorFlow started was not refused")
"""


def test_a_fresh_process_gets_one_thread_per_op_for_maml_and_refuses_a_late_explicit_count():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("--intra_op_threads=2: TensorFlow has already started with 1 "), line


@pytest.mark.slow
def test_a_maml_search_says_it_runs_one_thread_per_op(tmp_path):
    from cli_support import run_cli

    out = tmp_path / "run"
    result = run_cli(*TINY, "--plugin=maml", "--max_trials=1", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    header = result.stdout.splitlines()[0]
    assert header.endswith(", 1 thread per op"), header
    # `--precision=auto` resolved for this machine, and the run records what it chose.
    chosen = "bfloat16" if native_bfloat16_cpu() else "float32"
    assert json.loads((out / "config.json").read_text())["config"]["precision"] == chosen
    assert f"--precision={chosen}\n" in (out / "flags.txt").read_text()
    assert ("bfloat16" in header) == (chosen == "bfloat16"), header
