"""An on-disk cache of generated arrays (the built-in data sets' images).

Generating a built-in data set costs seconds at every job start (the glyphs
rasterize 24,000 images); the arrays depend only on their parameters and on
the code that draws them, so the first job saves them and later ones load
them. The cache lives in `$METASEARCH_CACHE_DIR`, else
`$XDG_CACHE_HOME/metasearch`, else `~/.cache/metasearch`;
`METASEARCH_CACHE_DIR=off` turns it off. It is only ever a shortcut: a
missing, unreadable or damaged entry is generated again, and a cache that
cannot be written (read-only home, full disk) is skipped without a word.
Entries are written to a temporary file and renamed, so concurrent jobs and
kills never leave half an entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable

import numpy as np

DISABLED = ("off", "0", "none")


def cache_dir() -> str | None:
    """The cache folder, or None when `METASEARCH_CACHE_DIR` turns the cache off."""
    chosen = os.environ.get("METASEARCH_CACHE_DIR")
    if chosen is not None:
        return None if chosen.strip().lower() in DISABLED or not chosen.strip() else chosen
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "metasearch")


def entry_name(kind: str, *parts) -> str:
    """A file name for `kind` whose digest covers `parts` (parameters, code, versions)."""
    digest = hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()[:24]
    return f"{kind}-{digest}.npy"


def cached_array(name: str, make: Callable[[], np.ndarray]) -> np.ndarray:
    """The array cached under `name`, else `make()` (then saved under `name`)."""
    folder = cache_dir()
    path = None if folder is None else os.path.join(folder, name)
    if path is not None and os.path.isfile(path):
        with contextlib.suppress(Exception):  # damaged or foreign: generate again
            return np.load(path, allow_pickle=False)
    array = make()
    if path is not None:
        _save(path, array)
    return array


def _save(path: str, array: np.ndarray) -> None:
    temporary = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=".tmp-", suffix=".npy", dir=os.path.dirname(path)
        )
        with os.fdopen(handle, "wb") as stream:
            np.save(stream, array, allow_pickle=False)
        os.replace(temporary, path)
        temporary = None
    except OSError:
        pass  # a shortcut only: the array is in hand
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.remove(temporary)
