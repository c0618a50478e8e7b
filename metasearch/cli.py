"""The `metasearch` command: `metasearch [search] --flags`, `metasearch export` and
`metasearch sample` (new images from a generative learner, as a PNG grid).

Bad input (a flag, a file, a value) ends with one line on stderr naming the
problem and exit status 2.
"""

from __future__ import annotations

import contextlib
import os
import sys

from absl import app, flags
from absl import logging as absl_logging

from metasearch import flags as ms_flags
from metasearch.errors import UsageError

COMMANDS = ("search", "export", "sample")


def fail(message: str) -> None:
    sys.stderr.write(f"metasearch: error: {message}\n")
    sys.stderr.flush()
    sys.exit(UsageError.exit_code)


HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull", "--helpxml")


def _define_component_flags() -> None:
    """Every registered component's option flags (imports them, so TensorFlow starts)."""
    try:
        _import_tensorflow_quietly()
        if os.environ.get("METASEARCH_DEBUG"):
            ms_flags.define_component_flags()
            return
        with _quiet_stderr():
            ms_flags.define_component_flags()
    except UsageError as error:
        fail(str(error))
    except Exception as error:  # noqa: BLE001 - a broken third-party package, say which
        fail(f"cannot load the registered components: {type(error).__name__}: {error}")


def _parse_flags(argv: list[str]) -> list[str]:
    _define_component_flags()
    try:
        return ms_flags.FLAGS(argv)
    except flags.Error as error:
        fail(str(error).splitlines()[0])
    except SystemExit:
        # absl exits with status 1 after printing help; asking for help is no error.
        if any(arg.split("=")[0] in HELP_FLAGS for arg in argv[1:]):
            sys.exit(0)
        raise
    return []


@contextlib.contextmanager
def _quiet_stderr():
    """Sends the process's own stderr (fd 2) to /dev/null for the duration.

    TensorFlow's C++ start-up messages are printed before its logging is
    initialised and ignore TF_CPP_MIN_LOG_LEVEL; they would drown the one-line
    errors and the progress display. Python exceptions still surface: they
    are printed after the context restores stderr.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import_tensorflow_quietly() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if os.environ.get("METASEARCH_DEBUG"):
        return
    with _quiet_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")


def _check_names() -> None:
    """Fails on unknown component names at once, listing the known ones."""
    from metasearch import registry

    parsed = ms_flags.FLAGS
    checks = [("search_space", parsed.search_space), ("strategy", parsed.strategy)]
    if parsed.evaluator == "train":
        checks += [("plugin", parsed.plugin), ("dataset", parsed.dataset)]
    try:
        for kind, name in checks:
            registry.check_known(kind, name, kind)
    except UsageError as error:
        fail(str(error))


def main(argv: list[str]) -> None:
    positional = argv[1:]
    command = positional[0] if positional else "search"
    if command not in COMMANDS or len(positional) > 1:
        fail(f"unknown command {' '.join(positional)!r}; known: {', '.join(COMMANDS)}")
    if command == "search":
        _check_names()
    _import_tensorflow_quietly()
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        from metasearch import controller

        if command == "search":
            config = ms_flags.resolve()
            controller.search(config)
        elif command == "sample":
            from metasearch import sampling

            parsed = ms_flags.FLAGS
            path = sampling.sample_run(
                parsed.output_dir,
                parsed.trial,
                parsed.sample_png,
                parsed.sample_classes,
                parsed.sample_shots,
                parsed.samples_per_class,
                parsed.seed,
                parsed.data_dir,
            )
            print(f"Wrote samples of trial {parsed.trial} to {path}")
        else:
            from metasearch import export

            parsed = ms_flags.FLAGS
            path = export.export_trial(
                parsed.output_dir, parsed.trial, parsed.export_dir, what=parsed.what
            )
            print(f"Exported the {parsed.what} of trial {parsed.trial} to {path}")
    except UsageError as error:
        fail(str(error))


def run() -> None:
    """Console-script entry point."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
