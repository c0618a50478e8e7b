"""The episode pipeline: uneven classes, files cached or streamed, faults named."""

import concurrent.futures
import gc
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from metasearch.api import ClassSet, ClassSplits, DatasetOptions
from metasearch.config import RunConfig
from metasearch.data import episodes, image_worker, omniglot, preprocess
from metasearch.data.pipeline import EpisodeImages
from metasearch.errors import UsageError
from metasearch.tasks import check_episode_shapes, kind_of


def _write_class_folders(root, counts, size=(12, 10)):
    """Class `c` image `j` is a flat colour encoding (c, j); odd images are grey PNGs."""
    files = []
    for c, count in enumerate(counts):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        paths = []
        for j in range(count):
            pixels = np.full((size[1] + j, size[0] + 2 * j, 3), (20 * c, 10 * j, 200), np.uint8)
            image = Image.fromarray(pixels)
            if j % 2:
                path = folder / f"{j}.png"
                image.convert("L").save(path)
            else:
                path = folder / f"{j}.jpg"
                image.save(path, quality=95)
            paths.append(str(path))
        files.append(paths)
    return ClassSet(None, [f"class{c}" for c in range(len(counts))], files=files)


def _episodes(images, count=6, n_way=3, k_shot=1, n_query=2):
    stream = episodes.episode_dataset(images, n_way, k_shot, n_query, seed=4, stream=1, count=count)
    return [
        (e.support_images.numpy(), e.query_images.numpy(), e.support_labels.numpy()) for e in stream
    ]


def test_classes_with_too_few_images_are_left_out_and_named_never_shrinking_others(tmp_path):
    class_set = _write_class_folders(tmp_path, [5, 2, 4, 3, 6])
    images = EpisodeImages(class_set, 8, 3, min_images=3, cache_bytes=2**30)
    assert images.names == ["class0", "class2", "class3", "class4"]
    assert list(images.counts) == [5, 4, 3, 6]
    info = images.info()
    assert info["left_out"] == {"count": 1, "classes": ["class1"]}
    assert info["converted"] == {"grey_images": 8, "colour_images": 10, "to_channels": 3}
    assert info["mode"] == "cached"


def test_cached_and_streamed_images_give_the_same_episodes(tmp_path):
    class_set = _write_class_folders(tmp_path, [5, 4, 3, 6, 4])
    cached = EpisodeImages(class_set, 8, 3, min_images=3, cache_bytes=2**30)
    streamed = EpisodeImages(class_set, 8, 3, min_images=3, cache_bytes=0)
    assert (cached.mode, streamed.mode) == ("cached", "streamed")
    first, second = _episodes(cached), _episodes(streamed)
    for a, b in zip(first, second):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    # Deterministic per index, and episodes differ from each other.
    again = _episodes(cached)
    np.testing.assert_array_equal(first[3][0], again[3][0])
    assert not np.array_equal(first[0][0], first[1][0])
    assert first[0][0].shape == (3, 8, 8, 3) and first[0][0].dtype == np.float32
    assert 0.0 <= first[0][0].min() and first[0][0].max() <= 1.0


def test_an_episode_draws_distinct_images_of_each_class_within_its_own_count():
    # Class c holds c + 3 images; pixel value c * 100 + j names image j of class c.
    arrays = [
        np.broadcast_to(
            (c * 100 + np.arange(c + 3))[:, None, None, None].astype(np.float32), (c + 3, 2, 2, 1)
        ).copy()
        for c in range(6)
    ]
    images = EpisodeImages(ClassSet(arrays, [str(c) for c in range(6)]), 2, 1, 3, 0)
    for support, query, labels in _episodes(images, count=30, n_way=4, k_shot=1, n_query=2):
        values = np.concatenate([support[:, 0, 0, 0], query[:, 0, 0, 0]])
        by_label = {}
        for value, label in zip(values, np.concatenate([labels, np.repeat(np.arange(4), 2)])):
            by_label.setdefault(int(label), []).append(int(value))
        for drawn in by_label.values():
            classes = {v // 100 for v in drawn}
            assert len(classes) == 1 and len(set(drawn)) == 3
            (c,) = classes
            assert all(v % 100 < c + 3 for v in drawn)


@pytest.mark.parametrize(
    "content, message",
    [(b"", "an empty file (0 bytes), not an image"), (b"not a picture", "not a readable image")],
)
def test_a_broken_image_is_named(tmp_path, content, message):
    class_set = _write_class_folders(tmp_path, [3, 3])
    bad = tmp_path / "class1" / "broken.jpg"
    bad.write_bytes(content)
    class_set.files[1].append(str(bad))
    for budget in (2**30, 0):
        with pytest.raises(UsageError, match=re.escape(f"{bad}: {message}")):
            EpisodeImages(class_set, 8, 3, min_images=2, cache_bytes=budget)


def _config(**changes):
    return RunConfig(**{"dataset": "omniglot", "n_way": 2, "k_shot": 1, "n_query": 2, **changes})


def test_too_few_usable_classes_are_refused_with_the_numbers():
    arrays = [np.zeros((n, 4, 4, 1), np.float32) for n in (5, 2, 2, 5)]
    splits = ClassSplits(*(ClassSet(arrays, list("abcd")) for _ in range(3)))
    check_episode_shapes(_config(), splits)
    with pytest.raises(
        UsageError,
        match=r"--n_way=3: the meta-train class set of omniglot has only 2 classes with at least "
        r"3 images \(2 of its 4 classes have fewer\)",
    ):
        check_episode_shapes(_config(n_way=3), splits)
    with pytest.raises(
        UsageError, match=r"--k_shot \+ --n_query = 7: .* only 5 images each at most"
    ):
        check_episode_shapes(_config(n_query=6), splits)


def test_an_omniglot_character_with_two_images_is_left_out_and_named(tmp_path):
    # 3 alphabets x 3 characters x 4 drawers, but one character has only 2 drawings.
    with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as zf:
        for alphabet in "ABC":
            for c in range(1, 4):
                drawers = 2 if (alphabet, c) == ("A", 2) else 4
                for d in range(1, drawers + 1):
                    image = Image.new("L", (12, 12), 255)
                    image.putpixel((c, d), 0)
                    path = tmp_path / "x.png"
                    image.save(path)
                    zf.write(path, f"images_background/{alphabet}/character{c:02d}/{c}_{d}.png")
    dataset = omniglot.Omniglot(
        DatasetOptions(
            str(tmp_path),
            12,
            0,
            {
                "train": ["images_background/A"],
                "val": ["images_background/B"],
                "test": ["images_background/C"],
            },
        )
    )
    data = kind_of("classification").load(dataset, _config(k_shot=1, n_query=2))
    train = data.info["class_sets"]["train"]
    assert train["left_out"] == {"count": 1, "classes": ["A/character02"]}
    # The other characters keep all four drawings each.
    assert train["images_per_class"] == {"min": 4, "max": 4} and train["classes"] == 2
    stream = kind_of("classification").episodes(data, _config(), "train", 0, 1, count=3)
    assert all(e.support_images.shape == (2, 12, 12, 1) for e in stream)


def test_an_omniglot_image_of_an_unexpected_size_is_resized_not_refused(tmp_path):
    folder = tmp_path / "images_background" / "A" / "character01"
    folder.mkdir(parents=True)
    for d, size in enumerate([(12, 12), (12, 12), (15, 9)]):
        Image.new("L", size, 255).save(folder / f"1_{d}.png")
    class_set = omniglot.load_characters(str(tmp_path), ["images_background"], 8)
    assert class_set.counts == [3]
    assert class_set.images.shape == (1, 3, 8, 8, 1)
    assert class_set.images.min() == 1.0  # all white, whatever the size it came in


def test_a_truncated_jpeg_is_named_cached_or_streamed(tmp_path):
    class_set = _write_class_folders(tmp_path, [3, 3])
    whole = (tmp_path / "class1" / "0.jpg").read_bytes()
    bad = tmp_path / "class1" / "truncated.jpg"
    bad.write_bytes(whole[: len(whole) // 3])
    class_set.files[1].append(str(bad))
    for budget in (2**30, 0):
        with pytest.raises(UsageError, match=re.escape(str(bad))):
            EpisodeImages(class_set, 8, 3, min_images=2, cache_bytes=budget)


# The image worker: a TensorFlow-free process per file-based class set.


def test_the_image_worker_imports_neither_tensorflow_nor_keras():
    code = (
        "import sys, metasearch.data.image_worker; "
        "assert not {'tensorflow', 'keras'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    "shape", [(84, 84), (75, 100), (96, 64), (120, 120), (375, 500), (40, 30), (1, 7), (200, 3)]
)
def test_the_area_resize_is_tensorflows_but_for_exact_halves(shape):
    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, (*shape, 3)).astype(np.uint8)
    ours = image_worker.resize_area(pixels, 28)
    means = image_worker._area_axis(
        image_worker._area_axis(pixels.astype(np.float64), 28, 0), 28, 1
    )
    theirs = np.round(preprocess.resize(pixels[None] / 255.0, 28)[0].numpy() * 255.0)
    assert ours.shape == (28, 28, 3) and ours.dtype == np.uint8
    differ = ours != theirs
    assert np.abs(ours.astype(np.float64) - theirs).max() <= 1
    # Where TensorFlow's float32 arithmetic rounds the other way, the mean is exactly a half.
    np.testing.assert_allclose(means[differ] % 1.0, 0.5, atol=1e-9)
    assert differ.mean() < 0.06


def test_file_pixels_are_pils_decode_resized_as_the_exported_model_resizes(tmp_path):
    class_set = _write_class_folders(tmp_path, [3, 4])
    with EpisodeImages(class_set, 8, 3, min_images=3, cache_bytes=2**30) as images:
        got = images.pixels(np.arange(7))
    sources = [source for sources in class_set.files for source in sources]
    for pixels, source in zip(got, sources):
        decoded = np.asarray(Image.open(source).convert("RGB"), np.float32)[None] / 255.0
        expected = np.round(preprocess.resize(decoded, 8)[0].numpy() * 255.0)
        assert np.abs(pixels.astype(np.float64) - expected).max() <= 1, source


def test_archive_members_give_the_pixels_of_the_files(tmp_path):
    class_set = _write_class_folders(tmp_path / "files", [3, 4])
    archive = tmp_path / "images.zip"
    members = []
    with zipfile.ZipFile(archive, "w") as zf:
        for sources in class_set.files:
            members.append([])
            for source in sources:
                name = os.path.relpath(source, tmp_path / "files")
                zf.write(source, name)
                members[-1].append((str(archive), name))
    zipped = ClassSet(None, class_set.names, files=members)
    everything = np.arange(7)
    with EpisodeImages(class_set, 8, 3, 3, cache_bytes=2**30) as files:
        want = files.pixels(everything)
    for budget in (2**30, 0):
        with EpisodeImages(zipped, 8, 3, 3, cache_bytes=budget) as images:
            np.testing.assert_array_equal(images.pixels(everything), want)
            assert (images.scan.grey, images.scan.colour) == (3, 4)


def test_a_missing_file_is_named_cached_or_streamed(tmp_path):
    class_set = _write_class_folders(tmp_path, [3, 3])
    gone = class_set.files[1][2]
    os.remove(gone)
    for budget in (2**30, 0):
        with pytest.raises(UsageError, match=re.escape(f"{gone}: cannot read it")) as caught:
            EpisodeImages(class_set, 8, 3, min_images=2, cache_bytes=budget)
        assert "\n" not in str(caught.value)


def test_statistics_are_those_of_the_pixels(tmp_path):
    class_set = _write_class_folders(tmp_path, [3, 5, 4])
    for budget in (2**30, 0):
        with EpisodeImages(class_set, 8, 3, min_images=3, cache_bytes=budget) as images:
            values = images.pixels(np.arange(12)).astype(np.float64) / 255.0
            mean, std = images.statistics()
            assert mean == pytest.approx(values.mean(), rel=1e-12)
            assert std == pytest.approx(values.std(), rel=1e-12)


def test_parallel_requests_each_get_their_own_images(tmp_path):
    class_set = _write_class_folders(tmp_path, [4, 4, 4])
    with EpisodeImages(class_set, 8, 3, min_images=3, cache_bytes=0) as images:
        single = images.pixels(np.arange(12))
        picks = [np.random.default_rng(i).integers(0, 12, (3, 5)) for i in range(24)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(images.pixels, picks))
    for pick, answer in zip(picks, answers):
        np.testing.assert_array_equal(answer, single[pick])


def _gone(pid: int, seconds: float = 30.0) -> bool:
    """The process has exited (gone, or a zombie its new parent has yet to reap)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_closing_or_collecting_the_images_stops_and_reaps_the_worker(tmp_path):
    class_set = _write_class_folders(tmp_path, [3, 3])
    images = EpisodeImages(class_set, 8, 3, min_images=2, cache_bytes=2**30)
    process = images.worker._process
    assert process.is_alive() and process.daemon
    images.close()
    assert process.exitcode == 0 and not images.worker.alive
    images.close()  # idempotent
    with pytest.raises(image_worker.WorkerError, match="closed"):
        images.pixels(np.arange(2))
    images = EpisodeImages(class_set, 8, 3, min_images=2, cache_bytes=0)
    process = images.worker._process
    del images
    gc.collect()
    assert process.exitcode == 0  # joined: no zombie left


def test_the_worker_exits_when_its_parent_dies(tmp_path):
    class_set = _write_class_folders(tmp_path, [3, 3])
    sources = [source for sources in class_set.files for source in sources]
    script = (
        "import os, signal, sys\n"
        "from metasearch.data.image_worker import ImageWorker\n"
        f"worker = ImageWorker({sources!r}, None, 8, 3, cached=True)\n"
        "print(worker.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    parent = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    assert _gone(int(parent.stdout.split()[0]))
