"""Meta-training throughput of the conv4-64 ProtoNet, graph mode vs XLA.

Prints JSON: episodes/s (median of the repeats) at 5-way 1-shot 15-query 28x28 on `glyphs`, through
the same `MetaTrainer` and `tf.data` episode stream a search uses, for plain
graph mode and for XLA (`jit_compile=True`), and which mode
`--jit_compile=auto` picks on this machine.

    python benchmarks/throughput.py [--episodes 300] [--repeats 3]
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
from metasearch.plugins.protonet import PrototypicalNetworks  # noqa: E402
from metasearch.search_spaces.conv_blocks import ConvBlocks  # noqa: E402
from metasearch.training import MetaTrainer, resolve_jit_compile  # noqa: E402

CONV4_64 = {"depth": 4, "filters": 64, "growth": 1.0}


def measure(
    jit_compile: bool, splits, episodes_count: int, repeats: int, n_way=5, k_shot=1, n_query=15
):
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    task = TaskSpec(n_way, k_shot, n_query, (28, 28, 1))
    learner = PrototypicalNetworks(
        ConvBlocks.build(CONV4_64, task.image_shape),
        {"metric": "sqeuclidean", "embedding_dim": 0},
        task,
    )
    images = splits.train.images
    trainer = MetaTrainer(
        learner,
        (float(images.mean()), float(images.std())),
        1e-3,
        episodes_count * (repeats + 1),
        jit_compile,
    )
    stream = episodes.episode_dataset(
        splits.train, n_way, k_shot, n_query, 0, episodes.TRAIN_STREAM
    )
    trainer.build(next(iter(stream)))
    trainer.train(stream, 30)  # trace, compile and warm the pipeline
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        trainer.train(stream, episodes_count)
        rates.append(episodes_count / (time.perf_counter() - start))
    rates.sort()
    return {"episodes_per_second": rates[len(rates) // 2], "best": rates[-1], "all_runs": rates}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    splits = Glyphs(DatasetOptions(None, 28, 0, {"num_classes": 300})).load()
    graph = measure(False, splits, args.episodes, args.repeats)
    xla = measure(True, splits, args.episodes, args.repeats)
    auto = resolve_jit_compile("auto")
    default = xla if auto else graph
    print(
        json.dumps(
            {
                "benchmark": "protonet_conv4_64_meta_training_throughput",
                "task": "5-way 1-shot 15-query 28x28 (glyphs)",
                "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
                "tensorflow": tf.__version__,
                "graph_mode": graph,
                "xla": xla,
                "auto_picks": "xla" if auto else "graph_mode",
                "default_mode_episodes_per_second": default["episodes_per_second"],
                "target_episodes_per_second": 15.0,
                "meets_target": default["episodes_per_second"] >= 15.0,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
