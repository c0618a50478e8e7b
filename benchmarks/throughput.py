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
* `--peers`: the same three steps in eager PyTorch (`benchmarks/peers/`, run
  as a subprocess with `--peers_python`, a Python that has PyTorch; never a
  dependency of metasearch), timed the same way right after metasearch's own measurement of each step; a
  `peers` key then holds per step metasearch's default-mode rate, PyTorch's
  and their ratio, each step's share of the CPU's fp32 matmul peak (measured
  here), both sides' first loss, the peer's MAML gradient check and the load
  average before and after. See benchmarks/peers/README.md. PyTorch runs on
  every core per op (its default, and its fastest here).

TensorFlow's intra-op threads follow metasearch's `--intra_op_threads=auto`
(`metasearch.threads`): every core per op for ProtoNet, one thread per op
(ops side by side) for MAML's small ops. They are fixed when TensorFlow
starts, so the default `--only all` times ProtoNet and MAML in a child
process each and merges their JSON; `--intra_op_threads N` sets them for both.
`--precision` defaults to `auto` too, what a search picks for image
classification here (bfloat16 on a CPU with AMX-BF16 and no GPU): the
default mode the ratios are judged in.

    python benchmarks/throughput.py [--only all|protonet|maml] [--handwritten]
        [--episodes 300] [--maml_tasks 60] [--repeats 3]
        [--peers [--peers_python /work/peers_venv/bin/python]]
        [--precision float32|bfloat16] [--intra_op_threads 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PEERS = Path(__file__).resolve().parent / "peers"


def _import_tensorflow() -> None:
    """TensorFlow and metasearch, imported once the arguments are parsed (`--help` is instant)."""
    global keras, tf, DatasetOptions, TaskSpec, episodes, Glyphs, normalize
    global FOMAML, MAML, PrototypicalNetworks, ConvBlocks, MetaTrainer, resolve_jit_compile
    global estimate_flops, np, build_backbone, resolve_precision, threads
    import keras
    import numpy as np
    import tensorflow as tf

    from metasearch import threads
    from metasearch.api import DatasetOptions, TaskSpec
    from metasearch.data import episodes
    from metasearch.data.glyphs import Glyphs
    from metasearch.data.preprocess import normalize
    from metasearch.flops import estimate_flops
    from metasearch.plugins.maml import FOMAML, MAML
    from metasearch.plugins.protonet import PrototypicalNetworks
    from metasearch.precision import build_backbone, resolve_precision
    from metasearch.search_spaces.conv_blocks import ConvBlocks
    from metasearch.training import MetaTrainer, resolve_jit_compile


PRECISION = "float32"  # --precision, resolved
CONV4_64 = {"depth": 4, "filters": 64, "growth": 1.0, "conv_bias": False}
N_WAY, K_SHOT, N_QUERY = 5, 1, 15
PROTONET_TARGET = 15.0
PROTONET_WARMUP = 30
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


def measure(
    make_learner,
    jit_compile: bool,
    splits,
    count: int,
    repeats: int,
    warmup: int,
    losses: list | None = None,
):
    """Rates of `MetaTrainer.train` for the learner `make_learner(backbone, task)` builds.

    With a `losses` list, the warm-up reads back every step's loss into it
    (the first is the loss at initialisation, to set beside the peer's).
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    task = TaskSpec(N_WAY, K_SHOT, N_QUERY, (28, 28, 1))
    backbone = build_backbone(ConvBlocks(), CONV4_64, task.image_shape, PRECISION)
    learner = make_learner(backbone, task)
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
    if losses is None:
        trainer.train(stream, warmup)  # trace, compile and warm the pipeline
    else:
        trainer.train(stream, warmup, lambda _, loss, __: losses.append(loss), check_every=1)
    return _rates(lambda n: trainer.train(stream, n), count, repeats)


def protonet(splits, args, first_losses: dict | None = None) -> dict:
    """ProtoNet episodes/s in both modes (the original benchmark's keys).

    `first_losses` (with --peers) receives each mode's warm-up losses.
    """

    def make(backbone, task):
        return PrototypicalNetworks(backbone, {"metric": "sqeuclidean", "embedding_dim": 0}, task)

    losses = {} if first_losses is None else first_losses.setdefault("protonet", {})
    graph, xla = (
        measure(
            make,
            jit,
            splits,
            args.episodes,
            args.repeats,
            PROTONET_WARMUP,
            None if first_losses is None else losses.setdefault(mode, []),
        )
        for mode, jit in (("graph_mode", False), ("xla", True))
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


def maml(splits, args, first_losses: dict | None = None) -> dict:
    """MAML (second order) and FOMAML tasks/s in both modes, and the optional baseline.

    `first_losses` (with --peers) receives each learner's and mode's warm-up losses.
    """
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
                None
                if first_losses is None
                else first_losses.setdefault(name, {}).setdefault(mode, []),
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


# --- the PyTorch peer (--peers) ---------------------------------------------

PEER_TARGET_RATIOS = {"protonet": 2.0, "maml_second_order": 1.5, "fomaml_first_order": 1.5}
PROTONET_PEAK_SHARE_TARGET = 0.5
# Episodes handed to the peer: the first ones of metasearch's stream, cycled.
PEER_EPISODE_POOL = 50
FLOPS_METHOD = (
    "f = metasearch.flops.estimate_flops of conv4-64's forward pass on one 28x28x1 image "
    "(TensorFlow's op statistics: convolutions, bias, batch norm, pooling; a multiply-add is "
    "2 FLOPs), plus MAML's 64x5 head. A training pass (forward, then input and weight "
    "gradients) counts 3f per image; differentiating through an inner step's forward and "
    "backward again (second order) counts twice that, 9f per support image. ProtoNet: 3f x "
    "(5 + 75) images. MAML: 5 inner steps x 9f x 5 support images + 3f x 75 queries; FOMAML: "
    "5 x 3f x 5 + 3f x 75. The share of the peak is rate x FLOPs per step / the fp32 matmul "
    "GFLOP/s measured in TensorFlow here (and, beside it, of the bfloat16 matmul GFLOP/s)."
)


def tensorflow_threads() -> dict:
    """TensorFlow's thread-pool settings (0: one thread per schedulable core) and their effect."""
    cores = len(os.sched_getaffinity(0))
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    return {
        "intra_op_setting": intra,
        "inter_op_setting": inter,
        "intra_op": intra or cores,
        "inter_op": inter or cores,
        "cores_available": cores,
    }


def matmul_gflops(
    size: int = 2048, count: int = 10, repeats: int = 3, dtype: str = "float32"
) -> float:
    """Best GFLOP/s of `count` chained `size`-square TensorFlow matmuls (2 n^3 FLOPs each)."""
    a = tf.cast(tf.random.normal([size, size], seed=0), dtype)
    b = tf.cast(tf.random.normal([size, size], seed=1) / size**0.5, dtype)
    tf.matmul(a, b).numpy()  # warm up
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        c = a
        for _ in range(count):
            c = tf.matmul(c, b)
        float(c[0, 0])
        best = max(best, 2.0 * size**3 * count / (time.perf_counter() - start) / 1e9)
    return best


def matmul_peaks() -> dict:
    """TensorFlow's fp32 and bfloat16 matmul GFLOP/s on every core.

    With one intra-op thread (`--intra_op_threads`, auto for MAML) a matmul
    runs on one core, so the peaks are then measured in a child process at
    TensorFlow's default threads.
    """
    if tf.config.threading.get_intra_op_parallelism_threads() == 0:
        return {dtype: matmul_gflops(dtype=dtype) for dtype in ("float32", "bfloat16")}
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import throughput"
    code += "; throughput._import_tensorflow(); import json"
    code += "; print(json.dumps(throughput.matmul_peaks()))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def flops_per_step() -> dict:
    """Analytic FLOPs of each meta-training step, from metasearch's count of the forward pass."""
    task = TaskSpec(N_WAY, K_SHOT, N_QUERY, (28, 28, 1))
    keras.backend.clear_session()
    forward = estimate_flops(ConvBlocks().build(CONV4_64, task.image_shape), task.image_shape)
    features = CONV4_64["filters"]  # 28 -> 14 -> 7 -> 3 -> 1 after four poolings
    with_head = forward + 2 * features * N_WAY + N_WAY
    support, query = N_WAY * K_SHOT, N_WAY * N_QUERY
    steps = MAML_CONFIG["inner_steps"]
    return {
        "forward_flops_per_image": forward,
        "forward_flops_per_image_with_head": with_head,
        "protonet": 3 * forward * (support + query),
        "maml_second_order": (steps * 9 * support + 3 * query) * with_head,
        "fomaml_first_order": (steps * 3 * support + 3 * query) * with_head,
        "method": FLOPS_METHOD,
    }


def write_peer_episodes(splits, path: str) -> None:
    """The first episodes of metasearch's training stream, with the normalisation, as `.npz`."""
    stream = episodes.episode_dataset(
        splits.train, N_WAY, K_SHOT, N_QUERY, 0, episodes.TRAIN_STREAM
    )
    drawn = [e._asdict() for e in stream.take(PEER_EPISODE_POOL)]
    images = splits.train.images
    arrays = {key: np.stack([e[key].numpy() for e in drawn]) for key in drawn[0]}
    np.savez(path, mean=float(images.mean()), std=float(images.std()), **arrays)


class Peer:
    """The PyTorch peer: benchmarks/peers/run.py, run by `--peers_python` as a subprocess.

    Made before metasearch is measured: it writes the episodes the peer
    trains on into `folder`, runs the peer's MAML gradient check and matmul
    peak (so that a Python without PyTorch fails before minutes of
    measuring) and measures TensorFlow's matmul peak. `time` then times
    steps right after metasearch's own measurement of them; `section` is the
    report's `peers` key.
    """

    # The peer's step names, and this benchmark's.
    NAMES = {
        "protonet": "protonet",
        "maml": "maml_second_order",
        "fomaml": "fomaml_first_order",
    }

    def __init__(self, args, splits, folder: str):
        self.args = args
        self.load_before = os.getloadavg()
        self.threads = tensorflow_threads()
        self.episodes_npz = os.path.join(folder, "episodes.npz")
        write_peer_episodes(splits, self.episodes_npz)
        self.info = self._run(["check", "matmul"], 1, 1, 1)
        peaks = matmul_peaks()
        self.peak, self.bfloat16_peak = peaks["float32"], peaks["bfloat16"]
        self.flops = flops_per_step()
        self.runs: dict[str, dict] = {}

    def _run(self, steps, count: int, repeats: int, warmup: int) -> dict:
        command = [self.args.peers_python, str(PEERS / "run.py")]
        # PyTorch's default, every core per op: its fastest here (FOMAML 16.5 tasks/s
        # against 10.4 on one thread), whatever TensorFlow's intra-op setting.
        command += ["--threads", str(self.threads["cores_available"])]
        command += ["--interop_threads", str(self.threads["cores_available"])]
        command += ["--episodes_npz", self.episodes_npz]
        command += ["--count", str(count), "--repeats", str(repeats), "--warmup", str(warmup)]
        for step in steps:
            command += ["--step", step]
        done = subprocess.run(command, capture_output=True, text=True, cwd=PEERS)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            sys.exit(
                f"throughput.py --peers: the PyTorch peer ({self.args.peers_python}) failed: "
                f"{lines[-1]}"
            )
        return json.loads(done.stdout)

    def time(self, steps, count: int, warmup: int) -> None:
        """Times the peer's `steps` as metasearch's: `count` steps per run, same repeats."""
        result = self._run(steps, count, self.args.repeats, warmup)
        for step in steps:
            self.runs[self.NAMES[step]] = result[step]

    def section(self, report: dict, first_losses: dict) -> dict:
        """The `peers` key: versions, threads, peaks, FLOPs and the per-step comparison."""
        args = self.args
        return {
            "tensorflow": tf.__version__,
            "pytorch": self.info["torch"],
            "peers_python": args.peers_python,
            "metasearch_mode": _auto_name(),
            "threads": {"tensorflow": self.threads, "pytorch": self.info["threads"]},
            "timed_steps_per_run": {"protonet": args.episodes, "maml": args.maml_tasks},
            "warmup_steps": {"protonet": PROTONET_WARMUP, "maml": args.warmup},
            "repeats": args.repeats,
            "matmul_gflops_bfloat16": self.bfloat16_peak,
            "matmul_gflops_fp32": {
                "tensorflow": self.peak,
                "pytorch": self.info["matmul_gflops"],
                "size": 2048,
            },
            "flops_per_step": self.flops,
            "steps": self._compare(report, first_losses),
            "pytorch_maml_gradient_check": self.info["maml_gradient_check"],
            "load_average_1_5_15_min": {"before": self.load_before, "after": os.getloadavg()},
            # Under load PyTorch's OpenMP threads spin-wait and its rates collapse far more
            # than TensorFlow's (seen: 40-70x against 3-6x at a load of 10 on 2 cores): compare
            # only runs that started quiet.
            "quiet_before": self.load_before[0] < 0.5 * self.threads["cores_available"],
        }

    def _compare(self, report: dict, first_losses: dict) -> dict:
        """Per step: metasearch's default-mode rate beside PyTorch's, ratios, peak shares."""
        mode = _auto_name()
        ours = {}
        if "protonet" in self.runs:
            r = report[mode]
            ours["protonet"] = (
                "episodes/s",
                r["episodes_per_second"],
                r["best"],
                r["cpu_seconds_per_episode"],
            )
        for name in ("maml_second_order", "fomaml_first_order"):
            if name in self.runs:
                r = report["maml"][name][mode]
                ours[name] = (
                    "tasks/s",
                    r["tasks_per_second"],
                    r["best"],
                    r["cpu_seconds_per_task"],
                )
        steps = {}
        for name, (unit, rate, best, cpu) in ours.items():
            theirs = self.runs[name]
            gflop = self.flops[name] / 1e9
            losses = first_losses.get(name, {}).get(mode, [])
            ratio = rate / theirs["steps_per_second"]
            steps[name] = {
                "unit": unit,
                "metasearch": rate,
                "pytorch": theirs["steps_per_second"],
                "ratio": ratio,
                "target_ratio": PEER_TARGET_RATIOS[name],
                "meets_target": ratio >= PEER_TARGET_RATIOS[name],
                "best": {
                    "metasearch": best,
                    "pytorch": theirs["best"],
                    "ratio": best / theirs["best"],
                },
                "pytorch_all_runs": theirs["all_runs"],
                # CPU seconds (all threads) per step vary less than rates on a shared machine.
                "cpu_seconds_per_step": {
                    "metasearch": cpu,
                    "pytorch": theirs["cpu_seconds_per_step"],
                    "pytorch_over_metasearch": theirs["cpu_seconds_per_step"] / cpu,
                },
                "gflop_per_step": gflop,
                # Against the fp32 peak, the measure, whatever the precision.
                "share_of_matmul_peak": {
                    "metasearch": rate * gflop / self.peak,
                    "pytorch": theirs["steps_per_second"] * gflop / self.peak,
                },
                # In bfloat16 the CPU's own bfloat16 peak is the stricter yardstick.
                "share_of_bfloat16_matmul_peak": {
                    "metasearch": rate * gflop / self.bfloat16_peak,
                    "metasearch_precision": PRECISION,
                },
                # At initialisation on the same first episode (weights drawn alike, not equal).
                "first_loss": {
                    "metasearch": losses[0] if losses else None,
                    "pytorch": theirs["first_loss"],
                },
                "pytorch_load_average_1_5_15_min": theirs["load_average_1_5_15_min"],
            }
        if "protonet" in steps:
            share = steps["protonet"]["share_of_matmul_peak"]
            share["target"] = PROTONET_PEAK_SHARE_TARGET
            share["meets_target"] = share["metasearch"] >= PROTONET_PEAK_SHARE_TARGET
        return steps


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also time the same steps in eager PyTorch (benchmarks/peers/) and report ratios",
    )
    parser.add_argument(
        "--peers_python",
        default=os.environ.get("METASEARCH_PEERS_PYTHON", sys.executable),
        help="a Python with PyTorch that runs the peer (default: $METASEARCH_PEERS_PYTHON, "
        "else this one), e.g. /work/peers_venv/bin/python",
    )
    parser.add_argument(
        "--intra_op_threads",
        type=int,
        default=0,
        help="TensorFlow's intra-op threads (metasearch --intra_op_threads); 0: auto, as "
        "metasearch picks per learner (one for MAML's small ops, every core for ProtoNet)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="the backbone's precision (metasearch --precision): bfloat16 computes in "
        "bfloat16 with float32 weights; auto: what metasearch picks for image "
        "classification here (bfloat16 on a CPU with AMX-BF16 and no GPU, else float32)",
    )
    return parser


def configure_threads(args, section: str) -> int:
    """Sets TensorFlow's intra-op threads for `section` as metasearch would; returns them.

    Before any TensorFlow op runs: the pools are fixed when TensorFlow starts,
    so `--only all` times each section in a process of its own (`run_sections`).
    """
    learner = PrototypicalNetworks if section == "protonet" else MAML
    images = N_WAY * max(K_SHOT, N_QUERY)
    return threads.configure_for(args.intra_op_threads, learner.STEP_OPS, images)


def run_sections(argv: list[str]) -> dict:
    """`--only all`: ProtoNet and MAML, each timed in a child process of its own, merged.

    Each child sets TensorFlow's threads for its learner (`configure_threads`).
    The report is ProtoNet's with MAML's `maml` key; with `--peers`, the
    `peers` steps of both, each with its own threads and load averages.
    """
    reports = {}
    for section in ("protonet", "maml"):
        command = [sys.executable, __file__, *argv, "--only", section]
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            sys.exit(f"throughput.py --only {section} failed (exit status {done.returncode})")
        reports[section] = json.loads(done.stdout)
    report = reports["protonet"]
    report["maml"] = reports["maml"]["maml"]
    report["intra_op_threads"] = {k: r["intra_op_threads"] for k, r in reports.items()}
    report["load_average_1_5_15_min"] = {
        "before": reports["protonet"]["load_average_1_5_15_min"]["before"],
        "after": reports["maml"]["load_average_1_5_15_min"]["after"],
    }
    if "peers" in report:
        maml_peers = reports["maml"]["peers"]
        report["peers"]["steps"].update(maml_peers["steps"])
        for key in (
            "threads",
            "load_average_1_5_15_min",
            "quiet_before",
            "matmul_gflops_fp32",
            "matmul_gflops_bfloat16",
        ):
            report["peers"][key] = {k: r["peers"][key] for k, r in reports.items()}
    return report


def main():
    global PRECISION
    args = build_parser().parse_args()
    if args.only == "all":
        argv, rest = [], iter(sys.argv[1:])
        for arg in rest:
            if arg == "--only":
                next(rest, None)  # its value
            elif not arg.startswith("--only="):
                argv.append(arg)
        print(json.dumps(run_sections(argv), indent=2))
        return
    _import_tensorflow()
    PRECISION = resolve_precision(args.precision)  # the default mode: as metasearch picks
    intra_op_threads = configure_threads(args, args.only)
    splits = Glyphs(DatasetOptions(None, 28, 0, {"classes": 300})).load()
    load_before = os.getloadavg()
    report = {
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "tensorflow": tf.__version__,
        "precision": PRECISION,
        "precision_setting": args.precision,
        "intra_op_threads": intra_op_threads,
    }
    with tempfile.TemporaryDirectory(prefix="metasearch_peers_") as folder:
        peer = Peer(args, splits, folder) if args.peers else None
        first_losses = {} if peer else None
        if args.only == "protonet":
            report.update(protonet(splits, args, first_losses))
            if peer:
                peer.time(["protonet"], args.episodes, PROTONET_WARMUP)
        else:
            report["maml"] = maml(splits, args, first_losses)
            if peer:
                peer.time(["maml", "fomaml"], args.maml_tasks, args.warmup)
        if peer:
            report["peers"] = peer.section(report, first_losses)
    # The machine may be shared: the load average says how far to trust the rates.
    report["load_average_1_5_15_min"] = {"before": load_before, "after": os.getloadavg()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
