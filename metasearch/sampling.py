"""`metasearch sample`: new images of held-out classes from a generative learner.

A generative learner (`MetaLearner.GENERATIVE`, e.g. `neural_statistician`)
turns a handful of images of a class into new images of that class. This
module draws K images of each of a few meta-test classes of a finished run,
asks the trained learner for new ones and writes a PNG grid: one row per
class, the K given images on the left, a gap, then the generated ones.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import tensorflow as tf

from metasearch import graphs
from metasearch.api import MetaLearner
from metasearch.data.pipeline import EpisodeImages
from metasearch.data.preprocess import normalize
from metasearch.errors import UsageError
from metasearch.rundir import FinishedRun

# Pixels between images and between the given and the generated images.
PADDING = 2
GAP = 8
SCALE = 2


def generate_images(
    learner: MetaLearner,
    class_images: np.ndarray,
    normalization: tuple[float, float],
    samples_per_class: int,
    seed: int,
) -> np.ndarray:
    """New images `[classes, samples, h, w, c]` in [0, 1] for images `[classes, k, h, w, c]`."""
    mean, std = normalization
    generate = graphs.function(
        lambda images, seed_pair: learner.generate(
            normalize(images, mean, std), samples_per_class, seed_pair
        )
    )
    generated = []
    for index, images in enumerate(class_images):
        seed_pair = tf.constant([seed, index], tf.int32)
        output = generate(tf.constant(images, tf.float32), seed_pair).numpy()
        generated.append(np.clip(output * std + mean, 0.0, 1.0))
    return np.stack(generated)


def grid_image(given: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """One uint8 RGB picture: per row, the given images, a gap, the generated ones."""
    classes, shots, height, width, channels = given.shape
    samples = generated.shape[1]
    cell_h, cell_w = height + PADDING, width + PADDING
    total_w = PADDING + shots * cell_w + GAP + samples * cell_w
    canvas = np.full((PADDING + classes * cell_h, total_w, 3), 0.85, np.float32)
    for row in range(classes):
        top = PADDING + row * cell_h
        for column in range(shots + samples):
            image = given[row, column] if column < shots else generated[row, column - shots]
            left = PADDING + column * cell_w + (GAP if column >= shots else 0)
            rgb = np.repeat(image, 3, axis=-1) if channels == 1 else image[..., :3]
            canvas[top : top + height, left : left + width] = rgb
    canvas = np.kron(canvas, np.ones((SCALE, SCALE, 1), np.float32))
    return np.round(canvas * 255).astype(np.uint8)


def write_png(picture: np.ndarray, path: str) -> str:
    """Writes `picture` atomically (a temporary file renamed into place); returns the path."""
    from matplotlib.image import imsave

    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".png", dir=os.path.dirname(path))
    os.close(handle)
    try:
        imsave(temporary, picture, format="png")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def sample_run(
    output_dir: str,
    trial_id: str,
    png_path: str | None,
    classes: int,
    shots: int,
    samples_per_class: int,
    seed: int,
    data_dir: str | None = None,
) -> str:
    """Writes the sample grid of a run's trial (`best` or an id); returns the PNG's path.

    The given images are the first `shots` images of `classes` meta-test
    classes chosen with `seed`; `data_dir` overrides the run's `--data_dir`.
    """
    for flag, value in (("sample_classes", classes), ("sample_shots", shots)):
        if value < 1:
            raise UsageError(f"--{flag}: must be at least 1, got {value}")
    if samples_per_class < 1:
        raise UsageError(f"--samples_per_class: must be at least 1, got {samples_per_class}")
    run = FinishedRun(output_dir)
    if not run.components.plugin.GENERATIVE:
        raise UsageError(
            f"--output_dir: the run's plugin {run.config['plugin']!r} does not generate images; "
            "sample needs a generative plugin such as neural_statistician"
        )
    chosen = run.trial(trial_id)
    dataset = run.components.dataset(run.dataset_options(data_dir))
    test = dataset.load().test
    if shots > max(test.counts):
        raise UsageError(f"--sample_shots: {shots} exceeds the {max(test.counts)} images per class")
    # Classes with fewer than `shots` images are left out; only the picked ones are decoded.
    images = EpisodeImages(
        test, run.config["image_size"], int(dataset.channels), shots, cache_bytes=0
    )
    rng = np.random.default_rng(seed)
    count = min(classes, images.num_classes)
    picked = np.sort(rng.choice(images.num_classes, count, replace=False))
    flat = images.offsets[picked][:, None] + np.arange(shots)[None, :]
    given = images.images(tf.constant(flat)).numpy()
    learner, _ = run.rebuild(chosen)
    normalization = tuple(run.data["normalization"])
    generated = generate_images(learner, given, normalization, samples_per_class, seed)
    name = "best" if trial_id == "best" else f"trial_{chosen['trial_id']}"
    target = png_path or os.path.join(output_dir, f"samples_{name}.png")
    return write_png(grid_image(given, generated), target)
