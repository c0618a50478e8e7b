"""Errors that reach the user as one line and an exit status.

The CLI prints `metasearch: error: <message>` (no traceback) and exits with
the error's `exit_code`:

* 2 `UsageError`: bad input (a flag, a file or a value), including a run
  folder in use by another search (`RunLockedError`) and a damaged file that
  cannot be rebuilt (`DamagedFileError`);
* 3 `SearchFailedError`: the search ran but did not do what was asked (every
  trial failed, consecutive failures stopped it, or it ended with nothing
  completed);
* 4 `StorageError`: a write to the run folder failed (disk full, I/O error);
  nothing was half-written;
* 130 (SIGINT, Ctrl-C) or 143 (SIGTERM) `Interrupted`: stopped at a clean point.
"""


class MetasearchError(Exception):
    """An error shown to the user as one line, with its own exit status."""

    exit_code = 1


class UsageError(MetasearchError):
    """Bad input from the user: a flag, a file or a value.

    The CLI prints `metasearch: error: <message>` and exits with status 2, with
    no traceback. The message names the flag, file or value at fault.
    """

    exit_code = 2


class RunLockedError(UsageError):
    """The run folder is held by another search (its host and pid are in the message)."""


class DamagedFileError(UsageError):
    """A file of the run cannot be read back (truncated, corrupt); `path` names it."""

    def __init__(self, path: str, reason: str, advice: str = ""):
        self.path, self.reason = path, reason
        super().__init__(f"{path} is damaged ({reason})" + (f"; {advice}" if advice else ""))


class SearchFailedError(MetasearchError):
    """The search ended without doing what was asked (exit status 3)."""

    exit_code = 3


class StorageError(MetasearchError, OSError):
    """A write to the run folder failed (disk full, I/O error): exit status 4.

    Also an `OSError` (with the failed write's `errno`). Its temporary files
    are removed; what was written before is intact.
    """

    exit_code = 4

    def __init__(self, message: str, errno: int | None = None):
        OSError.__init__(self, errno, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Interrupted(KeyboardInterrupt):
    """A search stopped by Ctrl-C (SIGINT, exit status 130) or SIGTERM (143) at a clean point.

    A `KeyboardInterrupt`, so code that catches those still does.
    """

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code
