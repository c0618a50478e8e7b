"""The progress display of a running search.

On a terminal one line per trial updates in place; in a log (not a TTY) a
line is written every quarter of a trial, so CI logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    """Prints trial starts, a progress bar per trial, and trial results."""

    def __init__(
        self,
        max_trials: int,
        enabled: bool = True,
        stream: TextIO = sys.stdout,
        metric: str = "accuracy",
    ):
        self.max_trials = max_trials
        # "accuracy" (shown in percent) or "mse" (regression).
        self.metric = metric
        self.enabled = enabled
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._started = 0.0
        self._last_quarter = -1

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def search_started(self, config, jit_compile: bool, done: int = 0, role: str = "local") -> None:
        resumed = f", resuming after {done} finished trials" if done else ""
        where = "" if role == "local" else f" [{role}]"
        if config.evaluator == "table":
            self._write(
                f"metasearch{where}: {config.search_space} scored from {config.table} "
                f"({config.table_column}), {config.max_trials} trials, strategy "
                f"{config.strategy}{resumed}\n  output: {config.output_dir}\n"
            )
            return
        mode = "XLA" if jit_compile else "graph mode"
        self._write(
            f"metasearch{where}: {config.plugin} x {config.search_space} on {config.dataset}, "
            f"{config.max_trials} trials of {config.episodes_per_trial} episodes "
            f"({config.train_n_way}-way {config.k_shot}-shot {config.n_query}-query), "
            f"strategy {config.strategy}, {mode}{resumed}\n  output: {config.output_dir}\n"
        )

    def note(self, line: str) -> None:
        """A line of news (e.g. from the chief of a distributed search)."""
        self._write(line + "\n")

    def trial_started(self, trial_id: str, record: dict[str, Any]) -> None:
        self._started = time.time()
        self._last_quarter = -1
        learner = ", ".join(f"{k}={v}" for k, v in sorted(record["plugin_config"].items()))
        number = int(trial_id) + 1 if str(trial_id).isdigit() else "?"
        what = record["architecture"] + (f" / {learner}" if learner else "")
        self._write(f"trial {trial_id} ({number} of {self.max_trials}): {what}\n")

    def trial_step(
        self, trial_id: str, step: int, total: int, loss: float, accuracy: float
    ) -> None:
        if not self.enabled:
            return
        elapsed = max(time.time() - self._started, 1e-9)
        filled = int(20 * step / total)
        bar = "#" * filled + "." * (20 - filled)
        shown = f"mse {accuracy:.3f}" if self.metric == "mse" else f"acc {100 * accuracy:5.1f}%"
        line = (
            f"  [{bar}] {step}/{total} steps  loss {loss:.3f}  {shown}  "
            f"{step / elapsed:5.1f} steps/s"
        )
        if self.tty:
            self._write("\r" + line)
            return
        quarter = (4 * step) // total
        if quarter != self._last_quarter:
            self._last_quarter = quarter
            self._write(line + "\n")

    def _end_line(self) -> None:
        if self.enabled and self.tty:
            self._write("\n")

    def trial_finished(self, trial_id: str, record: dict[str, Any]) -> None:
        self._end_line()
        if "val_mse" in record:
            self._write(
                f"  -> val MSE {record['val_mse']:.4f} ± {record['val_ci95']:.4f} "
                f"({record['parameters']:,} parameters, {record['wall_seconds']:.0f}s)\n"
            )
            return
        if "val_ci95" not in record:
            self._write(f"  -> table accuracy {100 * record['val_accuracy']:.2f}%\n")
            return
        self._write(
            f"  -> val accuracy {100 * record['val_accuracy']:.2f} ± {100 * record['val_ci95']:.2f}% "
            f"({record['parameters']:,} parameters, {record['wall_seconds']:.0f}s)\n"
        )

    def trial_failed(self, trial_id: str, error: str) -> None:
        self._end_line()
        self._write(f"  -> FAILED: {error}\n")
