"""Ctrl-C (SIGINT) and SIGTERM stop a search at a clean point.

While `watch()` is active (the controller wraps keras-tuner's loop in it),
a signal never lands in the middle of the books: it is noted, and the loop
stops at its next clean point (`check()`, before a trial is created). Only
code inside `interruptible()` (a trial's training, the chief's serving loop)
is interrupted at once, by a `KeyboardInterrupt`: the tuner then hands the
trial back to the oracle (it runs again when the search resumes) before
stopping. A second signal while the books are being written is not lost
either: it stays noted. Without `watch()` (another thread, or a caller that
did not ask) nothing changes: Python's own handling applies.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    watching = False
    received: int | None = None  # the first signal received while watching
    interruptible = 0


_state = _State()


def _handle(signum, frame) -> None:
    first = _state.received is None
    if first:
        _state.received = signum
    if first and _state.interruptible:
        raise KeyboardInterrupt


@contextlib.contextmanager
def watch() -> Iterator[None]:
    """Defers SIGINT and SIGTERM to clean points for the duration (main thread only)."""
    if threading.current_thread() is not threading.main_thread() or _state.watching:
        yield
        return
    previous = {number: signal.getsignal(number) for number in SIGNALS}
    _state.watching, _state.received, _state.interruptible = True, None, 0
    for number in SIGNALS:
        signal.signal(number, _handle)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _state.watching, _state.interruptible = False, 0


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Code a signal may interrupt at once (`KeyboardInterrupt`); a noted signal raises here."""
    check()
    _state.interruptible += 1
    try:
        yield
    finally:
        _state.interruptible -= 1


def received() -> int | None:
    """The signal noted while watching (None: none)."""
    return _state.received


def check() -> None:
    """A clean point: raises `KeyboardInterrupt` if a signal was noted."""
    if _state.watching and _state.received is not None:
        raise KeyboardInterrupt


def exit_code() -> int:
    """The conventional exit status of the noted signal: 128 + its number (Ctrl-C: 130)."""
    return 128 + int(_state.received or signal.SIGINT)
