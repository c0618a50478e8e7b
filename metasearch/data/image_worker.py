"""The image worker: file-based class sets decoded outside the TensorFlow process.

Importing this module imports neither TensorFlow nor Keras (only numpy, PIL
and `metasearch.errors`), and the worker process it starts never does: the
process that trains pays for TensorFlow's import (about 640 MB resident),
the worker only for what the images need.

What a worker does, for one class set's flat list of image sources (files or
`archive.zip` members), each with an optional bounding box:

* reads each source (`read_source`), decodes it with PIL, converts it to the
  set's channels (grey `L` or `RGB`), crops it to its box (clipped to the
  image) and resizes it to the model's size with an exact area filter
  (`resize_area`: every output pixel the mean of the input area it covers,
  fractional pixels weighted by their share, which is what TensorFlow's
  `tf.image.resize(method="area")` in `preprocess.resize` computes; the two
  differ by at most one level of 255, and only where the mean falls exactly
  halfway between two levels), then rounds to uint8;
* `cached`: decodes every image once into a uint8 `[n, size, size, c]` array
  held by the worker; `streamed`: decodes every image once up front only to
  check it, then per request;
* answers requests for the uint8 images at flat indices, the statistics of a
  sample, and its own peak memory.

Bad input is named before anything is served, as one-line `UsageError`s
naming the file: a missing or unreadable file, a zero-byte file, a file PIL
cannot decode, a box outside its image.

Design:

* The worker is a child process started with multiprocessing's `spawn`
  context, so it starts from a fresh interpreter and inherits neither
  TensorFlow nor its threads. While starting it, the parent's `__main__` is
  hidden from multiprocessing (`_without_main`): spawn would otherwise rerun
  the parent's script in the worker, importing TensorFlow there and, in a
  script without an `if __name__ == "__main__"` guard, starting the search
  again.
* One worker per class set (`EpisodeImages` of files), not one shared by all:
  the worker's life is the class set's (its cache is freed when the class
  set is closed or collected), the cached and streamed sets of one search do
  not queue behind each other, and a worker's peak memory is one class set's.
  The cost is one small process per set (about 35 MB, a third of a second to
  start).
* Requests go over one duplex pipe: a pickled header, then the images as raw
  bytes received straight into the caller's array. A lock makes the
  request-and-answer pair atomic, so tf.data's parallel map calls are safe;
  within a request the worker decodes on a few threads (PIL and numpy release
  the GIL), which is where streamed episodes get their parallelism.
* The worker exits on `close()`, when its `ImageWorker` is garbage collected
  (`weakref.finalize`), at the parent's exit (a daemon process), and when the
  parent dies: the pipe then reads end-of-file, and a worker still building
  its cache notices that its parent changed. `close()` joins the process, so
  no zombie is left.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import io
import multiprocessing
import os
import sys
import threading
import traceback
import types
import weakref
import zipfile
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from metasearch.errors import UsageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

# An image to decode: a file path, or `(archive path, member)` inside a zip archive.
ImageSource = str | tuple[str, str]
# A bounding box in pixels: `(x, y, width, height)`, x and y of the top-left corner.
Box = tuple[float, float, float, float]

# Images decoded per chunk while building a cache (and between checks of the parent).
_CHUNK = 256
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


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
    return 1 if mode in _GREY_MODES else 3


def decode_image(data: bytes, where: str, channels: int) -> tuple[np.ndarray, int]:
    """Encoded bytes to uint8 `[h, w, channels]`, and the channels the file had (1 or 3).

    Grey images become colour by repeating the grey value; colour ones become
    grey as PIL's `L` (ITU-R 601-2 luma); an alpha channel is dropped; 16-bit
    grey is scaled to 8 bits. GIFs give their first frame.
    """
    if not data:
        raise UsageError(f"{where}: an empty file (0 bytes), not an image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            found = 1 if image.mode in _GREY_MODES else 3
            if image.mode.startswith("I") or image.mode == "F":
                wide = np.asarray(image, np.float64)
                scale = 257.0 if image.mode.startswith("I;16") or wide.max() > 255 else 1.0
                grey = np.clip(np.round(wide / scale), 0, 255).astype(np.uint8)
                image = Image.fromarray(grey, "L")
            target = "L" if channels == 1 else "RGB"
            pixels = np.asarray(image if image.mode == target else image.convert(target))
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as error:
        raise UsageError(f"{where}: not a readable image ({error})") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels, found


def crop_box(pixels: np.ndarray, box: Box, where: str) -> np.ndarray:
    """`pixels [h, w, c]` cropped to `box` (x, y, width, height), clipped to the image.

    Edges are rounded as PIL's `Image.crop` rounds them; a box with nothing
    of the image inside it is refused naming the file.
    """
    height, width = pixels.shape[:2]
    x, y, w, h = box
    left, top = max(0, round(x)), max(0, round(y))
    right, bottom = min(width, round(x + w)), min(height, round(y + h))
    if right <= left or bottom <= top:
        raise UsageError(
            f"{where}: its bounding box (x={x:g}, y={y:g}, width={w:g}, height={h:g}) holds "
            f"none of the {width}x{height} image"
        )
    return pixels[top:bottom, left:right]


def _area_axis(values: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Area resampling of one axis of float64 `values` to `size` (see `resize_area`)."""
    count = values.shape[axis]
    if count == size:
        return values
    scale = count / size
    edges = np.arange(size + 1) * scale
    values = np.moveaxis(values, axis, 0)
    # integral[k] = sum of values[:k]: exact, the values being integers.
    integral = np.empty((count + 1, *values.shape[1:]), np.float64)
    integral[0] = 0.0
    np.cumsum(values, axis=0, out=integral[1:])
    whole = np.minimum(np.floor(edges).astype(np.intp), count - 1)
    part = (edges - whole).reshape(-1, *([1] * (values.ndim - 1)))
    at_edges = integral[whole] + part * values[whole]
    resized = (at_edges[1:] - at_edges[:-1]) / scale
    return np.moveaxis(resized, 0, axis)


def resize_area(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 `[h, w, c]` to uint8 `[size, size, c]` by exact area averaging, rounded.

    Each output pixel is the mean of the input rectangle it covers, input
    pixels cut by its edges weighted by the share inside: TensorFlow's
    `tf.image.resize(method="area")` (`preprocess.resize`). Rounding is half
    to even (as `tf.round`); TensorFlow's float32 arithmetic lands an exact
    half on either side, so the two can differ by one level there.
    """
    height, width = pixels.shape[:2]
    if height == size and width == size:
        return np.ascontiguousarray(pixels, np.uint8)
    values = pixels.astype(np.float64)
    # Shrink the axis that shrinks most first: less work for the second pass.
    first, second = (0, 1) if height / size >= width / size else (1, 0)
    values = _area_axis(_area_axis(values, size, first), size, second)
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def load_image(
    source: ImageSource,
    box: Box | None,
    channels: int,
    size: int | None,
    archives: dict[str, zipfile.ZipFile] | None = None,
) -> tuple[np.ndarray, int]:
    """One source read, decoded, converted, cropped and (unless `size` is None) resized.

    Returns uint8 `[size, size, channels]` and the channels the file had.
    """
    where = describe_source(source)
    pixels, found = decode_image(read_source(source, archives), where, channels)
    if box is not None:
        pixels = crop_box(pixels, box, where)
    if size is not None:
        pixels = resize_area(pixels, size)
    return pixels, found


def _peak_memory() -> dict[str, int]:
    """This process's peak and current resident memory (kB), from /proc."""
    memory = {}
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name in ("VmHWM", "VmRSS"):
                    memory[name] = int(value.split()[0])
    except OSError:
        import resource

        memory["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return memory


class _Store:
    """The worker's side: the images of one class set, cached or decoded per request."""

    def __init__(
        self,
        sources: Sequence[ImageSource],
        boxes: Sequence[Box | None] | None,
        image_size: int,
        channels: int,
        cached: bool,
        threads: int,
        parent: int,
    ):
        self.sources = list(sources)
        self.boxes = list(boxes) if boxes is not None else [None] * len(self.sources)
        self.size, self.channels = int(image_size), int(channels)
        self.parent = parent
        self.grey = self.colour = 0
        self._archives: dict[str, zipfile.ZipFile] = {}
        self._archive_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max(1, threads))
        self.cache: np.ndarray | None = None
        shape = (len(self.sources), self.size, self.size, self.channels)
        if cached:
            self.cache = np.empty(shape, np.uint8)
        # Every image is decoded once now: into the cache, or only to check it.
        load = functools.partial(self._load, size=self.size if cached else None)
        for start in range(0, len(self.sources), _CHUNK):
            if os.getppid() != self.parent:
                os._exit(0)  # the parent died while we were building: nobody to serve
            indices = range(start, min(start + _CHUNK, len(self.sources)))
            for index, (pixels, found) in zip(indices, self._pool.map(load, indices)):
                if found == 1:
                    self.grey += 1
                else:
                    self.colour += 1
                if self.cache is not None:
                    self.cache[index] = pixels
        self._close_archives()

    def _load(self, index: int, size: int | None) -> tuple[np.ndarray, int]:
        source = self.sources[index]
        if isinstance(source, str):
            return load_image(source, self.boxes[index], self.channels, size)
        with self._archive_lock:  # one reader per archive at a time; decoding is free
            data = read_source(source, self._archives)
        where = describe_source(source)
        pixels, found = decode_image(data, where, self.channels)
        if self.boxes[index] is not None:
            pixels = crop_box(pixels, self.boxes[index], where)
        return (pixels if size is None else resize_area(pixels, size)), found

    def _close_archives(self) -> None:
        with self._archive_lock:
            for archive in self._archives.values():
                archive.close()
            self._archives = {}

    def images(self, indices: np.ndarray) -> np.ndarray:
        """uint8 `[len(indices), size, size, channels]`."""
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self.sources)):
            raise IndexError(f"image index out of range 0..{len(self.sources) - 1}")
        if self.cache is not None:
            return self.cache[indices]
        out = np.empty((len(indices), self.size, self.size, self.channels), np.uint8)
        loaded = self._pool.map(lambda i: self._load(int(i), self.size)[0], indices)
        for position, pixels in enumerate(loaded):
            out[position] = pixels
        return out

    def statistics(self, indices: np.ndarray) -> tuple[float, float]:
        """Mean and standard deviation of the pixels in [0, 1] of the images at `indices`.

        Exact: from the histogram of the uint8 values.
        """
        histogram = np.zeros(256, np.int64)
        for start in range(0, len(indices), _CHUNK):
            chunk = self.images(indices[start : start + _CHUNK])
            histogram += np.bincount(chunk.ravel(), minlength=256)
        total = int(histogram.sum())
        if not total:
            return 0.0, 1.0
        levels = np.arange(256, dtype=np.float64) / 255.0
        mean = float((histogram * levels).sum() / total)
        std = float(np.sqrt((histogram * (levels - mean) ** 2).sum() / total))
        return mean, std or 1.0

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._close_archives()


def serve(connection, spec: dict) -> None:
    """The worker process: builds the `_Store` of `spec`, then answers requests until closed.

    Every request is a pickled `(kind, payload)`; every answer starts with a
    pickled header, `("ok", value)`, `("usage", message)` (a `UsageError`) or
    `("crash", traceback)`; an `images` answer's pixels follow as raw bytes.
    """
    try:
        store = _Store(**spec)
    except UsageError as error:
        _answer(connection, ("usage", str(error)))
        return
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        _answer(connection, ("crash", traceback.format_exc()))
        return
    try:
        connection.send(("ok", {"grey": store.grey, "colour": store.colour}))
        while True:
            try:
                kind, payload = connection.recv()
            except (EOFError, OSError):
                break  # the parent closed the pipe or died
            if kind == "close":
                break
            try:
                if kind == "images":
                    pixels = store.images(np.frombuffer(payload, np.int64))
                    connection.send(("ok", pixels.shape))
                    connection.send_bytes(np.ascontiguousarray(pixels).reshape(-1))
                    continue
                if kind == "statistics":
                    value = store.statistics(np.frombuffer(payload, np.int64))
                elif kind == "memory":
                    value = _peak_memory()
                else:
                    raise ValueError(f"unknown request {kind!r}")
                connection.send(("ok", value))
            except UsageError as error:
                connection.send(("usage", str(error)))
            except OSError:
                raise
            except Exception:  # noqa: BLE001 - reported to the parent, which raises it
                connection.send(("crash", traceback.format_exc()))
    except OSError:
        pass  # the parent is gone
    finally:
        store.close()
        connection.close()


def _answer(connection, header) -> None:
    """The last answer of a worker that could not start."""
    with contextlib.suppress(OSError):
        connection.send(header)
    connection.close()


_START_LOCK = threading.Lock()


@contextlib.contextmanager
def _without_main():
    """Hides the parent's `__main__` from spawn while a worker starts (see the module docstring)."""
    with _START_LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is not None:
                sys.modules["__main__"] = main


def _shutdown(process, connection) -> None:
    """Asks the worker to exit, then reaps it (terminating it if it does not exit)."""
    with contextlib.suppress(OSError, ValueError):
        connection.send(("close", None))
    with contextlib.suppress(OSError):
        connection.close()
    process.join(timeout=10)
    if process.is_alive():
        process.terminate()
        process.join(timeout=5)
    if process.is_alive():
        process.kill()
        process.join()


class WorkerError(RuntimeError):
    """The worker failed for a reason that is not bad input (a bug, a crash, memory)."""


class ImageWorker:
    """The parent's handle on one worker process (see the module docstring).

    Starting it decodes every image once (into the cache when `cached`) and
    raises `UsageError` naming the first bad source, in order. `grey` and
    `colour` count the images by the channels of their files.
    """

    def __init__(
        self,
        sources: Sequence[ImageSource],
        boxes: Sequence[Box | None] | None,
        image_size: int,
        channels: int,
        cached: bool,
        threads: int | None = None,
    ):
        if boxes is not None and len(boxes) != len(sources):
            raise ValueError(f"ImageWorker: {len(boxes)} boxes for {len(sources)} sources")
        self.image_size, self.channels = int(image_size), int(channels)
        self.count = len(sources)
        self.cached = bool(cached)
        context = multiprocessing.get_context("spawn")
        connection, child = context.Pipe(duplex=True)
        spec = {
            "sources": list(sources),
            "boxes": None if boxes is None else list(boxes),
            "image_size": self.image_size,
            "channels": self.channels,
            "cached": self.cached,
            "threads": threads or min(4, os.cpu_count() or 1),
            "parent": os.getpid(),
        }
        self._process = context.Process(
            target=serve, args=(child, spec), daemon=True, name="metasearch-image-worker"
        )
        with _without_main():
            self._process.start()
        child.close()  # ours would keep the pipe open if the worker died
        self._connection = connection
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _shutdown, self._process, connection)
        try:
            scan = self._answer()
        except BaseException:
            self.close()
            raise
        self.grey, self.colour = int(scan["grey"]), int(scan["colour"])

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    @property
    def alive(self) -> bool:
        return self._finalizer.alive and self._process.is_alive()

    def _answer(self):
        try:
            status, value = self._connection.recv()
        except (EOFError, OSError):
            self._process.join(timeout=5)
            raise WorkerError(
                f"the image worker (pid {self._process.pid}) exited unexpectedly "
                f"(exit code {self._process.exitcode})"
            ) from None
        if status == "usage":
            raise UsageError(value)
        if status == "crash":
            raise WorkerError(f"the image worker failed:\n{value}")
        return value

    def _request(self, kind: str, payload=None):
        if not self._finalizer.alive:
            raise WorkerError("the image worker is closed")
        self._connection.send((kind, payload))
        return self._answer()

    def images(self, indices: np.ndarray) -> np.ndarray:
        """uint8 `[*indices.shape, size, size, channels]` of the images at `indices`."""
        indices = np.asarray(indices, np.int64)
        out = np.empty((*indices.shape, self.image_size, self.image_size, self.channels), np.uint8)
        with self._lock:
            self._request("images", np.ascontiguousarray(indices.ravel()).tobytes())
            try:
                self._connection.recv_bytes_into(out.reshape(-1))
            except (EOFError, OSError):
                raise WorkerError("the image worker exited unexpectedly") from None
        return out

    def statistics(self, indices: np.ndarray) -> tuple[float, float]:
        """Mean and standard deviation in [0, 1] of the images at `indices` (exact)."""
        with self._lock:
            mean, std = self._request(
                "statistics", np.ascontiguousarray(indices, np.int64).tobytes()
            )
        return float(mean), float(std)

    def memory(self) -> dict[str, int]:
        """The worker's resident memory in kB: `VmHWM` (peak) and `VmRSS` (now)."""
        with self._lock:
            return dict(self._request("memory"))

    def close(self) -> None:
        """Stops the worker and reaps it; further requests fail. Idempotent."""
        with self._lock:
            self._finalizer()

    def __enter__(self) -> ImageWorker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
