"""TensorBoard summaries of a search: every trial's curves, scores, costs and HParams record.

Each trial writes with `tf.summary` into `RUN/tensorboard/trial_ID/` (the
run folder's one exception to `metasearch.rundir`'s writer: TensorFlow writes
its own event files), so `tensorboard --logdir RUN/tensorboard` shows the
learning curves, and its HParams dashboard compares the trials:

* `train/loss`, `train/accuracy` (regression: `train/mse`) and
  `train/episodes_per_second`: a point per chunk of steps, at the number of
  episodes trained so far (a hyperband trial that continues its parent starts
  where the parent stopped);
* at the end, at the last episode: `val/accuracy` (or `val/mse`) and
  `val/ci95`, the meta-test `test/accuracy` (or `test/mse`) and `test/ci95`
  when the trial record has them, and the costs `cost/parameters`,
  `cost/flops`, `cost/latency_ms` and `cost/wall_seconds`;
* one HParams record: the trial's hyperparameters (and its architecture in
  words) when it starts, its status (success or failure) when it ends;
  TensorBoard's HParams dashboard takes the scalars above as its metrics.

Events are flushed after every chunk, so a running or killed trial's curves
are on disk. A trial that starts again (a resumed search, a dead worker's
trial handed on) replaces its folder, so each trial has one record.
`read_trial` reads a trial's folder back (for the HTML report and tests).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from metasearch.rundir import RunDir
from metasearch.training import Chunk

SESSION_START_TAG = "_hparams_/session_start_info"
SESSION_END_TAG = "_hparams_/session_end_info"
# Final-metric tags and the trial-record key each one reads.
FINAL_METRICS = (
    ("val/accuracy", "val_accuracy"),
    ("val/mse", "val_mse"),
    ("val/ci95", "val_ci95"),
    ("test/accuracy", "test_accuracy"),
    ("test/mse", "test_mse"),
    ("test/ci95", "test_ci95"),
    ("cost/parameters", "parameters"),
    ("cost/flops", "flops"),
    ("cost/latency_ms", "latency_ms"),
    ("cost/wall_seconds", "wall_seconds"),
)
_EVENTS_NAME = re.compile(r"^events\.out\.tfevents\.(\d+)\.(.+)\.(\d+)\.(\d+)\.v2$")


def _hparam_value(value: Any) -> bool | int | float | str | None:
    if isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return None if value is None else str(value)


def final_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The final-metric scalars of a trial record (`tag -> value`), those it has."""
    metrics = {}
    for tag, key in FINAL_METRICS:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[tag] = float(value)
    return metrics


class TrialBoard:
    """The TensorBoard writer of one trial (see the module docstring)."""

    def __init__(self, run_dir: RunDir, trial_id: str, metric: str):
        self.logdir = run_dir.tensorboard_dir(trial_id)
        if os.path.isdir(self.logdir):
            shutil.rmtree(self.logdir)  # the trial starts over: its old curves are stale
        self.trial_id = trial_id
        self.metric = metric
        # The session group's name: the run folder and the trial, unique under a parent logdir.
        self.group = f"{os.path.basename(os.path.abspath(run_dir.path))}/trial_{trial_id}"
        self.writer = tf.summary.create_file_writer(self.logdir)
        self.closed = False

    def start(self, hyperparameters: dict[str, Any], architecture: str | None = None) -> None:
        """Writes the HParams record: the trial's hyperparameters and its architecture."""
        from tensorboard.plugins.hparams import api as hp

        values = {}
        for name, value in hyperparameters.items():
            value = _hparam_value(value)
            if value is not None:
                values[name] = value
        if architecture:
            values["architecture"] = architecture
        with self.writer.as_default():
            hp.hparams(values, trial_id=self.group)
        self.writer.flush()

    def curve(self, episodes_before: int = 0) -> Callable[[Chunk], None]:
        """The `MetaTrainer` chunk callback writing the training curves."""

        def write(chunk: Chunk) -> None:
            step = episodes_before + chunk.episodes
            with self.writer.as_default():
                tf.summary.scalar("train/loss", chunk.loss, step=step)
                tf.summary.scalar(f"train/{self.metric}", chunk.metric, step=step)
                tf.summary.scalar("train/episodes_per_second", chunk.episodes_per_second, step=step)
            self.writer.flush()

        return write

    def finish(self, record: dict[str, Any]) -> None:
        """Writes the final metrics and the trial's status, and closes the writer."""
        if self.closed:
            return
        from tensorboard.plugins.hparams import api_pb2
        from tensorboard.plugins.hparams import summary as hparams_summary

        step = int(record.get("episodes") or 0)
        status = (
            api_pb2.Status.STATUS_SUCCESS
            if record.get("status") == "COMPLETED"
            else api_pb2.Status.STATUS_FAILURE
        )
        with self.writer.as_default():
            for tag, value in final_metrics(record).items():
                tf.summary.scalar(tag, value, step=step)
            if record.get("error"):
                tf.summary.text("trial/error", str(record["error"]), step=step)
            tf.summary.experimental.write_raw_pb(
                hparams_summary.session_end_pb(status).SerializeToString(), step=0
            )
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.flush()
            self.writer.close()


# --------------------------------------------------------------------------- reading back


@dataclasses.dataclass
class TrialEvents:
    """A trial's TensorBoard folder read back.

    `scalars` maps each tag to its `(step, value)` points in write order;
    `hparams` holds one dict per HParams record (the hyperparameters),
    `statuses` the session-end statuses (`"STATUS_SUCCESS"`, ...);
    `writers` the `(hostname, pid)` of the processes that wrote the event
    files, and `last_write` the newest file's modification time (0 if none).
    """

    scalars: dict[str, list[tuple[int, float]]]
    hparams: list[dict[str, Any]]
    statuses: list[str]
    writers: list[tuple[str, int]]
    last_write: float = 0.0

    def final(self, tag: str) -> float | None:
        points = self.scalars.get(tag)
        return points[-1][1] if points else None


def event_files(logdir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(glob.escape(logdir), "events.out.tfevents.*")))


def read_trial(logdir: str) -> TrialEvents:
    """Reads a trial's event files (a file still being written is read up to its end)."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    events = TrialEvents({}, [], [], [])
    plugins: dict[str, str] = {}
    for path in event_files(logdir):
        match = _EVENTS_NAME.match(os.path.basename(path))
        if match:
            events.writers.append((match.group(2), int(match.group(3))))
        events.last_write = max(events.last_write, os.path.getmtime(path))
        try:
            for raw in tf.data.TFRecordDataset(path):
                event = tf.compat.v1.Event.FromString(raw.numpy())
                for value in event.summary.value:
                    if value.metadata.plugin_data.plugin_name:
                        plugins[value.tag] = value.metadata.plugin_data.plugin_name
                    plugin = plugins.get(value.tag, "")
                    if value.tag in (SESSION_START_TAG, SESSION_END_TAG):
                        data = plugin_data_pb2.HParamsPluginData.FromString(
                            value.metadata.plugin_data.content
                        )
                        if value.tag == SESSION_START_TAG:
                            events.hparams.append(_hparams(data.session_start_info))
                        else:
                            events.statuses.append(
                                api_pb2.Status.Name(data.session_end_info.status)
                            )
                    elif plugin == "scalars" or value.HasField("simple_value"):
                        number = (
                            value.simple_value
                            if value.HasField("simple_value")
                            else float(tf.make_ndarray(value.tensor))
                        )
                        events.scalars.setdefault(value.tag, []).append((event.step, number))
        except tf.errors.DataLossError:
            pass  # a file cut short (its writer was killed or is writing): read up to there
    return events


def _hparams(info) -> dict[str, Any]:
    values = {}
    for name, value in info.hparams.items():
        kind = value.WhichOneof("kind")
        values[name] = getattr(value, kind) if kind else None
    return values


def writer_alive(hostname: str, pid: int) -> bool | None:
    """Whether the process that wrote an event file still runs (None: another machine)."""
    import socket

    if hostname != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def seconds_since(timestamp: float) -> float:
    return max(0.0, time.time() - timestamp)
