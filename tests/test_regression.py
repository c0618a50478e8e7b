"""A regression search end to end: sinusoid tasks, the MLP space, a MAML-family learner."""

import numpy as np
import pytest

from cli_support import read_json, run_cli, run_cli_in_process

pytestmark = pytest.mark.slow

SINE = [
    "--dataset=sinusoid",
    "--search_space=mlp",
    "--k_shot=5",
    "--n_query=5",
    "--episodes_per_trial=16",
    "--meta_batch_size=4",
    "--eval_episodes=8",
]


def test_sinusoid_search_minimises_mse_and_exports_adapt_and_predict(tmp_path):
    out = tmp_path / "out"
    result = run_cli(
        *SINE,
        "--plugin=metasgd",
        "--max_trials=2",
        "--fix_hparams=mlp/depth=1,mlp/units=40,mlp/activation=relu,train/learning_rate=0.001,"
        "metasgd/inner_steps=1,metasgd/eval_inner_steps=5,metasgd/inner_learning_rate=0.01",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = read_json(out / "results.json")
    assert results["objective"] == "val_mse"
    trials = [t for t in results["trials"] if t["status"] == "COMPLETED"]
    assert len(trials) == 2 and all(t["val_mse"] > 0 for t in trials)
    best = min(trials, key=lambda t: t["val_mse"])
    assert results["best_trial"] == best["trial_id"]
    board = (out / "leaderboard.txt").read_text()
    assert "mean squared error" in board and "val MSE" in board
    assert read_json(out / "dataset.json")["kind"] == "regression"
    assert "--meta_batch_size=4" in (out / "flags.txt").read_text()

    import tensorflow as tf

    model = tf.saved_model.load(str(out / "export" / "best_learner"))
    assert "adapt_and_predict" in model.signatures and "few_shot" not in model.signatures
    x = np.linspace(-5, 5, 5, dtype=np.float32)[:, None]
    predictions = model.signatures["adapt_and_predict"](
        support_x=x, support_y=np.sin(x), query_x=np.zeros([7, 1], np.float32)
    )["predictions"]
    assert predictions.shape == (7, 1)


def test_a_classification_only_plugin_refuses_a_regression_data_set(tmp_path):
    result = run_cli_in_process(*SINE, "--plugin=protonet", f"--output_dir={tmp_path / 'o'}")
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert "--plugin=protonet" in message and "regression" in message
    assert not (tmp_path / "o" / "config.json").exists()
