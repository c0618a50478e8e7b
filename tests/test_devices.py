"""`--devices`: a meta-batch split across devices gives one device's results.

Logical CPU devices can only be made before TensorFlow initialises, which this
test process did long ago, so the training comparison runs in a fresh process.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from cli_support import REPO, run_cli
from metasearch.config import RunConfig, flagfile_text
from metasearch.errors import UsageError

# Trains the same learners from the same weights on the same episodes on one
# device and mirrored over two logical CPU devices; saves what to compare.
SCRIPT = textwrap.dedent(
    """
    import sys
    from metasearch import devices

    assert devices.configure(2) == ["/cpu:0", "/cpu:1"]  # before TensorFlow starts

    import keras
    import numpy as np
    import tensorflow as tf

    from metasearch import registry, testing
    from metasearch.api import Episode
    from metasearch.errors import UsageError
    from metasearch.search_spaces.conv_blocks import ConvBlocks
    from metasearch.training import MetaTrainer

    assert len(tf.config.list_logical_devices("CPU")) == 2
    task = testing.tiny_task(image_size=14)
    rng = np.random.default_rng(0)

    def episode():
        def draw(count):
            labels = np.repeat(np.arange(task.n_way), count).astype(np.int32)
            images = rng.uniform(size=(len(labels), 14, 14, 1)).astype(np.float32)
            return tf.constant(images), tf.constant(labels)

        return Episode(*draw(task.k_shot), *draw(task.n_query))

    STEPS, META_BATCH = 5, 4
    episodes = [episode() for _ in range(STEPS * META_BATCH)]

    def bias_free():
        # conv_blocks' convolutions have a bias that batch norm cancels: its
        # gradient is rounding noise, which Adam scales up to full steps, so it
        # (and the running mean that follows it) differs between any two sums
        # of the same gradients. Without it every weight is comparable.
        layers = []
        for index in range(2):
            layers += [
                keras.layers.Conv2D(8, 3, padding="same", use_bias=False),
                keras.layers.BatchNormalization(momentum=0.9),
                keras.layers.ReLU(),
                keras.layers.MaxPooling2D(2),
            ]
        return keras.Sequential([keras.Input(task.image_shape), *layers, keras.layers.Flatten()])

    def conv_blocks():
        return ConvBlocks({}).build({"depth": 2, "filters": 8, "growth": 1.0}, task.image_shape)

    def train(plugin, backbone, devices):
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        plugin = registry.load("plugin", plugin)
        learner = plugin(backbone(), plugin.default_config(), task)
        trainer = MetaTrainer(
            learner, (0.5, 0.3), 1e-2, STEPS, jit_compile=False,
            meta_batch_size=META_BATCH, devices=devices,
        )
        trainer.build(episodes[0])
        curve = []
        trainer.train(
            iter(episodes), STEPS, check_every=1,
            on_progress=lambda step, loss, metric: curve.append([loss, metric]),
        )
        values = trainer.checkpoint_variables()
        return {
            "curve": np.array(curve),
            "names": [v.path for v in values["learner"]],
            "learner": [v.numpy() for v in values["learner"]],
            "optimizer": [v.numpy() for v in values["optimizer"]],
        }

    results = {}
    for name, plugin, backbone in [
        ("protonet", "protonet", bias_free),
        ("maml", "maml", bias_free),
        ("conv_blocks", "protonet", conv_blocks),
    ]:
        for count in (1, 2):
            run = train(plugin, backbone, count)
            results[f"{name}_{count}_curve"] = run["curve"]
            for group in ("learner", "optimizer"):
                for index, value in enumerate(run[group]):
                    results[f"{name}_{count}_{group}_{index}"] = value
            results[f"{name}_names"] = np.array(run["names"])

    # Too late to split the CPU further once TensorFlow runs; the same split is fine.
    try:
        devices.configure(3)
    except UsageError as error:
        results["too_late"] = np.array(str(error))
    assert devices.configure(2) == ["/cpu:0", "/cpu:1"]
    np.savez(sys.argv[1], **results)
    """
)


def _close(got, want, label, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=label)


@pytest.mark.slow
def test_a_meta_batch_mirrored_over_two_cpu_devices_trains_as_one_device(tmp_path):
    out = tmp_path / "results.npz"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = np.load(out)
    for name in ("protonet", "maml", "conv_blocks"):
        # Per-step losses and accuracies (the loss is not trivially small).
        curve = data[f"{name}_1_curve"]
        assert curve.shape == (5, 2) and curve[0, 0] > 0.1
        _close(data[f"{name}_2_curve"], curve, f"{name} curve")
        names = list(data[f"{name}_names"])
        for group in ("learner", "optimizer"):
            index = 0
            while f"{name}_1_{group}_{index}" in data:
                one, two = data[f"{name}_1_{group}_{index}"], data[f"{name}_2_{group}_{index}"]
                label = f"{name} {group} {index} {names[index] if group == 'learner' else ''}"
                index += 1
                if name == "conv_blocks":
                    # The bias batch norm cancels, and what follows it (see SCRIPT):
                    # Adam turns their rounding-noise gradients into full steps.
                    if group == "optimizer" or "conv/bias" in label or "moving_mean" in label:
                        continue
                if group == "optimizer":
                    # Adam's moments average raw gradients, sums of many terms added in
                    # another order: their rounding is relative to the terms, not the sum.
                    _close(two, one, label, rtol=1e-4, atol=1e-5)
                else:
                    _close(two, one, label)
            assert index > 3, (name, group)
    assert "--devices=3" in str(data["too_late"]) and "\n" not in str(data["too_late"])


def test_devices_must_divide_the_meta_batch():
    assert RunConfig(devices=2, meta_batch_size=4).devices == 2
    with pytest.raises(UsageError, match=r"--devices=2: --meta_batch_size=3 must be a multiple"):
        RunConfig(devices=2, meta_batch_size=3)
    with pytest.raises(UsageError, match="--devices=0"):
        RunConfig(devices=0)
    # Not part of the identity: the results are one device's.
    assert "devices" not in RunConfig().identity()
    assert "--devices=2\n" in flagfile_text(RunConfig(devices=2, meta_batch_size=2))


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="GPUs: no CPU split")
def test_splitting_the_cpu_after_tensorflow_started_is_refused_in_one_line():
    from metasearch import devices

    tf.constant(1.0) + 1.0  # TensorFlow has started its devices
    if len(tf.config.list_logical_devices("CPU")) >= 5:
        pytest.skip("this process already has 5 CPU devices")
    with pytest.raises(UsageError, match=r"^--devices=5: TensorFlow has already started") as info:
        devices.configure(5)
    assert "\n" not in str(info.value)
    assert devices.configure(1) == []


def test_the_cli_refuses_devices_that_do_not_divide_the_meta_batch(tmp_path):
    result = run_cli("--devices=2", "--meta_batch_size=3", f"--output_dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "--devices=2" in lines[-1] and "--meta_batch_size=3" in lines[-1], lines
    assert not (tmp_path / "run").exists()
