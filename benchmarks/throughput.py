"""Meta-training throughput of conv4-64 ProtoNet and MAML, graph mode vs XLA.

Prints JSON, measured through the same `MetaTrainer` and `tf.data` episode
stream a search uses, at 5-way 1-shot 15-query 28x28 on `glyphs`, for plain
graph mode and for XLA (`jit_compile=True`), and which mode
`--jit_compile=auto` picks on this machine:

* ProtoNet: episodes/s (median of the repeats), target >= 15 in the default mode.
* MAML (5 inner steps at step size 0.4, transductive batch norm, learned
  head): tasks/s for second order (`maml`) and first order (`fomaml`),
  target >= 5 second-order tasks/s in the default mode.
* `--handwritten`: a plain hand-written TF second-order MAML step on the same
  episodes, the baseline the MAML target was set against (about 4.2 tasks/s
  when it was set).

    python benchmarks/throughput.py [--only all|protonet|maml] [--handwritten]
        [--episodes 300] [--maml_tasks 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from metasearch.api import DatasetOptions, TaskSpec  # noqa: E402
from metasearch.data import episodes  # noqa: E402
from metasearch.data.glyphs import Glyphs  # noqa: E402
from metasearch.data.preprocess import normalize  # noqa: E402
from metasearch.plugins.maml import FOMAML, MAML  # noqa: E402
from metasearch.plugins.protonet import PrototypicalNetworks  # noqa: E402
from metasearch.search_spaces.conv_blocks import ConvBlocks  # noqa: E402
from metasearch.training import MetaTrainer, resolve_jit_compile  # noqa: E402

CONV4_64 = {"depth": 4, "filters": 64, "growth": 1.0}
N_WAY, K_SHOT, N_QUERY = 5, 1, 15
PROTONET_TARGET = 15.0
MAML_TARGET = 5.0
# A plain hand-written TF graph step measured this when the MAML target was set.
MAML_HANDWRITTEN_REFERENCE = 4.2
# Finn et al.'s Omniglot 5-way settings (inner step size 0.4, 5 steps in meta-training).
MAML_CONFIG = {
    "inner_steps": 5,
    "eval_inner_steps": 10,
    "inner_learning_rate": 0.4,
    "batch_norm": "transductive",
    "head_init": "learned",
}


def _rates(step, count: int, repeats: int) -> dict:
    """Median, best and every rate of `step(count)` (calls/s) over `repeats` timed runs."""
    rates, cpu = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        step(count)
        rates.append(count / (time.perf_counter() - start))
        cpu.append((time.process_time() - cpu_start) / count)
    rates.sort()
    cpu.sort()
    # CPU seconds per call (all threads) vary less than rates when the machine is shared.
    return {
        "median": rates[len(rates) // 2],
        "best": rates[-1],
        "all_runs": rates,
        "cpu_seconds": cpu[len(cpu) // 2],
    }


def measure(make_learner, jit_compile: bool, splits, count: int, repeats: int, warmup: int):
    """Rates of `MetaTrainer.train` for the learner `make_learner(backbone, task)` builds."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    task = TaskSpec(N_WAY, K_SHOT, N_QUERY, (28, 28, 1))
    learner = make_learner(ConvBlocks().build(CONV4_64, task.image_shape), task)
    images = splits.train.images
    trainer = MetaTrainer(
        learner,
        (float(images.mean()), float(images.std())),
        1e-3,
        count * repeats + warmup,
        jit_compile,
    )
    stream = episodes.episode_dataset(
        splits.train, N_WAY, K_SHOT, N_QUERY, 0, episodes.TRAIN_STREAM
    )
    trainer.build(next(iter(stream)))
    trainer.train(stream, warmup)  # trace, compile and warm the pipeline
    return _rates(lambda n: trainer.train(stream, n), count, repeats)


def protonet(splits, args) -> dict:
    """ProtoNet episodes/s in both modes (the original benchmark's keys)."""

    def make(backbone, task):
        return PrototypicalNetworks(backbone, {"metric": "sqeuclidean", "embedding_dim": 0}, task)

    graph, xla = (
        measure(make, jit, splits, args.episodes, args.repeats, 30) for jit in (False, True)
    )
    graph, xla = (
        {
            "episodes_per_second": r["median"],
            "best": r["best"],
            "all_runs": r["all_runs"],
            "cpu_seconds_per_episode": r["cpu_seconds"],
        }
        for r in (graph, xla)
    )
    default = xla if resolve_jit_compile("auto") else graph
    return {
        "benchmark": "protonet_conv4_64_meta_training_throughput",
        "task": "5-way 1-shot 15-query 28x28 (glyphs)",
        "graph_mode": graph,
        "xla": xla,
        "auto_picks": _auto_name(),
        "default_mode_episodes_per_second": default["episodes_per_second"],
        "target_episodes_per_second": PROTONET_TARGET,
        "meets_target": default["episodes_per_second"] >= PROTONET_TARGET,
    }


def maml(splits, args) -> dict:
    """MAML (second order) and FOMAML tasks/s in both modes, and the optional baseline."""
    results = {}
    for name, cls in (("maml_second_order", MAML), ("fomaml_first_order", FOMAML)):
        for mode, jit in (("graph_mode", False), ("xla", True)):
            rates = measure(
                lambda backbone, task, cls=cls: cls(backbone, dict(MAML_CONFIG), task),
                jit,
                splits,
                args.maml_tasks,
                args.repeats,
                args.warmup,
            )
            results.setdefault(name, {})[mode] = _as_tasks(rates)
    default = results["maml_second_order"][_auto_name()]["tasks_per_second"]
    out = {
        "benchmark": "maml_conv4_64_meta_training_throughput",
        "task": "5-way 1-shot, 15 query images per class (75 per task), 28x28 (glyphs)",
        "config": {**MAML_CONFIG, "backbone": CONV4_64, "meta_batch_size": 1},
        "tasks_timed_per_run": args.maml_tasks,
        "warmup_tasks": args.warmup,
        **results,
        "auto_picks": _auto_name(),
        "default_mode_second_order_tasks_per_second": default,
        "target_tasks_per_second": MAML_TARGET,
        "meets_target": default >= MAML_TARGET,
        "handwritten_reference_tasks_per_second": MAML_HANDWRITTEN_REFERENCE,
    }
    if args.handwritten:
        out["handwritten_second_order"] = {
            "graph_mode": _as_tasks(handwritten(splits, args, jit_compile=False)),
            "xla": _as_tasks(handwritten(splits, args, jit_compile=True)),
        }
    return out


def handwritten(
    splits, args, jit_compile: bool, steps: int = 5, step_size: float = 0.4, first_order=False
) -> dict:
    """Rates of a plain hand-written MAML step (explicit conv4-64 weights, Adam; second order)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    glorot = keras.initializers.GlorotUniform(seed=0)
    weights, channels = [], 1
    for _ in range(4):  # conv kernel, conv bias, bn gamma, bn beta
        weights += [tf.Variable(glorot((3, 3, channels, 64))), tf.Variable(tf.zeros(64))]
        weights += [tf.Variable(tf.ones(64)), tf.Variable(tf.zeros(64))]
        channels = 64
    # 28 -> 14 -> 7 -> 3 -> 1 after four 2x2 poolings: 64 features.
    weights += [tf.Variable(glorot((64, N_WAY))), tf.Variable(tf.zeros(N_WAY))]
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(weights)
    mean, std = float(splits.train.images.mean()), float(splits.train.images.std())

    def loss_fn(params, images, labels):
        x = images
        for i in range(4):
            kernel, bias, gamma, beta = params[4 * i : 4 * i + 4]
            x = tf.nn.conv2d(x, kernel, 1, "SAME") + bias
            # Transductive batch norm via tf.nn.moments, the ops Keras's BatchNormalization
            # runs (its stop_gradient on the mean makes second-order terms approximate).
            moments = tf.nn.moments(x, [0, 1, 2])
            x = tf.nn.batch_normalization(x, *moments, beta, gamma, 1e-3)
            x = tf.nn.max_pool2d(tf.nn.relu(x), 2, 2, "VALID")
        logits = tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), params[-2]) + params[-1]
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))

    @tf.function(jit_compile=jit_compile)
    def train_step(episode):
        support = normalize(episode.support_images, mean, std)
        query = normalize(episode.query_images, mean, std)
        with tf.GradientTape() as outer:
            fast = [tf.convert_to_tensor(w) for w in weights]
            for _ in range(steps):
                with tf.GradientTape() as inner:
                    inner.watch(fast)
                    support_loss = loss_fn(fast, support, episode.support_labels)
                grads = inner.gradient(support_loss, fast)
                if first_order:
                    grads = [tf.stop_gradient(g) for g in grads]
                fast = [w - step_size * g for w, g in zip(fast, grads)]
            query_loss = loss_fn(fast, query, episode.query_labels)
        optimizer.apply_gradients(zip(outer.gradient(query_loss, weights), weights))
        return query_loss

    stream = episodes.episode_dataset(
        splits.train, N_WAY, K_SHOT, N_QUERY, 0, episodes.TRAIN_STREAM
    )

    def run(count):
        # Read back once per run, as MetaTrainer batches its read-backs.
        losses = [train_step(episode) for episode in stream.take(count)]
        if not all(tf.math.is_finite(loss) for loss in losses):
            raise RuntimeError("hand-written MAML diverged")

    run(args.warmup)
    return _rates(run, args.maml_tasks, args.repeats)


def _as_tasks(rates: dict) -> dict:
    return {
        "tasks_per_second": rates["median"],
        "best": rates["best"],
        "all_runs": rates["all_runs"],
        "cpu_seconds_per_task": rates["cpu_seconds"],
    }


def _auto_name() -> str:
    return "xla" if resolve_jit_compile("auto") else "graph_mode"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("all", "protonet", "maml"), default="all")
    parser.add_argument("--episodes", type=int, default=300, help="ProtoNet episodes per run")
    parser.add_argument("--maml_tasks", type=int, default=60, help="MAML tasks per run")
    parser.add_argument("--warmup", type=int, default=10, help="MAML warm-up tasks")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--handwritten",
        action="store_true",
        help="also time a plain hand-written TF second-order MAML step",
    )
    args = parser.parse_args()
    splits = Glyphs(DatasetOptions(None, 28, 0, {"classes": 300})).load()
    load_before = os.getloadavg()
    report = {
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "tensorflow": tf.__version__,
    }
    if args.only in ("all", "protonet"):
        report.update(protonet(splits, args))
    if args.only in ("all", "maml"):
        report["maml"] = maml(splits, args)
    # The machine may be shared: the load average says how far to trust the rates.
    report["load_average_1_5_15_min"] = {"before": load_before, "after": os.getloadavg()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
