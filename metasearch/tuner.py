"""The keras-tuner tuner: a trial meta-trains and scores one few-shot learner.

keras-tuner keeps the books (oracle, trial states, resume, retries,
distribution); `FewShotTuner.run_trial` builds the sampled candidate, trains
it (or, for a table-scored search, looks its score up), scores it on fixed
meta-validation episodes and saves its weights and record in the trial's
folder. A trial that diverges or raises is reported to keras-tuner as failed
and the search goes on. A failed write to the run folder (`StorageError`) or
Ctrl-C/SIGTERM (`metasearch.interrupts`) stops the search instead: the trial
is handed back to the oracle (`kt_adapter.hand_back`), so no record is left
RUNNING and the trial runs again when the search resumes.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import math
import os
import time
import traceback
from typing import Any

import keras
import keras_tuner
import numpy as np

from metasearch import distributed, interrupts, kt_adapter, latency, racing, report, summaries
from metasearch.budget import TimeBudget
from metasearch.components import training_task
from metasearch.data import episodes
from metasearch.errors import DamagedFileError, MetasearchError, StorageError, UsageError
from metasearch.flops import estimate_flops
from metasearch.job import Job, derived_seed, over_budget
from metasearch.progress import Progress
from metasearch.rundir import (
    BUDGET_FILE,
    PROJECT_NAME,
    json_text,
    load_weights,
    remove_file,
    save_weights,
)
from metasearch.training import DivergedError, MetaTrainer, TrainingState, count_parameters


class BudgetError(Exception):
    """A candidate over `--max_params` reached training (the oracle should have rejected it)."""


class FewShotTuner(kt_adapter.BaseTuner):
    """keras-tuner tuner whose trial meta-trains and scores one few-shot learner."""

    def __init__(
        self,
        job: Job,
        oracle: keras_tuner.Oracle,
        progress: Progress,
        budget: TimeBudget | None = None,
    ):
        self.job = job
        self.progress = progress
        self.budget = budget
        self._trial_started = time.monotonic()
        if budget is not None and job.role != "worker":
            # No trial starts once the search's share of --time_budget cannot hold one.
            oracle.stop_condition = budget.stop_reason
        if job.role != "worker" and job.config.max_params is not None:
            # Rejected candidates are never trials: the strategy proposes others.
            oracle.candidate_filter = job.candidate_violation
        elif job.role != "worker" and job.table is not None:
            # Cells missing from the table are never trials either (None: it has them all).
            oracle.candidate_filter = job.table.candidate_filter
        super().__init__(
            oracle=oracle,
            hypermodel=job.components.sample,
            directory=job.config.output_dir,
            project_name=PROJECT_NAME,
            overwrite=False,
        )

    def search(self, *fit_args, **fit_kwargs):
        """keras-tuner's search loop; the chief serves the oracle, waiting workers sleep."""
        if self.job.role == "chief":
            self.save()
            with interrupts.interruptible():
                distributed.serve(
                    self.oracle,
                    self.job.config.worker_timeout,
                    report=lambda line: self.progress.note(line),
                )
            return
        if self.job.role == "local":
            self.oracle.verbose = 0
        # What exists now (modules, the job's images, the oracle) lives through the
        # search. Frozen, it is no longer walked by Python's collector, which each
        # trial's clear_session runs: 0.2 s a trial over some 380,000 objects before.
        gc.freeze()
        try:
            self._run_trials(*fit_args, **fit_kwargs)
        finally:
            gc.unfreeze()  # a search run from Python leaves nothing frozen behind

    def _run_trials(self, *fit_args, **fit_kwargs):
        """keras-tuner's loop: trials from the oracle until it says the search is over."""
        self.on_search_begin()
        while True:
            interrupts.check()  # a clean point: Ctrl-C during the books stops here
            self.pre_create_trial()
            trial = self.oracle.create_trial(self.tuner_id)
            if trial.status == keras_tuner.engine.trial.TrialStatus.STOPPED:
                break
            if trial.status == keras_tuner.engine.trial.TrialStatus.IDLE:
                # Others still run trials that may come back; ask again shortly.
                time.sleep(1.0)
                continue
            self.on_trial_begin(trial)
            try:
                kt_adapter.run_and_update_trial(self, trial, *fit_args, **fit_kwargs)
            except (KeyboardInterrupt, keras_tuner.errors.FatalError) as error:
                raise self._stopped_midway(trial, error) from None
            self.on_trial_end(trial)
        self.on_search_end()

    def _stopped_midway(self, trial, error: BaseException) -> BaseException:
        """Hands a trial stopped by a signal or a failed write back; returns what to raise."""
        cause = error.__cause__ if isinstance(error.__cause__, MetasearchError) else error
        if self.job.role != "worker":  # a worker's trial goes back through the chief
            why = (
                "interrupted; it runs again when the search resumes"
                if isinstance(error, KeyboardInterrupt)
                else f"stopped by a failed write; it runs again when the search resumes ({cause})"
            )
            kt_adapter.hand_back(self.oracle, trial.trial_id, why)
        return cause

    def on_trial_begin(self, trial):
        self._trial_started = time.monotonic()
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if self.budget is not None:
            self.budget.trial_ended(time.monotonic() - self._trial_started)
            self.job.run_dir.write_json(BUDGET_FILE, {"spent_seconds": self.budget.spent()})
        # The leaderboard on disk is current after every trial, not only at the end.
        report.write_results(self.job.run_dir, self.job.config.to_json())

    def run_trial(self, trial, *args, **kwargs):
        """`_run_trial`, interruptible; a failed write stops the search, not just the trial."""
        try:
            with interrupts.interruptible():
                return self._run_trial(trial, *args, **kwargs)
        except StorageError as error:
            # keras-tuner would record any other exception as a failed trial and go on.
            raise keras_tuner.errors.FatalError(str(error)) from error

    def _run_trial(self, trial, *args, **kwargs):
        config, space = self.job.config, self.job.components.space
        started = time.time()
        sampled = self._as_parent_built(trial, self.job.components.sample(trial.hyperparameters))
        record: dict[str, Any] = {
            "trial_id": trial.trial_id,
            "architecture": space.describe(sampled["architecture"]),
            "architecture_config": sampled["architecture"],
            "genotype": space.genotype(sampled["architecture"]),
            "plugin": config.plugin if self.job.trains else None,
            "plugin_config": sampled["plugin"],
            "hyperparameters": dict(trial.hyperparameters.values),
            "worker": self.tuner_id,
        }
        self.progress.trial_started(trial.trial_id, record)
        board = summaries.TrialBoard(self.job.run_dir, trial.trial_id, self.job.kind.metric)
        board.start(record["hyperparameters"], record["architecture"])
        heartbeat = (
            distributed.Heartbeat(self.oracle, trial.trial_id, max(1.0, config.worker_timeout / 4))
            if self.job.role == "worker"
            else contextlib.nullcontext()
        )
        try:
            with heartbeat:
                if self.job.trains:
                    metrics = self._meta_train_and_score(trial, sampled, record, board)
                else:
                    metrics = self._look_up(sampled)
        except (KeyboardInterrupt, SystemExit, StorageError):
            raise
        except Exception as error:  # noqa: BLE001 - any failure fails the trial only
            record.update(
                status="FAILED",
                error=f"{type(error).__name__}: {error}",
                wall_seconds=time.time() - started,
            )
            self.job.run_dir.write_trial_record(trial.trial_id, record)
            board.finish(record)
            self.progress.trial_failed(trial.trial_id, record["error"])
            quiet = isinstance(error, (DivergedError, UsageError, BudgetError))
            detail = "" if quiet else "\n" + traceback.format_exc()
            raise keras_tuner.errors.FailedTrialError(record["error"] + detail) from error
        record.update(status="COMPLETED", wall_seconds=time.time() - started, **metrics)
        if "seconds" in record:
            # The rest: sampling, the trial's TensorBoard writer, progress lines.
            counted = sum(record["seconds"].values())
            record["seconds"]["other"] = max(0.0, record["wall_seconds"] - counted)
            record["train_share"] = record["seconds"]["training"] / max(
                record["wall_seconds"], 1e-9
            )
        self.job.run_dir.write_trial_record(trial.trial_id, record)
        board.finish(record)
        self.progress.trial_finished(trial.trial_id, record)
        name = self.job.objective[0]
        return {name: metrics[name]}

    def _as_parent_built(self, trial, sampled: dict[str, Any]) -> dict[str, Any]:
        """`sampled`, with the recorded architecture of the trial it continues (Hyperband).

        An architecture config may hold settings that are not searched but shape
        the weights (e.g. `conv_blocks`' `conv_bias`, absent from trials of earlier
        versions): a continued trial builds what its parent built, so the
        parent's weights load.
        """
        parent = trial.hyperparameters.values.get("tuner/trial_id")
        if not parent:
            return sampled
        for record in self.job.run_dir.trial_results():
            if record["trial_id"] == parent and "architecture_config" in record:
                return {**sampled, "architecture": record["architecture_config"]}
        return sampled

    def _look_up(self, sampled) -> dict[str, Any]:
        key = self.job.components.space.table_key(sampled["architecture"])
        value = self.job.table.lookup(key)
        return {
            "val_accuracy": value / 100.0,
            "table_key": key,
            "table_column": self.job.config.table_column,
        }

    def _race(self, trial_id, trainer, plan, resume) -> _TrialRace | None:
        """The trial's race at its rungs (`--racing`), or None when it is not raced.

        Rungs are training steps, or training seconds with `--trial_time`; a
        resumed trial is raced at the rungs it had not reached.
        """
        config = self.job.config
        if config.racing == "none":
            return None
        by_time = plan["seconds"] is not None
        if by_time:
            rungs = racing.rung_seconds(config.racing_rungs, plan["seconds"])
            reached = resume.train_seconds if resume is not None else 0.0
        else:
            rungs = racing.rung_steps(config.racing_rungs, plan["steps"])
            reached = resume.step if resume is not None else 0
        pending = [(index, at) for index, at in enumerate(rungs) if at > reached]
        return _TrialRace(self, trial_id, trainer, pending, by_time)

    def _raced_out(self, trial, learner, record, race, verdict, started) -> dict[str, Any]:
        """A trial stopped at a rung: scored there (its rung's episodes), its weights kept."""
        job = self.job
        scores = np.asarray(race.scores[-1]["scores"], np.float64)
        record["racing"] = {
            **race.record(),
            "stopped": {
                "rung": verdict.rung,
                "episodes": verdict.episodes,
                "seconds": verdict.seconds,
                "leader": verdict.leader,
                "difference": verdict.difference,
                "ci95": verdict.ci95,
            },
        }
        record["episodes"] = verdict.episodes
        scale, unit = (100.0, " points") if job.kind.metric == "accuracy" else (1.0, "")
        self.progress.note(f"  trial {trial.trial_id} stops: {verdict.describe(scale, unit)}")
        train_seconds = time.monotonic() - started - race.seconds
        return self._scored(trial, learner, record, scores, {"train_seconds": train_seconds})

    def _scored(self, trial, learner, record, scores, train_metrics) -> dict[str, Any]:
        """A trained trial's metrics from its validation `scores`; its latency and weights kept."""
        job = self.job
        mean, ci95 = episodes.mean_and_ci95(scores)
        if not np.isfinite(mean):
            raise DivergedError(f"meta-validation {job.objective[0]} is {mean}")
        seconds = record.setdefault("seconds", {})
        started = time.monotonic()
        record["latency_ms"] = adaptation_latency(learner, job)
        record["latency_task"] = latency.task_description(learner)
        seconds["latency"] = time.monotonic() - started
        started = time.monotonic()
        save_weights(learner.weights, job.run_dir.weights_path(trial.trial_id))
        seconds["saving"] = time.monotonic() - started
        seconds.setdefault("training", float(train_metrics["train_seconds"]))
        if "racing" in record:
            seconds["racing"] = record["racing"]["racing_seconds"]
        return {
            job.objective[0]: mean,
            "val_ci95": ci95,
            "eval_episodes": len(scores),
            "jit_compile": job.jit_compile,
            **train_metrics,
        }

    def _budget_shares(self, trial) -> tuple[float, float, str | None]:
        """(share of the trial budget to reach, share its parent trained, parent id).

        The budget is `--episodes_per_trial` episodes or `--trial_time` seconds.
        Hyperband gives a trial `tuner/epochs` budget units out of its
        `max_epochs` option, and a promoted trial continues from its parent's
        weights (`tuner/trial_id`) where `tuner/initial_epoch` ended; any
        other trial trains the whole budget from scratch.
        """
        values = trial.hyperparameters.values
        if "tuner/epochs" not in values:
            return 1.0, 0.0, None
        max_epochs = self.job.config.strategy_options["max_epochs"]
        parent = values.get("tuner/trial_id")
        done = values["tuner/initial_epoch"] / max_epochs if parent else 0.0
        return values["tuner/epochs"] / max_epochs, done, parent

    def _meta_train_and_score(self, trial, sampled, record, board=None) -> dict[str, Any]:
        """Meta-trains, scores and saves one candidate, resuming from its checkpoint if any.

        While it trains, the trial writes a checkpoint every
        `--checkpoint_seconds` (`RunDir.checkpoint_path`: weights, optimiser
        state, step reached); the rerun of a killed search finds it (same
        trial, hyperparameters and budget) and goes on from it. The checkpoint
        is removed once the trial ends, unless the search stops midway
        (Ctrl-C, a failed write): that trial runs again, from its checkpoint.
        """
        path = self.job.run_dir.checkpoint_path(trial.trial_id)
        plan = self._training_plan(trial)
        try:
            resume = self._checkpoint_to_resume(trial.trial_id, path, plan)
            try:
                metrics = self._train_and_score(trial, sampled, record, board, plan, resume)
            except _CheckpointMismatchError as error:
                self.progress.note(f"trial {trial.trial_id} starts over: {error}")
                metrics = self._train_and_score(trial, sampled, record, board, plan, None)
        except (KeyboardInterrupt, SystemExit, StorageError):
            raise  # the trial runs again when the search resumes: keep its checkpoint
        except Exception:
            remove_file(path)  # a failed trial does not run again
            raise
        remove_file(path)
        return metrics

    def _training_plan(self, trial) -> dict[str, Any]:
        """The trial's training budget and seed: what its checkpoint must agree on to resume.

        A budget of episodes (`--episodes_per_trial`) sets `steps`; one of
        time (`--trial_time`) sets `seconds` instead, and `episodes` is known
        once the trial has trained.
        """
        config = self.job.config
        share, share_done, parent = self._budget_shares(trial)
        if config.trial_seconds is not None:
            seconds, total, steps = config.trial_seconds * (share - share_done), None, None
            done = 0
            if parent:  # the episodes its parent held
                records = {r["trial_id"]: r for r in self.job.run_dir.trial_results()}
                done = int(records.get(parent, {}).get("episodes", 0))
        else:

            def episodes_for(fraction):
                return max(1, round(config.episodes_per_trial * fraction))

            total, done = episodes_for(share), episodes_for(share_done) if parent else 0
            # A step meta-trains on --meta_batch_size episodes.
            seconds, steps = None, max(1, math.ceil((total - done) / config.meta_batch_size))
        return {
            "trial_id": trial.trial_id,
            # As JSON gives them back from the checkpoint, to compare.
            "hyperparameters": json.loads(json_text(trial.hyperparameters.values)),
            "episodes": total,
            "episodes_before": done,
            "parent": parent,
            "steps": steps,
            "seconds": seconds,
            "meta_batch_size": config.meta_batch_size,
            "seed": derived_seed(config.seed, f"trial {trial.trial_id}"),
        }

    def _checkpoint_to_resume(self, trial_id, path, plan) -> TrainingState | None:
        """The state of the trial's checkpoint when it fits `plan`, else None (with a note)."""
        if not os.path.exists(path):
            return None
        try:
            state = MetaTrainer.read_checkpoint(path)
        except (OSError, DamagedFileError) as error:
            self.progress.note(
                f"trial {trial_id} starts over: its checkpoint cannot be read ({error})"
            )
            return None
        within = plan["steps"] is None or state.step <= plan["steps"]
        if state.extra != plan or not (0 < state.step and within):
            self.progress.note(
                f"trial {trial_id} starts over: its checkpoint was written for other settings"
            )
            return None
        return state

    def _train_and_score(self, trial, sampled, record, board, plan, resume) -> dict[str, Any]:
        job, config = self.job, self.job.config
        setup_started = time.monotonic()
        # Fresh layer names and seeds for each trial; its gc.collect() frees the last
        # trial's graphs now (it walks only what trials made: `search` froze the rest,
        # which took 0.2 s a trial). Without it a fresh clone's main job once
        # stalled 37 s between two trials, as garbage from earlier trials was collected.
        keras.backend.clear_session()
        seed = plan["seed"]
        keras.utils.set_random_seed(seed)
        total, done, parent, steps, seconds = (
            plan["episodes"],
            plan["episodes_before"],
            plan["parent"],
            plan["steps"],
            plan["seconds"],
        )
        task = training_task(job.task, sampled)
        learner = job.components.build_learner(sampled, task)
        trainer = MetaTrainer(
            learner,
            job.normalization,
            learning_rate=sampled["learning_rate"],
            total_steps=steps,
            jit_compile=job.jit_compile,
            meta_batch_size=config.meta_batch_size,
            devices=config.devices,
        )
        # Episodes are a pure function of their index: a resumed trial's stream
        # starts at the episode its checkpoint reached.
        resumed_steps = resume.step if resume is not None else 0
        start = resumed_steps * config.meta_batch_size
        train_stream = job.episode_stream(
            "train",
            seed,
            episodes.TRAIN_STREAM,
            start=start,
            training=sampled,  # the trial's searched way, queries and new classes, if any
        )
        # One pipeline for the whole trial: its first episode builds the
        # variables, then is trained on like the rest.
        stream = iter(train_stream)
        first = next(stream)
        trainer.build(first)
        record["parameters"] = count_parameters(learner)
        violation = over_budget(record["parameters"], config.max_params)
        if violation:
            raise BudgetError(violation)
        record["flops"] = backbone_flops(learner, task)
        checkpoint_path = job.run_dir.checkpoint_path(trial.trial_id)
        if resume is not None:
            try:
                trainer.restore_checkpoint(checkpoint_path)
            except UsageError as error:  # DamagedFileError too
                raise _CheckpointMismatchError(
                    f"its checkpoint cannot be restored ({error})"
                ) from None
            reached = done + start
            record["resumed_from_episode"] = reached if total is None else min(total, reached)
            of = f"of {total}" if total is not None else f"after {resume.train_seconds:.0f} s"
            self.progress.note(
                f"trial {trial.trial_id} resumes from its checkpoint at episode "
                f"{record['resumed_from_episode']} {of}"
            )
        elif parent:
            load_weights(learner.weights, job.run_dir.weights_path(parent))
        if parent:
            record["continues_trial"] = parent
        if total is not None:
            record["episodes"] = total

        def save_checkpoint(state: TrainingState) -> None:
            state.extra = plan
            trainer.save_checkpoint(checkpoint_path, state)

        race = self._race(trial.trial_id, trainer, plan, resume)
        curve = board.curve(done) if board is not None else None
        tracing_started = time.monotonic()
        trainer.trace(first if config.meta_batch_size == 1 else (first,) * config.meta_batch_size)
        started = time.monotonic()
        # Where the trial's wall time goes (`_scored` adds validation, latency, saving).
        record["seconds"] = {
            "setup": tracing_started - setup_started,
            "tracing": started - tracing_started,
        }
        if steps is not None:
            # The progress bar shows this piece of a resumed trial.
            def on_progress(step, loss, metric):
                self.progress.trial_step(
                    trial.trial_id, step - resumed_steps, steps - resumed_steps, loss, metric
                )
        else:
            before = resume.train_seconds if resume is not None else 0.0

            def on_progress(step, loss, metric):
                spent = before + time.monotonic() - started
                self.progress.trial_step(
                    trial.trial_id, step, None, loss, metric, seconds=(spent, seconds)
                )

        try:
            train_metrics = trainer.train(
                itertools.chain([first], stream),
                steps,
                on_progress=on_progress,
                # About 20 points or more on each trial's TensorBoard curves; a trial
                # budgeted in time reads back every 5 steps, so that it reaches its rungs'
                # seconds closely (10 steps of a wide network overshot a 12 s rung by 4 s).
                check_every=max(1, min(20, steps // 20)) if steps is not None else 5,
                on_chunk=race.watch(curve) if race is not None else curve,
                resume=resume,
                on_checkpoint=save_checkpoint,
                checkpoint_seconds=config.checkpoint_seconds,
                seconds=seconds,
            )
        except racing.RacedOutError as stopped:
            return self._raced_out(trial, learner, record, race, stopped.verdict, started)
        # The callbacks between chunks of steps (curves, progress, checkpoints, the
        # rungs' evaluations) are not training; train_seconds leaves them out.
        callbacks = train_metrics.pop("callback_seconds")
        trained_steps = train_metrics.pop("steps")
        if total is None:  # a budget of time: the episodes it held
            record["episodes"] = done + trained_steps * config.meta_batch_size
        if race is not None:
            record["racing"] = race.record()
        # This run's training (a resumed trial's train_seconds counts its earlier pieces too).
        earlier = resume.train_seconds if resume is not None else 0.0
        record["seconds"]["training"] = train_metrics["train_seconds"] - earlier
        record["seconds"]["callbacks"] = callbacks - (race.seconds if race is not None else 0.0)
        validation_started = time.monotonic()
        scores = trainer.evaluate(
            job.validation_episodes(config.eval_episodes), job.kind.eval_classes(config.n_way)
        )
        record["seconds"]["validation"] = time.monotonic() - validation_started
        return self._scored(trial, learner, record, scores, train_metrics)


class _TrialRace:
    """A trial raced at its rungs (`metasearch.racing`): scored, compared, maybe stopped."""

    def __init__(
        self,
        tuner: FewShotTuner,
        trial_id: str,
        trainer,
        rungs: list[tuple[int, float]],
        by_time: bool = False,
    ):
        self.tuner, self.trial_id, self.trainer = tuner, trial_id, trainer
        # (rung index, training step or training second at which the trial is raced)
        self.rungs = rungs
        self.by_time = by_time
        self.scores: list[dict[str, Any]] = []
        self.seconds = 0.0

    def watch(self, on_chunk):
        """The trainer's chunk callback: `on_chunk`, then the race at each rung passed."""

        def callback(chunk):
            if on_chunk is not None:
                on_chunk(chunk)
            reached = chunk.train_seconds if self.by_time else chunk.step
            while self.rungs and reached >= self.rungs[0][1]:
                rung, _ = self.rungs.pop(0)
                self._race(rung, chunk.episodes, chunk.train_seconds if self.by_time else None)

        return callback

    def _race(self, rung: int, episodes_done: int, seconds: float | None = None) -> None:
        job, config = self.tuner.job, self.tuner.job.config
        started = time.monotonic()
        stream = job.validation_episodes(config.racing_episodes)
        scores = self.trainer.evaluate(stream, job.kind.eval_classes(config.n_way))
        self.scores.append({"rung": rung, "episodes": episodes_done, "scores": scores.tolist()})
        if seconds is not None:
            self.scores[-1]["seconds"] = seconds
        rivals = [
            r
            for r in job.run_dir.trial_results()
            if r["trial_id"] != self.trial_id and r["status"] == "COMPLETED"
        ]
        verdict = racing.verdict(
            rung, episodes_done, scores, rivals, job.kind.goodness, seconds=seconds
        )
        self.scores[-1].update(leader=verdict.leader, difference=verdict.difference)
        self.seconds += time.monotonic() - started
        if verdict.stop:
            raise racing.RacedOutError(verdict)

    def record(self) -> dict[str, Any]:
        return {"rungs": self.scores, "racing_seconds": self.seconds}


class _CheckpointMismatchError(Exception):
    """A trial's checkpoint cannot be restored into its learner: the trial starts over."""


def adaptation_latency(learner, job: Job) -> float | None:
    """Milliseconds to adapt to and predict one small task through the exported signature.

    None when it cannot be measured (a measurement must never fail a trial).
    """
    try:
        return latency.measure(learner, job.config.image_size, job.normalization)
    except Exception:  # noqa: BLE001
        return None


def backbone_flops(learner, task) -> int | None:
    """FLOPs of the backbone on one image; None when the estimate cannot be made."""
    try:
        return estimate_flops(learner.backbone, task.image_shape)
    except Exception:  # noqa: BLE001 - an estimate must never fail a trial
        return None
