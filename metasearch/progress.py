"""The progress display of a running search.

On a terminal one line per trial updates in place; in a log (not a TTY) a
line is written every quarter of a trial, so CI logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from metasearch.budget import TimeBudget, format_duration
from metasearch.config import searched_training_text


class Progress:
    """Prints trial starts, a progress bar per trial, and trial results."""

    def __init__(
        self,
        max_trials: int | None,
        enabled: bool = True,
        stream: TextIO = sys.stdout,
        metric: str = "accuracy",
        budget: TimeBudget | None = None,
    ):
        self.max_trials = max_trials
        # With --time_budget, trial lines show the time left and an ETA.
        self.budget = budget
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

    def search_started(
        self,
        config,
        jit_compile: bool,
        done: int = 0,
        role: str = "local",
        precision: str = "float32",
        intra_op_threads: int = 0,
    ) -> None:
        resumed = f", resuming after {done} finished trials" if done else ""
        where = "" if role == "local" else f" [{role}]"
        if config.evaluator == "table":
            self._write(
                f"metasearch{where}: {config.search_space} scored from {config.table} "
                f"({config.table_column}), {self._trials_planned(config)}, strategy "
                f"{config.strategy}{resumed}\n  output: {config.output_dir}\n"
            )
            return
        mode = ("XLA" if jit_compile else "graph mode") + (
            f", {precision}" if precision != "float32" else ""
        )
        if intra_op_threads:  # 0: TensorFlow's default, every core per op
            mode += f", {intra_op_threads} thread{'s' * (intra_op_threads != 1)} per op"
        self._write(
            f"metasearch{where}: {config.plugin} x {config.search_space} on {config.dataset}, "
            f"{self._trials_planned(config)} of {self._trial_length(config)} "
            f"({self._training_episodes(config)}), "
            f"strategy {config.strategy}, {mode}{resumed}\n  output: {config.output_dir}\n"
        )

    @staticmethod
    def _training_episodes(config) -> str:
        """`20-way 1-shot 15-query`, with searched choices as `20/40/60-way`.

        New classes follow: `, mirrored classes` (`--class_augment`), or
        `, mirrored classes searched` (`--class_augments`).
        """
        ways = config.train_n_ways or (config.train_n_way,)
        queries = config.train_n_queries or (config.n_query,)
        text = (
            f"{'/'.join(str(way) for way in ways)}-way {config.k_shot}-shot "
            f"{'/'.join(str(query) for query in queries)}-query"
        )
        if len(config.class_augments) > 1:
            return f"{text}, mirrored classes searched"
        if config.class_augment == "mirror":
            return f"{text}, mirrored classes"
        return text

    @staticmethod
    def _trial_length(config) -> str:
        if config.trial_seconds is not None:
            return f"{format_duration(config.trial_seconds)} training"
        return f"{config.episodes_per_trial} episodes"

    def _trials_planned(self, config) -> str:
        if self.budget is None:
            return f"{config.max_trials} trials"
        cap = f" (at most {config.max_trials})" if config.max_trials else ""
        return (
            f"trials for {format_duration(self.budget.search_seconds)} of a "
            f"{format_duration(self.budget.total)} budget{cap}"
        )

    def _eta(self) -> str:
        """`; 21m10s left of 30m00s, ends about 16:02` with a budget, else nothing."""
        if self.budget is None:
            return ""
        ends = time.strftime("%H:%M", time.localtime(time.time() + self.budget.left()))
        return f"; {self.budget.describe()}, ends about {ends}"

    def note(self, line: str) -> None:
        """A line of news (e.g. from the chief of a distributed search)."""
        self._write(line + "\n")

    def trial_started(self, trial_id: str, record: dict[str, Any]) -> None:
        self._started = time.time()
        self._last_quarter = -1
        learner = ", ".join(f"{k}={v}" for k, v in sorted(record["plugin_config"].items()))
        training = searched_training_text(record.get("hyperparameters", {}))
        learner += (", " if learner else "") + training if training else ""
        number = int(trial_id) + 1 if str(trial_id).isdigit() else "?"
        what = record["architecture"] + (f" / {learner}" if learner else "")
        of = f" of {self.max_trials}" if self.max_trials else ""
        self._write(f"trial {trial_id} ({number}{of}{self._eta()}): {what}\n")

    def trial_step(
        self,
        trial_id: str,
        step: int,
        total: int | None,
        loss: float,
        accuracy: float,
        seconds: tuple[float, float] | None = None,
    ) -> None:
        """A trial's progress: `step` of `total` steps, or `seconds=(spent, budget)` of training."""
        if not self.enabled:
            return
        elapsed = max(time.time() - self._started, 1e-9)
        done = min(1.0, seconds[0] / seconds[1]) if seconds is not None else step / total
        filled = int(20 * done)
        bar = "#" * filled + "." * (20 - filled)
        shown = f"mse {accuracy:.3f}" if self.metric == "mse" else f"acc {100 * accuracy:5.1f}%"
        where = (
            f"{step} steps, {seconds[0]:.0f}/{seconds[1]:.0f} s"
            if seconds is not None
            else f"{step}/{total} steps"
        )
        line = f"  [{bar}] {where}  loss {loss:.3f}  {shown}  {step / elapsed:5.1f} steps/s"
        if self.tty:
            self._write("\r" + line)
            return
        quarter = int(4 * done)
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
        share = record.get("train_share")
        training = f", {100 * share:.0f}% of it training" if share is not None else ""
        self._write(
            f"  -> val accuracy {100 * record['val_accuracy']:.2f} ± {100 * record['val_ci95']:.2f}% "
            f"({record['parameters']:,} parameters, {record['wall_seconds']:.0f}s{training})\n"
        )

    def trial_failed(self, trial_id: str, error: str) -> None:
        self._end_line()
        self._write(f"  -> FAILED: {error}\n")
