"""The Python API: a search from a program that has absl flags of its own."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

# A user's absl program defining `--seed` and `--output_dir` itself, which would
# clash (DuplicateFlagError) if importing or running metasearch defined flags.
PROGRAM = textwrap.dedent(
    """
    import json
    import sys

    from absl import app, flags

    flags.DEFINE_integer("seed", 3, "the user's own seed flag")
    flags.DEFINE_string("output_dir", None, "the user's own output flag")
    FLAGS = flags.FLAGS


    def main(argv):
        import gc

        import metasearch
        from metasearch.errors import UsageError

        config = metasearch.RunConfig(
            output_dir=FLAGS.output_dir,
            seed=FLAGS.seed,
            max_trials=2,
            episodes_per_trial=6,
            eval_episodes=3,
            test_episodes=5,
            n_query=2,
            progress=False,
            dataset_options={"classes": 60},
            fix_hparams={"conv_blocks/depth": 3, "conv_blocks/filters": 32},
        )
        result = metasearch.search(config, out=sys.stderr)
        run = metasearch.load_run(FLAGS.output_dir)
        learner, task = run.rebuild(run.trial("best"))
        try:
            metasearch.search(config.replace(dataset_options={"clases": 60}), out=sys.stderr)
            refused = None
        except UsageError as error:
            refused = str(error)
        print(json.dumps({
            "trials": [r["status"] for r in result.results],
            "best": result.best_trial["trial_id"],
            "export_dir": result.export_dir,
            "leaderboard": result.leaderboard.splitlines()[0],
            # "best" of a run with a final phase is its final learner, from the best trial.
            "run_best": run.trial("best")["source_trial"],
            "n_way": task.n_way,
            "weights": len(learner.weights),
            "metasearch_flags": sorted(
                name for name in ("plugin", "dataset", "nasnet_blocks", "glyphs_classes")
                if name in FLAGS
            ),
            "seed": run.config["seed"],
            "refused": refused,
            # The search froze the heap of its start while trials ran (`gc.freeze`).
            "frozen_after": gc.get_freeze_count(),
        }))


    app.run(main)
    """
)


def test_search_from_a_program_with_its_own_seed_and_output_dir_flags(tmp_path):
    script = tmp_path / "user_program.py"
    script.write_text(PROGRAM)
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(script), "--seed=5", f"--output_dir={out}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["trials"] == ["COMPLETED", "COMPLETED"]
    assert report["best"] == report["run_best"]
    assert report["export_dir"] == str(out / "export" / "best_learner")
    assert (out / "export" / "best_learner" / "saved_model.pb").exists()
    assert report["leaderboard"].startswith("Leaderboard: protonet on glyphs, 5-way 1-shot")
    assert report["n_way"] == 5 and report["weights"] > 0
    # The user's flags are theirs: metasearch defined none, and used the values given.
    assert report["metasearch_flags"] == []
    assert report["seed"] == 5
    assert report["frozen_after"] == 0  # a search leaves nothing of the program frozen
    assert report["refused"] == (
        "--dataset=glyphs: unknown options clases; known: classes, images_per_class"
    )
    # The run repeats from the CLI with the flagfile the library wrote.
    assert f"--output_dir={out}" in (out / "flags.txt").read_text()
