"""A NASNet search on Omniglot, then its discovered cell loaded by plain TensorFlow."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cli_support import read_json, run_cli

pytestmark = pytest.mark.slow

PLAIN_TF_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cell_dir, out_path = sys.argv[1:]
    loaded = tf.saved_model.load(cell_dir)
    outputs = {}
    for name, function in loaded.signatures.items():
        _, kwargs = function.structured_input_signature
        rng = np.random.default_rng(0)
        inputs = {
            key: tf.constant(rng.normal(size=[2, *spec.shape[1:]]).astype("float32"))
            for key, spec in kwargs.items()
        }
        outputs[name] = {
            "inputs": {k: v.numpy().tolist() for k, v in inputs.items()},
            "output": function(**inputs)["output"].numpy().tolist(),
        }
    genotype = json.loads(loaded.genotype().numpy().decode())
    assert set(sys.modules) & {"metasearch", "keras_tuner"} == set(), "imported more than TF"
    json.dump({"outputs": outputs, "genotype": genotype}, open(out_path, "w"))
    """
)


def test_nasnet_search_on_omniglot_then_cell_export_loads_in_plain_tensorflow(
    omniglot_dir, tmp_path
):
    out = tmp_path / "run"
    result = run_cli(
        "--search_space=nasnet",
        "--plugin=protonet",
        "--dataset=omniglot",
        f"--data_dir={omniglot_dir}",
        "--omniglot_train=images_background_small1/Latin,images_background_small1/Greek",
        "--omniglot_val=images_background_small1/Korean",
        "--omniglot_test=images_background_small2/Sanskrit",
        "--max_trials=1",
        "--episodes_per_trial=4",
        "--eval_episodes=2",
        "--n_query=2",
        "--nasnet_blocks=2",
        "--nasnet_cells_per_stage=1",
        "--nasnet_filters=8",
        # The cell export is under test, not the final phase (tests/test_final.py).
        "--final_top_k=0",
        "--test_episodes=10",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Best cell exported" in result.stdout
    assert (out / "search_progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The search exported the best cell itself, through the code `metasearch export
    # --what=cell` runs (controller.export_kinds).
    cell_dir = out / "export" / "best_cell"
    genotype = json.loads((cell_dir / "genotype.json").read_text())
    best = read_json(out / "results.json")["best_trial"]
    record = read_json(out / "keras_tuner" / f"trial_{best}" / "metasearch_trial.json")
    assert genotype == record["genotype"]
    for picture in ("normal.png", "reduction.png"):
        assert (cell_dir / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = tmp_path / "plain.json"
    plain = subprocess.run(
        [sys.executable, "-c", PLAIN_TF_SCRIPT, str(cell_dir), str(report)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    loaded = json.loads(report.read_text())
    assert loaded["genotype"] == genotype
    assert {"normal", "reduction"} <= set(loaded["outputs"])

    # The same inputs through the trained cell rebuilt in process give the same outputs.
    from metasearch import controller

    # "best" is the final phase's learner (the best trial as trained: --final_top_k=0).
    learner, space, architecture = controller.restore_trial(str(out), "best")
    cells = space.cells(architecture, learner.backbone)
    for name in ("normal", "reduction"):
        inputs = loaded["outputs"][name]["inputs"]
        expected = cells[name](_ordered(cells[name], inputs), training=False)
        np.testing.assert_allclose(
            np.array(loaded["outputs"][name]["output"]), np.asarray(expected), atol=1e-4
        )


def _ordered(cell, inputs):
    from metasearch.export import cell_input_names

    tensors = [np.array(inputs[name], np.float32) for name in cell_input_names(cell)]
    return tensors if len(tensors) > 1 else tensors[0]
