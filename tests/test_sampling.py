"""`metasearch sample`: the picture grid and the calls into a generative learner."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from matplotlib.image import imread

from cli_support import TINY, read_json, run_cli_in_process
from metasearch import sampling


class _MeanLearner:
    """A stand-in generative learner: the class's mean image plus seeded noise."""

    def generate(self, support_images, num_samples, seed):
        mean = tf.reduce_mean(support_images, axis=0, keepdims=True)
        noise = tf.random.stateless_normal(
            tf.concat([[num_samples], tf.shape(mean)[1:]], 0), seed=seed
        )
        return tf.repeat(mean, num_samples, axis=0) + 0.1 * noise


def test_generate_images_undoes_normalisation_and_is_seeded():
    rng = np.random.default_rng(0)
    given = rng.uniform(0.2, 0.8, size=(2, 3, 6, 6, 1)).astype(np.float32)
    first = sampling.generate_images(_MeanLearner(), given, (0.5, 0.25), 4, seed=7)
    again = sampling.generate_images(_MeanLearner(), given, (0.5, 0.25), 4, seed=7)
    other = sampling.generate_images(_MeanLearner(), given, (0.5, 0.25), 4, seed=8)
    assert first.shape == (2, 4, 6, 6, 1)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert first.min() >= 0.0 and first.max() <= 1.0
    # Noise of 0.1 in normalised units is 0.025 in pixels: samples sit near the class mean.
    np.testing.assert_allclose(first.mean(axis=1), given.mean(axis=1), atol=0.05)
    # Each class gets its own noise (the seed pair includes the class index).
    assert not np.allclose(first[0] - given[0].mean(0), first[1] - given[1].mean(0))


def test_grid_puts_given_images_left_of_the_gap_and_samples_right():
    given = np.zeros((2, 3, 4, 5, 1), np.float32)
    generated = np.ones((2, 2, 4, 5, 1), np.float32)
    given[1, 2] = 0.5
    picture = sampling.grid_image(given, generated)
    cell_h, cell_w, s = 4 + sampling.PADDING, 5 + sampling.PADDING, sampling.SCALE
    height = sampling.PADDING + 2 * cell_h
    width = sampling.PADDING + 3 * cell_w + sampling.GAP + 2 * cell_w
    assert picture.shape == (height * s, width * s, 3) and picture.dtype == np.uint8

    def pixel(row, column):
        top = sampling.PADDING + row * cell_h
        left = sampling.PADDING + column * cell_w + (sampling.GAP if column >= 3 else 0)
        return picture[(top + 1) * s, (left + 1) * s]

    assert tuple(pixel(0, 0)) == (0, 0, 0)
    assert tuple(pixel(1, 2)) == (128, 128, 128)
    assert tuple(pixel(1, 3)) == (255, 255, 255)
    # The gap between the given and the generated images is background.
    gap_left = sampling.PADDING + 3 * cell_w
    assert tuple(picture[(sampling.PADDING + 1) * s, (gap_left + 2) * s]) == (217, 217, 217)


def test_write_png_is_atomic_and_valid(tmp_path):
    picture = np.zeros((8, 8, 3), np.uint8)
    path = sampling.write_png(picture, str(tmp_path / "deep" / "grid.png"))
    assert open(path, "rb").read()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["grid.png"]


PLAIN_TF_SAMPLE = """
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
images = tf.constant(np.random.default_rng(0).uniform(size=(3, 40, 40, 1)).astype("float32"))
sample = model.signatures["sample"]
first = sample(images=images, num_samples=tf.constant(4), seed=tf.constant([1, 2]))["images"]
again = sample(images=images, num_samples=tf.constant(4), seed=tf.constant([1, 2]))["images"]
other = sample(images=images, num_samples=tf.constant(4), seed=tf.constant([3, 4]))["images"]
assert not {"metasearch", "keras_tuner"} & set(sys.modules)
print(json.dumps({
    "shape": first.shape.as_list(),
    "repeatable": bool(np.array_equal(first.numpy(), again.numpy())),
    "seeded": bool(not np.allclose(first.numpy(), other.numpy())),
    "range": [float(tf.reduce_min(first)), float(tf.reduce_max(first))],
}))
"""


@pytest.mark.slow
def test_neural_statistician_search_then_sample_png_and_exported_sample(tmp_path):
    out = tmp_path / "run"
    result = run_cli_in_process(
        *TINY, "--plugin=neural_statistician", "--max_trials=1", f"--output_dir={out}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    png = tmp_path / "grid.png"
    # In process: the search above already paid for a fresh process's TensorFlow start.
    sampled = run_cli_in_process(
        "sample",
        f"--output_dir={out}",
        f"--sample_png={png}",
        "--sample_classes=2",
        "--sample_shots=3",
        "--samples_per_class=4",
    )
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert str(png) in sampled.stdout
    picture = imread(png)
    cell = 28 + sampling.PADDING
    expected = (
        (sampling.PADDING + 2 * cell) * sampling.SCALE,
        (sampling.PADDING + 7 * cell + sampling.GAP) * sampling.SCALE,
    )
    assert picture.shape[:2] == expected
    # Generated images are images, not a blank: they vary.
    assert float(np.std(picture[..., 0])) > 0.01

    # The exported learner samples in a process that imports TensorFlow only.
    export = out / "export" / "best_learner"
    metadata = read_json(export / "assets" / "metasearch.json")
    assert "sample" in metadata["signatures"]
    plain = subprocess.run(
        [sys.executable, "-c", PLAIN_TF_SAMPLE, str(export)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    report = json.loads(plain.stdout.strip().splitlines()[-1])
    assert report["shape"] == [4, 28, 28, 1]
    assert report["repeatable"] and report["seeded"]
    assert 0.0 <= report["range"][0] <= report["range"][1] <= 1.0
