"""The on-disk cache of generated data sets (`metasearch.data.cache`)."""

from __future__ import annotations

import numpy as np
import pytest

from metasearch.data import cache, glyphs


@pytest.fixture
def cache_folder(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("METASEARCH_CACHE_DIR", str(folder))
    return folder


def test_the_second_load_reads_the_first_ones_images_without_drawing(cache_folder, monkeypatch):
    first = glyphs.cached_generate(30, 12, seed=3, images_per_class=2)
    (entry,) = cache_folder.iterdir()
    assert entry.name.startswith("glyphs-") and entry.suffix == ".npy"

    def no_drawing(*args, **kwargs):
        raise AssertionError("drew again despite the cache")

    monkeypatch.setattr(glyphs, "generate", no_drawing)
    again = glyphs.cached_generate(30, 12, seed=3, images_per_class=2)
    np.testing.assert_array_equal(again, first)


def test_cached_images_equal_freshly_drawn_ones_and_parameters_get_their_own_entries(
    cache_folder,
):
    cached = glyphs.cached_generate(30, 12, seed=3, images_per_class=2)
    np.testing.assert_array_equal(cached, glyphs.generate(30, 12, 3, 2))
    other = glyphs.cached_generate(30, 12, seed=4, images_per_class=2)
    assert not np.array_equal(other, cached)
    assert len(list(cache_folder.iterdir())) == 2


def test_a_damaged_entry_is_drawn_again_and_replaced(cache_folder):
    fresh = glyphs.cached_generate(30, 12, seed=3, images_per_class=2)
    (entry,) = cache_folder.iterdir()
    entry.write_bytes(entry.read_bytes()[:100])  # cut short, as by a full disk elsewhere
    np.testing.assert_array_equal(glyphs.cached_generate(30, 12, seed=3, images_per_class=2), fresh)
    np.testing.assert_array_equal(np.load(entry), fresh)


def test_off_writes_nothing_and_an_unwritable_folder_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("METASEARCH_CACHE_DIR", "off")
    assert cache.cache_dir() is None
    assert cache.cached_array("x.npy", lambda: np.arange(3)).tolist() == [0, 1, 2]
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("METASEARCH_CACHE_DIR", str(blocker / "cache"))
    assert cache.cached_array("x.npy", lambda: np.arange(3)).tolist() == [0, 1, 2]
    assert blocker.read_text() == "not a folder"


def test_the_default_folder_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("METASEARCH_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir() == str(tmp_path / "metasearch")
