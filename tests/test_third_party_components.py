"""A search space and a data set from packages of their own get CLI flags from their options.

Each package is pip-installed into a private folder; nothing in metasearch
names them. Their declared options become `--toy_space_width`,
`--toy_dataset_classes`, ... and reach the components.
"""

import pytest

from cli_support import pip_install_fixture, python_path_env, read_json, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("third_party_components")]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Installs both packages, each into a folder of its own; the environment to see them."""
    build = tmp_path_factory.mktemp("build")
    folders = [
        pip_install_fixture(package, tmp_path_factory.mktemp(package), build)
        for package in ("toy_search_space", "toy_dataset")
    ]
    return python_path_env(*folders)


def test_their_options_are_flags_and_reach_the_components(env, tmp_path):
    out = tmp_path / "out"
    result = run_cli(
        "--search_space=toy_space",
        "--toy_space_width=6",
        "--toy_space_activation=tanh",
        "--dataset=toy_dataset",
        "--toy_dataset_classes=40",
        "--toy_dataset_noise=0.05",
        "--max_trials=1",
        "--episodes_per_trial=4",
        "--eval_episodes=2",
        "--n_query=2",
        "--image_size=12",
        "--noprogress",
        f"--output_dir={out}",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = read_json(out / "config.json")["config"]
    assert config["space_options"] == {"width": 6, "activation": "tanh"}
    assert config["dataset_options"] == {"classes": 40, "images_per_class": 6, "noise": 0.05}
    # The data set was generated with 40 classes (60/20/20), the space built 6 wide.
    assert read_json(out / "dataset.json")["classes"] == {"train": 24, "val": 8, "test": 8}
    trial = read_json(out / "results.json")["trials"][0]
    assert trial["status"] == "COMPLETED"
    assert trial["architecture"].endswith("x6-tanh")
    flags_text = (out / "flags.txt").read_text()
    assert "--toy_space_width=6" in flags_text and "--toy_dataset_classes=40" in flags_text

    # The flags are listed by --helpfull, and one away from its default is refused
    # while another component of its kind is in use.
    helpfull = run_cli("--helpfull", env=env)
    assert helpfull.returncode == 0
    assert "--toy_space_width" in helpfull.stdout and "--toy_dataset_noise" in helpfull.stdout
    refused = run_cli("--toy_dataset_classes=50", f"--output_dir={tmp_path / 'other'}", env=env)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "metasearch: error: --toy_dataset_classes: applies only with --dataset=toy_dataset"
    )
    bad = run_cli(
        "--dataset=toy_dataset",
        "--toy_dataset_classes=3",
        f"--output_dir={tmp_path / 'x'}",
        env=env,
    )
    assert bad.returncode == 2
    assert "--toy_dataset_classes" in bad.stderr.strip().splitlines()[-1]
