"""The `metasearch` command: `metasearch [search] --flags`, `metasearch export`,
`metasearch sample` (new images from a generative learner, as a PNG grid),
`metasearch report` (a run's self-contained HTML report) and
`metasearch compare RUN1 RUN2 ...` (several runs' best learners side by side).

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
from metasearch.errors import Interrupted, MetasearchError, UsageError

COMMANDS = ("search", "export", "sample", "report", "compare")


def fail(message: str, exit_code: int = UsageError.exit_code) -> None:
    """One line on stderr and the exit status (see `metasearch.errors`: 2 bad input, ...)."""
    sys.stderr.write(f"metasearch: error: {message}\n")
    sys.stderr.flush()
    sys.exit(exit_code)


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
    if command not in COMMANDS or (len(positional) > 1 and command != "compare"):
        fail(f"unknown command {' '.join(positional)!r}; known: {', '.join(COMMANDS)}")
    if command == "search":
        _check_names()
    _import_tensorflow_quietly()
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        from metasearch import controller

        if command == "search":
            config = ms_flags.resolve()
            controller.search(config, out=sys.stdout)  # the current stdout (tests redirect it)
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
        elif command == "report":
            from metasearch import html_report

            path = html_report.write_report(ms_flags.FLAGS.output_dir, ms_flags.FLAGS.html)
            print(f"Wrote the report of {ms_flags.FLAGS.output_dir} to {path}")
        elif command == "compare":
            _compare(positional[1:], ms_flags.FLAGS.html)
        else:
            from metasearch import export

            parsed = ms_flags.FLAGS
            path = export.export_trial(
                parsed.output_dir,
                parsed.trial,
                parsed.export_dir,
                what=parsed.what,
                report=lambda line: print(f"note: {line}"),
            )
            print(f"Exported the {parsed.what} of trial {parsed.trial} to {path}")
    except (MetasearchError, Interrupted) as error:
        fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        fail("interrupted; nothing was half-written: rerun the same command", 130)


def _compare(runs: list[str], html: str | None) -> None:
    from metasearch import compare
    from metasearch.rundir import write_atomic

    views = compare.load_runs(runs)
    print(compare.table(views), end="")
    if html:
        try:
            write_atomic(html, compare.render(views))
        except OSError as error:
            raise UsageError(f"--html: cannot write {html} ({error.strerror or error})") from None
        print(f"Wrote the comparison to {html}")


def run() -> None:
    """Console-script entry point."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
