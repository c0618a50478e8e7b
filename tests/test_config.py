"""A run's flags.txt compared with a command: what a rebuilt config.json relies on."""

import pytest

from metasearch.config import RunConfig, flagfile_difference, flagfile_text


def test_a_flagfile_agrees_with_its_config_whatever_may_change_between_reruns():
    config = RunConfig(n_way=3, fix_hparams={"conv_blocks/depth": 3}, max_trials=4)
    stored = flagfile_text(config)
    assert flagfile_difference(stored, config) is None
    rerun = config.replace(max_trials=9, output_dir="elsewhere", progress=False, jit_compile="true")
    assert flagfile_difference(stored, rerun) is None
    assert flagfile_difference(flagfile_text(rerun), config) is None  # --noprogress


def test_a_difference_in_the_runs_identity_is_described():
    stored = flagfile_text(RunConfig(n_way=3))
    assert (
        flagfile_difference(stored, RunConfig(n_way=5)) == "--n_way: 3 -> 5; --train_n_way: 3 -> 5"
    )
    other = RunConfig(n_way=3, fix_hparams={"protonet/metric": "cosine"})
    assert flagfile_difference(stored, other) == "--fix_hparams: (unset) -> protonet/metric=cosine"


@pytest.mark.parametrize("cut", ["mid-line", "at a line end"])
def test_a_flagfile_cut_short_cannot_say(cut):
    stored = flagfile_text(RunConfig())
    if cut == "mid-line":
        stored = stored[: len(stored) // 2]
    else:
        stored = "".join(stored.splitlines(keepends=True)[:5])
    with pytest.raises(ValueError, match="cut short"):
        flagfile_difference(stored, RunConfig())


def test_a_flagfile_from_before_newer_settings_agrees_with_their_defaults():
    stored = flagfile_text(RunConfig())
    newer = ("--racing", "--noracing", "--start_from_default", "--devices", "--final_", "--test_")
    older = "".join(line for line in stored.splitlines(keepends=True) if not line.startswith(newer))
    assert older != stored
    assert flagfile_difference(older, RunConfig()) is None
    assert flagfile_difference(older, RunConfig(racing="paired")) == "--racing: none -> paired"
