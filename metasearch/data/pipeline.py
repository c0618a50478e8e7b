"""Images of a class set, ready for episodes: cached as uint8 at the model's size, or streamed.

A `ClassSet` gives either generated arrays or, per class, image files in any
number, size and format. `EpisodeImages` turns one into what the episode
sampler draws from:

* Classes with fewer than K + Q images cannot fill an episode: they are left
  out (and named in `left_out`), never shrinking the other classes.
* File images are decoded with TensorFlow (PNG, JPEG, BMP, GIF, WebP),
  converted to the data set's channels, resized to the model's size with
  `preprocess.resize` and rounded to uint8, either once into an in-memory
  cache (`cached`, when it fits the memory budget) or per episode
  (`streamed`). Both give the same pixels, so an episode is a function of
  `(seed, stream, index)` alone whichever mode is used.
* Generated arrays are kept as given (float32 at the model's size).

`images(flat_indices)` gathers float32 images in [0, 1] inside the graph.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from metasearch.api import ClassSet, ImageSource
from metasearch.data.preprocess import resize
from metasearch.errors import UsageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# How many training images estimate the normalisation of a file-based class set.
STATISTICS_SAMPLE = 2000


def describe_source(source: ImageSource) -> str:
    """A source as users name it: the file, or `archive.zip:member`."""
    return source if isinstance(source, str) else f"{source[0]}:{source[1]}"


def read_source(source: ImageSource, archives: dict[str, zipfile.ZipFile] | None = None) -> bytes:
    """The encoded bytes of a source; a missing or unreadable one fails naming it."""
    try:
        if isinstance(source, str):
            with open(source, "rb") as handle:
                return handle.read()
        path, member = source
        archives = {} if archives is None else archives
        archive = archives.get(path)
        if archive is None:
            archive = archives[path] = zipfile.ZipFile(path)
        return archive.read(member)
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise UsageError(f"{describe_source(source)}: cannot read it ({error})") from None


def image_channels(data: bytes, where: str, decode: bool = True) -> int:
    """The channel count of an encoded image (1 grey, 3 colour) from its header.

    With `decode` the whole image is decoded too, so a truncated file is named here.
    """
    if not data:
        raise UsageError(f"{where}: an empty file (0 bytes), not an image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            mode = image.mode
            if decode:
                image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UsageError(f"{where}: not a readable image ({error})") from None
    return 1 if mode in ("1", "L", "I", "I;16", "F") else 3


def decode(data: tf.Tensor, channels: int, image_size: int) -> tf.Tensor:
    """Encoded image bytes to uint8 `[image_size, image_size, channels]` (graph code)."""
    image = tf.io.decode_image(data, channels=channels, expand_animations=False)
    image = tf.cast(image, tf.float32) / 255.0
    resized = resize(image[None], image_size)[0]
    return tf.cast(tf.round(resized * 255.0), tf.uint8)


@dataclasses.dataclass
class Scan:
    """How many grey and colour images a file-based class set holds."""

    grey: int = 0
    colour: int = 0


class EpisodeImages:
    """One class set's images as the episode sampler draws them (see the module docstring).

    `counts` and `offsets` index a flat image axis: class `c`'s images are
    `offsets[c] .. offsets[c] + counts[c] - 1`. `mode` is `"generated"`,
    `"cached"` or `"streamed"`.
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
        self._archives: dict[str, zipfile.ZipFile] = {}
        if self.class_set.images is not None:
            self.mode = "generated"
            images = self.class_set.images
            if isinstance(images, np.ndarray):
                flat = images.reshape(-1, *images.shape[2:])
            else:
                flat = np.concatenate(images) if images else np.zeros((0, 1, 1, channels))
            self._images = flat.astype(np.float32, copy=False)
            return
        sources = [source for sources in self.class_set.files for source in sources]
        self._sources = sources
        size = len(sources) * self.image_size**2 * self.channels
        in_archives = any(not isinstance(source, str) for source in sources)
        self._encoded = [read_source(s, self._archives) for s in sources] if in_archives else None
        # Decoding into the cache names any file TensorFlow cannot decode; streamed files
        # are decoded only during training, so they are checked whole up front.
        self._check_sources(decode=size > cache_bytes)
        if size <= cache_bytes:
            self.mode = "cached"
            self._images = self._decode_all()
        else:
            self.mode = "streamed"
            self._images = None
        for archive in self._archives.values():
            archive.close()
        self._archives = {}

    @property
    def cached_bytes(self) -> int:
        """Memory the images hold (0 when streamed)."""
        return 0 if self._images is None else int(self._images.nbytes)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def max_count(self) -> int:
        return int(self.counts.max()) if len(self.counts) else 0

    def _bytes(self, index: int) -> bytes:
        if self._encoded is not None:
            return self._encoded[index]
        return read_source(self._sources[index], self._archives)

    def _check_sources(self, decode: bool) -> None:
        """Counts grey and colour images (converted to `channels`); with `decode`, all decode."""
        for index, source in enumerate(self._sources):
            if image_channels(self._bytes(index), describe_source(source), decode) == 1:
                self.scan.grey += 1
            else:
                self.scan.colour += 1

    def _decode_all(self) -> np.ndarray:
        """Every image decoded once into a uint8 `[n, size, size, channels]` array."""
        total = len(self._sources)
        cache = np.empty((total, self.image_size, self.image_size, self.channels), np.uint8)
        if self._encoded is None:
            # Files: read and decoded in parallel by tf.data; a failure is named below.
            files = tf.data.Dataset.from_tensor_slices(tf.constant(self._sources, tf.string))
            decoded = files.map(
                lambda path: decode(tf.io.read_file(path), self.channels, self.image_size),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            ).batch(256)
            try:
                position = 0
                for batch in decoded:
                    cache[position : position + len(batch)] = batch.numpy()
                    position += len(batch)
                return cache
            except tf.errors.InvalidArgumentError:
                pass
        decode_one = tf.function(
            lambda data: decode(data, self.channels, self.image_size),
            input_signature=[tf.TensorSpec([], tf.string)],
        )
        for index in range(total):
            try:
                cache[index] = decode_one(tf.constant(self._bytes(index))).numpy()
            except tf.errors.InvalidArgumentError as error:
                where = describe_source(self._sources[index])
                raise UsageError(
                    f"{where}: TensorFlow cannot decode it ({error.message.splitlines()[0]})"
                ) from None
        return cache

    def statistics(self) -> tuple[float, float]:
        """Mean and standard deviation of the pixels, for normalisation.

        Generated arrays: over all of them. File images: over a fixed sample
        of `STATISTICS_SAMPLE` images (decoding all of a large set would cost
        minutes).
        """
        if self.mode == "generated":
            return float(self._images.mean()), float(self._images.std()) or 1.0
        rng = np.random.default_rng(0)
        total = int(self.counts.sum())
        picked = np.sort(rng.choice(total, min(STATISTICS_SAMPLE, total), replace=False))
        if self.mode == "cached":
            sample = self._images[picked]
        else:
            sample = np.stack(
                [
                    decode(tf.constant(self._bytes(int(i))), self.channels, self.image_size)
                    for i in picked
                ]
            )
        values = sample.astype(np.float64) / 255.0
        return float(values.mean()), float(values.std()) or 1.0

    def images(self, flat_indices: tf.Tensor) -> tf.Tensor:
        """Float32 images in [0, 1] at `flat_indices` (any shape), inside the graph."""
        if self.mode == "generated":
            return tf.gather(self._constant(), flat_indices)
        if self.mode == "cached":
            # Gathered in numpy: the cache is held once, never copied into a tensor.
            picked = tf.numpy_function(
                lambda indices: self._images[indices], [flat_indices], tf.uint8, stateful=False
            )
            picked = tf.ensure_shape(
                picked, [None] * len(flat_indices.shape) + list(self._images.shape[1:])
            )
            return tf.cast(picked, tf.float32) / 255.0
        flat = tf.reshape(flat_indices, [-1])
        encoded = tf.gather(self._sources_tensor(), flat)
        decoded = tf.map_fn(
            lambda item: decode(self._read(item), self.channels, self.image_size),
            encoded,
            fn_output_signature=tf.TensorSpec(
                [self.image_size, self.image_size, self.channels], tf.uint8
            ),
        )
        shape = tf.concat([tf.shape(flat_indices), tf.shape(decoded)[1:]], 0)
        return tf.reshape(tf.cast(decoded, tf.float32) / 255.0, shape)

    def _constant(self) -> tf.Tensor:
        # Made eagerly (init_scope) once: every episode pipeline of every trial captures
        # the same tensor instead of a graph-local copy of the images.
        if not hasattr(self, "_tensor"):
            with tf.init_scope():
                self._tensor = tf.convert_to_tensor(self._images)
        return self._tensor

    def _sources_tensor(self) -> tf.Tensor:
        # Streamed files are read per episode; archive members keep their encoded bytes.
        if not hasattr(self, "_source_tensor"):
            with tf.init_scope():
                self._source_tensor = tf.constant(
                    self._encoded if self._encoded is not None else self._sources, tf.string
                )
        return self._source_tensor

    def _read(self, item: tf.Tensor) -> tf.Tensor:
        return item if self._encoded is not None else tf.io.read_file(item)

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
