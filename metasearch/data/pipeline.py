"""Images of a class set, ready for episodes: cached as uint8 at the model's size, or streamed.

A `ClassSet` gives either generated arrays or, per class, image files in any
number, size and format (each with an optional bounding box). `EpisodeImages`
turns one into what the episode sampler draws from:

* Classes with fewer than K + Q images cannot fill an episode: they are left
  out (and named in `left_out`), never shrinking the other classes.
* File images are served by a TensorFlow-free worker process
  (`metasearch.data.image_worker`, one per class set): decoded with PIL
  (PNG, JPEG, BMP, GIF, WebP), converted to the data set's channels, cropped
  to their boxes, resized to the model's size by area averaging (what
  `preprocess.resize` computes) and rounded to uint8, either once into the
  worker's in-memory cache (`cached`, when it fits the memory budget) or per
  episode (`streamed`). Both give the same pixels, so an episode is a
  function of `(seed, stream, index)` alone whichever mode is used: the
  sampler picks the indices in TensorFlow, the worker only supplies pixels.
  The worker's memory is its own, apart from TensorFlow's (see
  `benchmarks/data_pipeline.py`); `close()` (or garbage collection) stops it.
* Generated arrays are kept as given (float32 at the model's size), in this
  process.

`images(flat_indices)` gathers float32 images in [0, 1] inside the graph.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from metasearch.api import ClassSet
from metasearch.data.image_worker import (  # noqa: F401 - the pipeline's names for them
    IMAGE_EXTENSIONS,
    ImageWorker,
    describe_source,
    image_channels,
    read_source,
)

# How many training images estimate the normalisation of a file-based class set.
STATISTICS_SAMPLE = 2000


@dataclasses.dataclass
class Scan:
    """How many grey and colour images a file-based class set holds."""

    grey: int = 0
    colour: int = 0


class EpisodeImages:
    """One class set's images as the episode sampler draws them (see the module docstring).

    `counts` and `offsets` index a flat image axis: class `c`'s images are
    `offsets[c] .. offsets[c] + counts[c] - 1`. `mode` is `"generated"`,
    `"cached"` or `"streamed"`; file-based modes have a `worker`
    (`image_worker.ImageWorker`), stopped by `close()` (also a context manager).
    """

    def __init__(
        self,
        class_set: ClassSet,
        image_size: int,
        channels: int,
        min_images: int,
        cache_bytes: int,
    ):
        self.image_size, self.channels = int(image_size), int(channels)
        counts = class_set.counts
        keep = [i for i, count in enumerate(counts) if count >= min_images]
        self.left_out = [class_set.names[i] for i, count in enumerate(counts) if count < min_images]
        self.class_set = class_set.subset(keep)
        self.names = self.class_set.names
        self.counts = np.array(self.class_set.counts, np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.scan = Scan()
        self.worker: ImageWorker | None = None
        self._images: np.ndarray | None = None
        if self.class_set.images is not None:
            self.mode = "generated"
            images = self.class_set.images
            if isinstance(images, np.ndarray):
                flat = images.reshape(-1, *images.shape[2:])
            else:
                flat = np.concatenate(images) if images else np.zeros((0, 1, 1, channels))
            self._images = flat.astype(np.float32, copy=False)
            # The tensor every episode pipeline of every trial captures (not a
            # graph-local copy each), made eagerly with the data.
            with tf.init_scope():
                self._tensor = tf.convert_to_tensor(self._images)
            return
        sources = [source for sources in self.class_set.files for source in sources]
        boxes = None
        if self.class_set.boxes is not None:
            boxes = [box for class_boxes in self.class_set.boxes for box in class_boxes]
        self._sources = sources
        cached = self._cache_size(len(sources)) <= cache_bytes
        self.mode = "cached" if cached else "streamed"
        # The worker decodes every image once now (into its cache, or to check it when
        # streamed), naming the first file that is missing, empty or undecodable.
        self.worker = ImageWorker(sources, boxes, self.image_size, self.channels, cached)
        self.scan = Scan(self.worker.grey, self.worker.colour)

    def _cache_size(self, count: int) -> int:
        return count * self.image_size**2 * self.channels

    @property
    def cached_bytes(self) -> int:
        """Memory the images hold (0 when streamed), in the worker when cached."""
        if self.mode == "generated":
            return int(self._images.nbytes)
        return self._cache_size(len(self._sources)) if self.mode == "cached" else 0

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def max_count(self) -> int:
        return int(self.counts.max()) if len(self.counts) else 0

    def close(self) -> None:
        """Stops the worker (file-based modes); idempotent. Episodes need it open."""
        if self.worker is not None:
            self.worker.close()

    def __enter__(self) -> EpisodeImages:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def statistics(self) -> tuple[float, float]:
        """Mean and standard deviation of the pixels, for normalisation.

        Generated arrays: over all of them. File images: over a fixed sample
        of `STATISTICS_SAMPLE` images (decoding all of a large set would cost
        minutes), computed by the worker.
        """
        if self.mode == "generated":
            return float(self._images.mean()), float(self._images.std()) or 1.0
        rng = np.random.default_rng(0)
        total = int(self.counts.sum())
        picked = np.sort(rng.choice(total, min(STATISTICS_SAMPLE, total), replace=False))
        return self.worker.statistics(picked)

    def pixels(self, flat_indices: np.ndarray) -> np.ndarray:
        """uint8 images at `flat_indices` (any shape) from the worker, outside the graph."""
        return self.worker.images(flat_indices)

    def images(self, flat_indices: tf.Tensor) -> tf.Tensor:
        """Float32 images in [0, 1] at `flat_indices` (any shape), inside the graph."""
        if self.mode == "generated":
            return tf.gather(self._tensor, flat_indices)
        # Cached or streamed, the worker answers: the pixels never pass through a
        # TensorFlow op before this cast, and the cache is never copied into a tensor.
        picked = tf.numpy_function(self.pixels, [flat_indices], tf.uint8, stateful=False)
        picked = tf.ensure_shape(
            picked,
            [None] * len(flat_indices.shape) + [self.image_size, self.image_size, self.channels],
        )
        return tf.cast(picked, tf.float32) / 255.0

    def info(self) -> dict[str, Any]:
        """What `dataset.json` records of this class set."""
        info: dict[str, Any] = {
            "classes": self.num_classes,
            "images": int(self.counts.sum()),
            "images_per_class": {
                "min": int(self.counts.min()) if len(self.counts) else 0,
                "max": self.max_count,
            },
            "mode": self.mode,
            "left_out": {"count": len(self.left_out), "classes": self.left_out[:20]},
        }
        if self.mode != "generated":
            info["converted"] = {
                "grey_images": self.scan.grey,
                "colour_images": self.scan.colour,
                "to_channels": self.channels,
            }
        return info
