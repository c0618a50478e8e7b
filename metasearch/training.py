"""Meta-training and evaluation: the core's `tf.function` and XLA boundaries.

Plugins provide pure tensor code (`MetaLearner.meta_train_loss`, `adapt`,
`predict`); this module wraps it in compiled functions, applies the
optimiser, watches for divergence and scores held-out episodes. A trainer
saves and restores its whole state (`save_checkpoint`, `restore_checkpoint`:
the learner's weights, the optimiser's moments and step count, the step
reached), so an interrupted run goes on exactly where its checkpoint was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from metasearch import devices as devices_lib
from metasearch import files, graphs
from metasearch.api import Episode, MetaLearner
from metasearch.data.episodes import EvaluationEpisodes
from metasearch.data.preprocess import normalize
from metasearch.tasks import kind_of

JIT_CHOICES = ("auto", "true", "false")
# Distinct images embedded per call in a pooled evaluation.
EMBED_BATCH = 256


class DivergedError(RuntimeError):
    """The meta-training loss became NaN or infinite."""


class Chunk(NamedTuple):
    """What a run of training steps read back: the `on_chunk` callback's argument.

    `step` is the last step done, `episodes` the episodes trained so far
    (steps times the meta-batch size; a resumed run counts on from its
    checkpoint's); `loss` and `metric` are the means over
    the chunk's steps, `episodes_per_second` its speed (wall clock), and
    `train_seconds` the training seconds so far (callbacks left out, earlier
    pieces of a resumed run counted).
    """

    step: int
    episodes: int
    loss: float
    metric: float
    episodes_per_second: float
    train_seconds: float = 0.0


@dataclasses.dataclass
class TrainingState:
    """How far `MetaTrainer.train` got: what a checkpoint keeps beside the variables.

    `step` steps are done (of the run's `total_steps`) in `train_seconds`
    (summed over the pieces of an interrupted run); `losses` and `metrics`
    hold each step's loss and task metric (the summary's last tenth spans
    every piece); `extra` is what the caller stored with it (e.g. the trial's
    hyperparameters, compared before resuming).
    """

    step: int = 0
    train_seconds: float = 0.0
    losses: list[float] = dataclasses.field(default_factory=list)
    metrics: list[float] = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)


def has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def resolve_jit_compile(mode: str) -> bool:
    """`auto` compiles with XLA on GPU and runs plain graphs on CPU.

    On CPU, XLA measured slower here for both metric learners (about 1.4-1.8x)
    and MAML (about 1.2x); see benchmarks/throughput.py.
    """
    mode = str(mode).lower()
    if mode == "auto":
        return has_gpu()
    if mode in ("true", "1", "yes"):
        return True
    if mode in ("false", "0", "no"):
        return False
    raise ValueError(f"jit_compile must be one of {JIT_CHOICES}, got {mode!r}")


def count_parameters(learner: MetaLearner) -> int:
    return int(sum(np.prod(v.shape) for v in learner.trainable_variables))


class MetaTrainer:
    """Meta-trains one learner with Adam under a cosine learning-rate decay.

    `normalization` is the `(mean, std)` applied to every image before the
    learner sees it (the exported model applies the same). The decay spans
    `total_steps` steps, or, when it is None, the wall-clock budget given to
    `train_for`. Each step averages the loss over `meta_batch_size` episodes
    (tasks); a step counts as that many episodes in progress reports.

    `devices > 1` (`--devices`) splits each step's meta-batch across that many
    devices (`metasearch.devices`): replica r takes episodes r*m..(r+1)*m-1
    of the step's m*devices, computes the mean loss of its share and its
    gradients, the gradients are reduced to their mean across replicas (the
    gradient of the whole meta-batch's mean loss) and Adam applies them once.
    The variables stay single copies where the learner made them (see
    `_mirrored_train_step`), so results equal one device's within float
    rounding, batch norm's running statistics included. Evaluation and
    adaptation run on one device.

    The task metric is the task kind's (`metasearch.tasks`): `accuracy` for
    classification, `mse` (mean squared error) for regression.
    """

    final_learning_rate_fraction = 0.05

    def __init__(
        self,
        learner: MetaLearner,
        normalization: tuple[float, float],
        learning_rate: float,
        total_steps: int | None,
        jit_compile: bool,
        meta_batch_size: int = 1,
        devices: int = 1,
    ):
        if meta_batch_size < 1:
            raise ValueError(f"meta_batch_size must be >= 1, got {meta_batch_size}")
        if devices < 1 or meta_batch_size % devices:
            raise ValueError(
                f"meta_batch_size ({meta_batch_size}) must be a multiple of devices ({devices})"
            )
        self.learner = learner
        self.meta_batch_size = int(meta_batch_size)
        self.kind = kind_of(learner.task)
        self.metric = self.kind.metric
        self.mean, self.std = (float(v) for v in normalization)
        self.base_learning_rate = float(learning_rate)
        self.decays_over_time = total_steps is None
        if self.decays_over_time:
            schedule = self.base_learning_rate  # a variable that train_for assigns
        else:
            schedule = keras.optimizers.schedules.CosineDecay(
                learning_rate,
                decay_steps=max(1, total_steps),
                alpha=self.final_learning_rate_fraction,
            )
        self.optimizer = keras.optimizers.Adam(schedule)
        self.jit_compile = jit_compile
        self.train_step = graphs.function(self._train_step, jit_compile=jit_compile)
        self.eval_step = graphs.function(self._eval_step, jit_compile=jit_compile)
        self.adapt_step = graphs.function(self._adapt_step, jit_compile=jit_compile)
        self.embed_step = graphs.function(
            self._embed_step, jit_compile=jit_compile, reduce_retracing=True
        )
        self.pooled_eval_step = graphs.function(
            self._pooled_eval_step, jit_compile=jit_compile, reduce_retracing=True
        )
        self.devices = int(devices)
        if self.devices > 1:
            self.strategy = devices_lib.strategy(self.devices)
            self._reached: list[int] = []  # which variables a loss reaches (set when traced)
            # Under XLA each replica's share is one compiled call (on CPUs the strategy
            # compiles them together). Untested on several GPUs: there both calls update
            # the same running statistics, which may order them one after the other.
            self._replica_step = (
                graphs.function(self._share_gradients, jit_compile=True)
                if jit_compile
                else self._share_gradients
            )
            self.train_step = graphs.function(self._mirrored_train_step)

    def _normalize(self, episode: Episode) -> Episode:
        return episode._replace(
            support_images=normalize(episode.support_images, self.mean, self.std),
            query_images=normalize(episode.query_images, self.mean, self.std),
        )

    def build(self, episode: Episode) -> None:
        """Creates the learner's and optimiser's variables from one episode (eagerly)."""
        episode = self._normalize(episode)
        num_classes = self._num_classes(episode.support_labels)
        self.learner.meta_train_loss(episode)
        state = self.learner.adapt(episode.support_images, episode.support_labels, num_classes)
        # One query image creates the same variables as all of them (inference mode
        # changes no state), for a fraction of two eager passes over the query set.
        self.learner.predict(state, episode.query_images[:1])
        self.learner.embed(episode.query_images[:1])
        self.optimizer.build(self.learner.trainable_variables)

    def trace(self, episodes: Episode | tuple[Episode, ...]) -> None:
        """Traces the training step for `episodes`' shapes now, without running it.

        `train` then reuses the trace; the caller can time tracing apart from training.
        """
        batch = tuple(episodes) if not isinstance(episodes, Episode) else (episodes,)
        self.train_step.get_concrete_function(batch[0] if len(batch) == 1 else batch)

    def _num_classes(self, support_labels) -> int:
        return self.kind.classes_in(support_labels)

    def checkpoint_variables(self) -> dict[str, list]:
        """What a checkpoint saves: every weight of the learner and the optimiser's variables.

        Adam's moments and its iteration count (the cosine decay reads the
        learning rate from it), so a restored trainer steps on exactly as the
        saved one would have.
        """
        return {"learner": list(self.learner.weights), "optimizer": list(self.optimizer.variables)}

    def save_checkpoint(self, path: str, state: TrainingState) -> None:
        """Writes the trainer's variables and `state` to `path` in one atomic write.

        A kill during the write leaves the previous checkpoint as it was.
        """

        files.save_checkpoint(
            path,
            self.checkpoint_variables(),
            {"step": state.step, "train_seconds": state.train_seconds, "extra": state.extra},
            {
                "losses": np.asarray(state.losses, np.float64),
                "metrics": np.asarray(state.metrics, np.float64),
            },
        )

    @staticmethod
    def read_checkpoint(path: str) -> TrainingState:
        """The state a checkpoint holds, without assigning anything (e.g. to check `extra`).

        `FileNotFoundError` when there is none; `DamagedFileError` when it cannot be read.
        """
        from metasearch.errors import DamagedFileError

        values, arrays = files.read_checkpoint(path)
        try:
            return TrainingState(
                step=int(values["step"]),
                train_seconds=float(values["train_seconds"]),
                losses=[float(v) for v in arrays["losses"]],
                metrics=[float(v) for v in arrays["metrics"]],
                extra=dict(values.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise DamagedFileError(path, f"not a trainer's checkpoint ({error})") from None

    def restore_checkpoint(self, path: str) -> TrainingState:
        """Assigns the variables `save_checkpoint` wrote (after `build`); returns its state.

        Pass the state to `train(resume=...)` with the episodes from where it
        stopped. Variables that do not match this trainer's raise `UsageError`.
        """

        state = self.read_checkpoint(path)
        files.load_checkpoint(path, self.checkpoint_variables())
        return state

    def _mean_loss_and_gradients(self, episodes: tuple[Episode, ...]):
        """The mean loss and task metric of `episodes`, and the loss's gradients.

        The loss is NaN when a gradient is not finite (`_nan_unless_finite`).
        """
        variables = self.learner.trainable_variables
        with tf.GradientTape() as tape:
            losses, values = [], []
            for episode in episodes:
                loss, metrics = self.learner.meta_train_loss(self._normalize(episode))
                losses.append(loss)
                values.append(metrics[self.metric])
            loss = tf.add_n(losses) / len(episodes)
        gradients = tape.gradient(loss, variables)
        metric = tf.add_n(values) / len(episodes)
        return _nan_unless_finite(loss, gradients), metric, gradients

    def _train_step(self, episodes: Episode | tuple[Episode, ...]):
        """One optimiser step on an episode, or on the mean loss of a tuple of them."""
        batch = (episodes,) if isinstance(episodes, Episode) else tuple(episodes)
        loss, metric, gradients = self._mean_loss_and_gradients(batch)
        # Weights a loss cannot reach (e.g. first-order MAML's per-step batch
        # norm of the support passes) get no update, without a warning per trace.
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, self.learner.trainable_variables) if g is not None]
        )
        return loss, {self.metric: metric}

    def _share_gradients(self, episodes: tuple[Episode, ...]):
        """One replica's part of a step: the mean loss and metric of its episodes, gradients."""
        loss, metric, gradients = self._mean_loss_and_gradients(tuple(episodes))
        self._reached = [i for i, g in enumerate(gradients) if g is not None]
        return loss, metric, [gradients[i] for i in self._reached]

    def _mirrored_train_step(self, episodes: tuple[Episode, ...]):
        """`_train_step` with the meta-batch split across `self.strategy`'s replicas.

        The variables are the learner's own single copies, not mirrored ones:
        within this one graph, TensorFlow orders every read and write of a
        variable as the program traces them, replica 0's first, so state a
        training pass writes (batch norm's running statistics, seed
        generators) goes through episode after episode exactly as on one
        device, while the replicas' forward and backward passes run in
        parallel. (Keras 3 layers built under `strategy.scope()` do make
        `MirroredVariable`s, but each replica then updates its own copy of
        the running statistics, which no longer match one device's.)
        """
        batch = tuple(episodes)
        share = len(batch) // self.devices

        def replica_share(context):
            first = context.replica_id_in_sync_group * share
            return batch[first : first + share]

        shares = self.strategy.experimental_distribute_values_from_function(replica_share)
        loss, metric, gradients = self.strategy.run(self._replica_step, args=(shares,))
        mean = tf.distribute.ReduceOp.MEAN
        variables = [self.learner.trainable_variables[i] for i in self._reached]
        # All-reduced in one batch (NCCL on GPUs); replica 0's copy of the mean is applied.
        gradients = self.strategy.extended.batch_reduce_to(mean, [(g, g) for g in gradients])
        gradients = [self.strategy.experimental_local_results(g)[0] for g in gradients]
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self.strategy.reduce(mean, loss, axis=None), {
            self.metric: self.strategy.reduce(mean, metric, axis=None)
        }

    def _adapt_step(self, support_images, support_labels, query_images, num_classes: int):
        support_images = normalize(support_images, self.mean, self.std)
        query_images = normalize(query_images, self.mean, self.std)
        state = self.learner.adapt(support_images, support_labels, num_classes)
        return self.learner.predict(state, query_images)

    def _eval_step(self, episode: Episode, num_classes: int):
        """The task metric on one episode: query accuracy, or query MSE for regression."""
        outputs = self._adapt_step(
            episode.support_images, episode.support_labels, episode.query_images, num_classes
        )
        return self.kind.episode_metric(outputs, episode.query_labels)

    def _embed_step(self, images):
        return self.learner.embed(normalize(images, self.mean, self.std))

    def _pooled_eval_step(
        self, embeddings, support_rows, support_labels, query_rows, query_labels, num_classes: int
    ):
        """The task metric of every episode `[E]` from the embeddings of its images' rows."""

        def episode_metric(rows):
            support, query = tf.gather(embeddings, rows[0]), tf.gather(embeddings, rows[1])
            state = self.learner.adapt_embeddings(support, support_labels, num_classes)
            outputs = self.learner.predict_embeddings(state, query)
            return self.kind.episode_metric(outputs, query_labels)

        return tf.map_fn(episode_metric, (support_rows, query_rows), fn_output_signature=tf.float32)

    def train(
        self,
        episodes: tf.data.Dataset | Iterator,
        steps: int | None,
        on_progress: Callable[[int, float, float], None] | None = None,
        check_every: int = 20,
        on_chunk: Callable[[Chunk], None] | None = None,
        resume: TrainingState | None = None,
        on_checkpoint: Callable[[TrainingState], None] | None = None,
        checkpoint_seconds: float = 0.0,
        seconds: float | None = None,
    ) -> dict[str, float]:
        """Runs `steps` meta-training steps, or `seconds` of training; raises `DivergedError`
        on a non-finite loss.

        `episodes` is a dataset (read from its start) or an iterator (read on
        from where it is); each step reads `meta_batch_size` episodes.
        `on_progress(step, loss, metric)` is called every `check_every` steps,
        and `on_chunk(Chunk)` with the chunk's means and speed (e.g. to write
        learning curves), outside the compiled steps. Returns the mean loss
        and task metric over the last tenth of training, the seconds spent and
        the steps reached.

        With `seconds` instead of `steps` (a trainer made with
        `total_steps=None`), training goes on in chunks of `check_every` steps
        until `seconds` of training are spent (callbacks left out), and the
        learning rate follows a cosine over those seconds: whatever the speed,
        the whole time is used and the rate ends at the same floor.

        `resume` (what `restore_checkpoint` returned) goes on from its step to
        `steps` (or from its seconds to `seconds`): `episodes` must then start
        at the episode that step reached (its step times the meta-batch size),
        and steps, losses and seconds count on from the checkpoint's. Between
        chunks of steps, once `checkpoint_seconds` of training passed since
        the last one (0: never), `on_checkpoint(TrainingState)` is called
        (e.g. to `save_checkpoint`).
        """
        if (steps is None) == (seconds is None):
            raise ValueError("train needs either steps or seconds")
        if seconds is not None and not self.decays_over_time:
            raise ValueError("training for seconds needs a MetaTrainer made with total_steps=None")
        done = resume.step if resume is not None else 0
        if isinstance(episodes, tf.data.Dataset) and steps is not None:
            episodes = episodes.take(max(0, steps - done) * self.meta_batch_size)
        iterator = iter(episodes)
        log = _TrainingLog(on_progress, check_every, self.metric, on_chunk, self.meta_batch_size)
        log.resume(resume)
        if on_checkpoint is not None and checkpoint_seconds and checkpoint_seconds > 0:
            log.checkpoint(on_checkpoint, checkpoint_seconds)
        if seconds is None:
            self._run_steps(iterator, steps - done, log)
        else:
            self._run_for(iterator, seconds, log)
        return {**log.summary(), "steps": log.step}

    def train_for(
        self,
        episodes: tf.data.Dataset,
        seconds: float,
        chunk: int = 50,
        on_progress: Callable[[int, float, float], None] | None = None,
        on_chunk: Callable[[Chunk], None] | None = None,
    ) -> dict[str, float]:
        """Meta-trains for `seconds` of training, the learning rate on a cosine over them.

        `train(episodes, None, seconds=seconds, check_every=chunk)`; needs a
        trainer made with `total_steps=None`.
        """
        return self.train(
            episodes, None, on_progress, chunk, on_chunk=on_chunk, seconds=float(seconds)
        )

    def _run_for(self, iterator: Iterator, seconds: float, log: _TrainingLog) -> None:
        floor = self.final_learning_rate_fraction
        while (elapsed := log.seconds()) < seconds:
            cosine = 0.5 * (1.0 + math.cos(math.pi * elapsed / seconds))
            self.optimizer.learning_rate.assign(
                self.base_learning_rate * (floor + (1.0 - floor) * cosine)
            )
            before = log.step
            self._run_steps(iterator, log.check_every, log)
            if log.step == before:
                break  # the episode stream ended

    def _run_steps(self, iterator: Iterator, steps: int, log: _TrainingLog) -> None:
        pending = []
        for _ in range(steps):
            batch = tuple(itertools.islice(iterator, self.meta_batch_size))
            if len(batch) < self.meta_batch_size:
                break
            loss, metrics = self.train_step(batch[0] if len(batch) == 1 else batch)
            pending.append((loss, metrics[self.metric]))
            # Reading values back forces a sync; batch it to keep steps flowing.
            if len(pending) == log.check_every:
                log.record(pending)
                pending = []
        if pending:
            log.record(pending)

    def evaluate(
        self, episodes: tf.data.Dataset | EvaluationEpisodes, num_classes: int
    ) -> np.ndarray:
        """Per-episode task metric (accuracy, or MSE) over a finite episode stream.

        Pooled when it can be: for `EvaluationEpisodes` and a learner that
        `EMBEDS_IMAGES_INDEPENDENTLY`, each distinct image of the episodes is
        embedded once and every episode is scored from those embeddings (the
        same numbers, within float rounding, for a fraction of the work:
        200 validation episodes of 80 images usually show a few hundred).
        """
        if isinstance(episodes, EvaluationEpisodes) and self.learner.EMBEDS_IMAGES_INDEPENDENTLY:
            with _expected_retracing():
                return self._evaluate_pooled(episodes, num_classes)
        results = [self.eval_step(episode, num_classes) for episode in episodes]
        return np.array([float(r) for r in results], np.float64)

    def _evaluate_pooled(self, episodes: EvaluationEpisodes, num_classes: int) -> np.ndarray:
        support, query = episodes.indices()
        distinct, rows = np.unique(np.concatenate([support, query], axis=1), return_inverse=True)
        rows = rows.reshape(len(support), -1).astype(np.int32)
        # Every call embeds EMBED_BATCH images (the last padded with repeats), so one
        # trace, or one XLA compilation, serves every evaluation.
        padded = np.resize(distinct, -(-len(distinct) // EMBED_BATCH) * EMBED_BATCH)
        embeddings = tf.concat(
            [
                self.embed_step(episodes.pool.images(tf.constant(padded[i : i + EMBED_BATCH])))
                for i in range(0, len(padded), EMBED_BATCH)
            ],
            axis=0,
        )  # rows beyond len(distinct) are padding, never gathered
        support_labels, query_labels = episodes.labels()
        width = support.shape[1]
        scores = self.pooled_eval_step(
            embeddings,
            tf.constant(rows[:, :width]),
            support_labels,
            tf.constant(rows[:, width:]),
            query_labels,
            num_classes,
        )
        return scores.numpy().astype(np.float64)


class _RetracingWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _expected_retracing():
    """Silences TensorFlow's frequent-retracing warning, for steps traced once per trainer.

    A pooled evaluation calls its steps a few times per trainer, and a search
    makes a trainer per trial: TensorFlow counts those traces across trainers
    and warns, though each trainer traces once per shape, as it must.
    """
    quiet = _RetracingWarnings()
    logger = logging.getLogger("tensorflow")
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _nan_unless_finite(loss: tf.Tensor, gradients) -> tf.Tensor:
    """`loss`, or NaN when a gradient is not finite, so divergence is caught either way.

    A finite loss does not prove a finite step: on CPU, ReLU and max pooling
    turn NaN activations into numbers, so NaN weights or inputs can leave the
    loss finite while their gradients are NaN.
    """
    finite = tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None] or [True]
    )
    return tf.where(finite, loss, tf.constant(float("nan"), loss.dtype))


class _TrainingLog:
    """Losses and task metrics read back from training steps, checked for divergence."""

    def __init__(
        self,
        on_progress: Callable[[int, float, float], None] | None,
        check_every: int,
        metric: str = "accuracy",
        on_chunk: Callable[[Chunk], None] | None = None,
        meta_batch_size: int = 1,
    ):
        self.on_progress = on_progress
        self.on_chunk = on_chunk
        self.meta_batch_size = meta_batch_size
        self.check_every = check_every
        self.metric = metric
        self.losses: list[float] = []
        self.accuracies: list[float] = []
        self.step = 0
        self.start = time.perf_counter()
        self._chunk_start = self.start
        self._seconds_before = 0.0  # in earlier pieces of a resumed run
        self._on_checkpoint: Callable[[TrainingState], None] | None = None
        self._checkpoint_seconds = 0.0
        self._last_checkpoint = self.start
        self.callback_seconds = 0.0  # in the callbacks: not training

    def resume(self, state: TrainingState | None) -> None:
        """Counts on from a checkpoint's step, losses, metrics and seconds."""
        if state is not None:
            self.step = state.step
            self.losses = list(state.losses)
            self.accuracies = list(state.metrics)
            self._seconds_before = state.train_seconds

    def checkpoint(self, on_checkpoint: Callable[[TrainingState], None], seconds: float) -> None:
        """Calls `on_checkpoint(state)` after a chunk once `seconds` passed since the last."""
        self._on_checkpoint = on_checkpoint
        self._checkpoint_seconds = float(seconds)

    def seconds(self) -> float:
        """Training seconds so far (callbacks left out), earlier pieces of a resumed run included."""
        return self._seconds_before + time.perf_counter() - self.start - self.callback_seconds

    def state(self) -> TrainingState:
        return TrainingState(self.step, self.seconds(), list(self.losses), list(self.accuracies))

    def record(self, pending: list[tuple[tf.Tensor, tf.Tensor]]) -> None:
        for loss, accuracy in pending:
            self.step += 1
            loss_value = float(loss)
            if not math.isfinite(loss_value):
                raise DivergedError(
                    f"meta-training loss (or its gradients) became {loss_value} "
                    f"by episode {self.step}"
                )
            self.losses.append(loss_value)
            self.accuracies.append(float(accuracy))
        now = time.perf_counter()
        if self.on_progress is not None:
            recent = self.accuracies[-self.check_every :]
            self.on_progress(self.step, self.losses[-1], float(np.mean(recent)))
        if self.on_chunk is not None and pending:
            count = len(pending)
            seconds = max(now - self._chunk_start, 1e-9)
            self.on_chunk(
                Chunk(
                    step=self.step,
                    episodes=self.step * self.meta_batch_size,
                    loss=float(np.mean(self.losses[-count:])),
                    metric=float(np.mean(self.accuracies[-count:])),
                    episodes_per_second=count * self.meta_batch_size / seconds,
                    train_seconds=self._seconds_before + now - self.start - self.callback_seconds,
                )
            )
        if self._on_checkpoint is not None and now - self._last_checkpoint >= (
            self._checkpoint_seconds
        ):
            self._on_checkpoint(self.state())
            self._last_checkpoint = time.perf_counter()
        # The next chunk's time starts after the callbacks (they are not training).
        self._chunk_start = time.perf_counter()
        self.callback_seconds += self._chunk_start - now

    def summary(self) -> dict[str, float]:
        """Mean loss and metric over the last tenth of training, seconds training and in callbacks."""
        tail = max(1, len(self.losses) // 10)
        return {
            "train_loss": float(np.mean(self.losses[-tail:])) if self.losses else float("nan"),
            f"train_{self.metric}": float(np.mean(self.accuracies[-tail:]))
            if self.accuracies
            else float("nan"),
            "train_seconds": self.seconds(),
            "callback_seconds": self.callback_seconds,
        }
