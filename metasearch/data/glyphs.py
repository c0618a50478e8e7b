"""`glyphs`: a built-in, procedurally generated handwritten-character data set.

Each class is a character made of one to four pen strokes (smooth curves
through random control points, some closing into loops), centred and scaled
like Omniglot's characters; each of its images is the same character
redrawn with a shaky hand: control points jittered, the whole glyph slightly
rotated, scaled, sheared and shifted, and the pen width varied. Drawn like
Omniglot's files: dark ink (0) on a white background (1). No files, no
network: classes are generated from the seed, deterministically.
"""

from __future__ import annotations

import hashlib

import numpy as np

from metasearch.api import ClassSet, ClassSplits, Dataset
from metasearch.data import cache
from metasearch.errors import UsageError
from metasearch.options import Option

DEFAULT_CLASSES = 1200
IMAGES_PER_CLASS = 20
# Fractions of classes in the meta-train / meta-validation / meta-test sets.
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

MAX_STROKES = 4
_POINTS_PER_STROKE = 10
# Unused stroke slots sit far outside the canvas, so they never draw.
_FAR_AWAY = 50.0


def _stroke_skeleton(rng: np.random.Generator) -> np.ndarray:
    """Control points `[MAX_STROKES, 4, 2]` of one character, centred in the unit square.

    Strokes are cubic Bezier curves that wander from a start point; about one
    in four closes on itself (a loop, like o or 9). The character is then
    scaled to a random size and centred, as Omniglot's drawers did.
    """
    num_strokes = rng.integers(1, MAX_STROKES + 1)
    strokes = []
    for index in range(num_strokes):
        start = rng.uniform(0.25, 0.75, size=2) if index else np.array([0.5, 0.5])
        steps = rng.normal(0.0, 0.25, size=(3, 2))
        points = start + np.cumsum(steps, axis=0)
        if rng.uniform() < 0.25:
            points[2] = start + rng.normal(0.0, 0.03, size=2)
        strokes.append(np.concatenate([start[None], points], axis=0))
    used = np.stack(strokes)
    low, high = used.reshape(-1, 2).min(0), used.reshape(-1, 2).max(0)
    size = rng.uniform(0.5, 0.78)
    scale = size / max(float((high - low).max()), 1e-3)
    used = (used - (low + high) / 2) * scale + 0.5
    skeleton = np.full((MAX_STROKES, 4, 2), _FAR_AWAY)
    skeleton[:num_strokes] = used
    return skeleton


def _drawings(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Control points `[count, MAX_STROKES, 4, 2]` and pen widths `[count]` of one character."""
    skeleton = _stroke_skeleton(rng)
    jitter = rng.normal(0.0, 0.035, size=(count, *skeleton.shape))
    control = skeleton[None] + jitter
    # A per-drawing affine map: rotation, scale, shear and shift about the centre.
    angle = rng.normal(0.0, 0.14, size=count)
    scale = rng.uniform(0.85, 1.1, size=(count, 2))
    shear = rng.normal(0.0, 0.1, size=count)
    shift = rng.normal(0.0, 0.03, size=(count, 2))
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = np.stack(
        [
            np.stack([cos * scale[:, 0], -sin + shear], -1),
            np.stack([sin, cos * scale[:, 1]], -1),
        ],
        axis=1,
    )
    control = np.einsum("nij,nspj->nspi", matrix, control - 0.5) + 0.5 + shift[:, None, None, :]
    width = rng.uniform(0.022, 0.034) * rng.uniform(0.85, 1.15, size=count)
    return control.astype(np.float32), width.astype(np.float32)


def _rasterize(control: np.ndarray, width: np.ndarray, size: int) -> np.ndarray:
    """Draws cubic Bezier strokes `[n, S, 4, 2]` with pen `width [n]`: `[n, size, size, 1]`."""
    import tensorflow as tf

    t = tf.linspace(0.0, 1.0, _POINTS_PER_STROKE)[:, None]
    control = tf.constant(control)
    p0, p1, p2, p3 = (control[:, :, i, None, :] for i in range(4))
    curves = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
    n = control.shape[0]
    starts = tf.reshape(curves[:, :, :-1], [n, 1, -1, 2])
    seg = tf.reshape(curves[:, :, 1:], [n, 1, -1, 2]) - starts
    coords = (tf.range(size, dtype=tf.float32) + 0.5) / size
    gx, gy = tf.meshgrid(coords, coords, indexing="xy")
    grid = tf.reshape(tf.stack([gx, gy], -1), [1, -1, 1, 2])
    rel = grid - starts  # [n, HW, segments, 2]
    along = tf.clip_by_value(
        tf.reduce_sum(rel * seg, -1) / tf.maximum(tf.reduce_sum(seg * seg, -1), 1e-12), 0.0, 1.0
    )
    offset = rel - along[..., None] * seg
    dist = tf.sqrt(tf.reduce_min(tf.reduce_sum(offset * offset, -1), -1))  # [n, HW]
    ink = tf.clip_by_value((width[:, None] - dist) * size + 0.5, 0.0, 1.0)
    return tf.reshape(1.0 - ink, [n, size, size, 1]).numpy()


def generate(
    num_classes: int, size: int, seed: int, images_per_class: int = IMAGES_PER_CLASS
) -> np.ndarray:
    """All classes `[num_classes, images_per_class, size, size, 1]` float32, from the seed."""
    control = np.empty((num_classes, images_per_class, MAX_STROKES, 4, 2), np.float32)
    width = np.empty((num_classes, images_per_class), np.float32)
    for index in range(num_classes):
        control[index], width[index] = _drawings(
            np.random.default_rng([seed, index]), images_per_class
        )
    control = control.reshape(-1, MAX_STROKES, 4, 2)
    width = width.reshape(-1)
    # Chunks bound each [n, pixels, segments, 2] temporary to about 64 MB: rasterizing
    # is what set the peak memory of a whole search (3.9 GB at 2 million pixels a chunk).
    segments = MAX_STROKES * (_POINTS_PER_STROKE - 1)
    chunk = max(1, 8_000_000 // (size * size * segments * 2))
    images = np.concatenate(
        [
            _rasterize(control[i : i + chunk], width[i : i + chunk], size)
            for i in range(0, len(width), chunk)
        ]
    )
    return images.reshape(num_classes, images_per_class, size, size, 1)


def _code_version() -> str:
    """A digest of this module's source: a changed drawing never meets an old cache entry."""
    with open(__file__, "rb") as source:
        return hashlib.sha256(source.read()).hexdigest()


def cached_generate(
    num_classes: int, size: int, seed: int, images_per_class: int = IMAGES_PER_CLASS
) -> np.ndarray:
    """`generate(...)`, through the on-disk cache (`metasearch.data.cache`)."""
    import tensorflow as tf  # its kernels draw the images: part of the key

    shape = (num_classes, images_per_class, size, size, 1)
    name = cache.entry_name("glyphs", shape, seed, _code_version(), np.__version__, tf.__version__)
    images = cache.cached_array(name, lambda: generate(num_classes, size, seed, images_per_class))
    if images.shape != shape or images.dtype != np.float32:  # a foreign file: draw again
        images = generate(num_classes, size, seed, images_per_class)
    return images


class Glyphs(Dataset):
    """The built-in procedurally generated character data set (the default).

    Options: `classes` (default 1200, at least 1000 recommended) and
    `images_per_class` (default 20). Class sets are 80/10/10 of the classes.
    The data set's own seed is fixed so that "glyphs" names one data set; the
    run's `--seed` only changes how episodes are drawn from it.
    """

    channels = 1
    TEST_WAYS = (5, 20)
    data_seed = 20161104
    OPTIONS = (
        Option("classes", int, DEFAULT_CLASSES, "number of generated classes"),
        Option("images_per_class", int, IMAGES_PER_CLASS, "images per class"),
    )

    def load(self) -> ClassSplits:
        num_classes = self.options.options["classes"]
        per_class = self.options.options["images_per_class"]
        if num_classes < 30:
            raise UsageError(f"--glyphs_classes={num_classes}: need at least 30 classes")
        if per_class < 2:
            raise UsageError(f"--glyphs_images_per_class={per_class}: need at least 2")
        images = cached_generate(num_classes, self.options.image_size, self.data_seed, per_class)
        names = [f"glyph{index:05d}" for index in range(num_classes)]
        n_train = int(round(num_classes * SPLIT_FRACTIONS[0]))
        n_val = int(round(num_classes * SPLIT_FRACTIONS[1]))
        cut = (0, n_train, n_train + n_val, num_classes)
        sets = [ClassSet(images[a:b], names[a:b]) for a, b in zip(cut[:-1], cut[1:])]
        return ClassSplits(*sets)
