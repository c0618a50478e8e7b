"""The `metasearch` command: `metasearch [search] --flags` and `metasearch export`.

Bad input (a flag, a file, a value) ends with one line on stderr naming the
problem and exit status 2.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from metasearch import flags as ms_flags
from metasearch.errors import UsageError

COMMANDS = ("search", "export")


def fail(message: str) -> None:
    sys.stderr.write(f"metasearch: error: {message}\n")
    sys.stderr.flush()
    sys.exit(UsageError.exit_code)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return ms_flags.FLAGS(argv)
    except flags.Error as error:
        fail(str(error).splitlines()[0])
    return []


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter drowns the progress display.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def main(argv: list[str]) -> None:
    positional = argv[1:]
    command = positional[0] if positional else "search"
    if command not in COMMANDS or len(positional) > 1:
        fail(f"unknown command {' '.join(positional)!r}; known: {', '.join(COMMANDS)}")
    _quiet_tensorflow()
    try:
        from metasearch import controller

        if command == "search":
            config = ms_flags.resolve()
            controller.search(config, ms_flags.flagfile_text())
        else:
            FLAGS = ms_flags.FLAGS
            path = controller.export_trial(FLAGS.output_dir, FLAGS.trial, FLAGS.export_dir)
            print(f"Exported trial {FLAGS.trial} to {path}")
    except UsageError as error:
        fail(str(error))


def run() -> None:
    """Console-script entry point."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
