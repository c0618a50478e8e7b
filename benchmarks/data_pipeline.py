"""Episode pipeline speed and memory on a mini-ImageNet-sized image folder (JSON on stdout).

Generates (once, into `--data_dir`) 100 classes x 600 JPEG images at 84x84 in
the `image_folder` layout, then measures, each in a fresh process:

* `cached`: the images decoded once into the uint8 cache, then 5-way 5-shot
  15-query episodes at 84x84 drawn from it;
* `streaming`: the same episodes decoded from the files per episode
  (`--cache_memory=0`);
* `training`: what conv4-64 ProtoNet meta-training consumes (episodes/s of
  training steps on ready episodes, graph mode).

File images are decoded by the pipeline's image worker, a TensorFlow-free
child process (`metasearch.data.image_worker`) that holds the cache; the
TensorFlow process only draws indices, receives uint8 pixels and builds the
episodes. So each mode reports two peaks of resident memory, separately:
`pipeline_worker` (the worker's `VmHWM`, read from `/proc/<pid>/status` just
before it is closed: the pipeline's own memory, which the targets bound) and
`consumer_tensorflow_process` (the measuring process: Python, TensorFlow,
Keras and metasearch imported, plus tf.data's episodes; any training process
pays that import anyway).

Targets (issue "Real data at scale"): the pipeline alone at least 5x the
episodes/s training consumes; the pipeline's peak resident memory at most
1.5 GB cached and 600 MB streaming.

    python benchmarks/data_pipeline.py [--data_dir DIR] [--episodes 300]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CLASSES, IMAGES_PER_CLASS, SIZE = 100, 600, 84
N_WAY, K_SHOT, N_QUERY = 5, 5, 15


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_folder(root: str) -> None:
    """100 class folders of 600 84x84 JPEGs: noisy coloured blobs per class."""
    import numpy as np
    from PIL import Image

    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        return
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for c in range(CLASSES):
        folder = os.path.join(root, f"n{c:08d}")
        os.makedirs(folder, exist_ok=True)
        colour = rng.uniform(0, 255, 3)
        cy, cx = rng.uniform(20, 64, 2)
        for i in range(IMAGES_PER_CLASS):
            blob = np.exp(
                -((yy - cy - rng.normal(0, 4)) ** 2 + (xx - cx - rng.normal(0, 4)) ** 2) / 300.0
            )
            pixels = blob[..., None] * colour + rng.normal(0, 20, (SIZE, SIZE, 3)) + 40
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                os.path.join(folder, f"{i:04d}.jpg"), quality=90
            )
    open(marker, "w").close()


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_pipeline(root: str, cache_mb: int, episodes: int) -> dict:
    """Episodes/s of the pipeline alone, the worker's peak memory and this process's."""
    import numpy as np
    import tensorflow as tf

    from metasearch.api import ClassSet, DatasetOptions
    from metasearch.data.episodes import episode_dataset
    from metasearch.data.image_folder import ImageFolder
    from metasearch.data.pipeline import EpisodeImages

    baseline = _peak_mb()  # Python, TensorFlow, Keras and metasearch imported
    started = time.perf_counter()
    dataset = ImageFolder(DatasetOptions(root, SIZE, 0, {"split": [0.98, 0.01, 0.01]}))
    splits = dataset.load()
    # All 100 classes as one class set: the benchmark's "mini-ImageNet-sized folder".
    names = [n for _, s in splits.items() for n in s.names]
    files = [f for _, s in splits.items() for f in s.files]
    images = EpisodeImages(
        ClassSet(None, names, files=files), SIZE, 3, K_SHOT + N_QUERY, cache_mb * 2**20
    )
    prepared = time.perf_counter() - started
    stream = iter(episode_dataset(images, N_WAY, K_SHOT, N_QUERY, 0, 1))
    for _ in range(20):  # warm-up: tracing and the first prefetches
        next(stream)
    started = time.perf_counter()
    checksum = 0.0
    for _ in range(episodes):
        episode = next(stream)
        checksum += float(tf.reduce_sum(episode.query_images[0, 0, 0]))
    seconds = time.perf_counter() - started
    worker = images.worker.memory()  # kB, read from /proc/<worker pid>/status
    worker_pid = images.worker.pid
    del stream
    images.close()
    return {
        "mode": images.mode,
        "images": int(np.sum(images.counts)),
        "prepare_seconds": round(prepared, 1),
        "episodes_per_second": round(episodes / seconds, 1),
        "cache_mb": round(images.cached_bytes / 2**20, 0),
        "pipeline_worker": {
            "what": "the TensorFlow-free image worker process (decoding, cache)",
            "pid": worker_pid,
            "peak_resident_mb": round(worker["VmHWM"] / 1024.0, 0),
            "resident_at_end_mb": round(worker["VmRSS"] / 1024.0, 0),
        },
        "consumer_tensorflow_process": {
            "what": "the measuring process: TensorFlow imported, episodes built by tf.data",
            "peak_resident_mb": round(_peak_mb(), 0),
            "import_baseline_mb": round(baseline, 0),
        },
    }


def measure_training(steps: int) -> dict:
    """Episodes/s conv4-64 ProtoNet meta-training consumes at 84x84x3 (graph mode)."""
    import numpy as np
    import tensorflow as tf

    from metasearch.api import Episode, TaskSpec
    from metasearch.plugins.protonet import PrototypicalNetworks
    from metasearch.search_spaces.conv_blocks import ConvBlocks
    from metasearch.training import MetaTrainer

    task = TaskSpec(N_WAY, K_SHOT, N_QUERY, (SIZE, SIZE, 3))
    space = ConvBlocks()
    backbone = space.build(
        {"depth": 4, "filters": 64, "growth": 1.0, "conv_bias": False}, task.image_shape
    )
    learner = PrototypicalNetworks(backbone, {"metric": "sqeuclidean", "embedding_dim": 0}, task)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(N_WAY), 1).astype(np.int32)
    episode = Episode(
        tf.constant(rng.uniform(size=(N_WAY * K_SHOT, SIZE, SIZE, 3)), tf.float32),
        tf.constant(np.repeat(labels, K_SHOT)),
        tf.constant(rng.uniform(size=(N_WAY * N_QUERY, SIZE, SIZE, 3)), tf.float32),
        tf.constant(np.repeat(labels, N_QUERY)),
    )
    trainer = MetaTrainer(learner, (0.5, 0.25), 1e-3, steps + 5, jit_compile=False)
    trainer.build(episode)
    for _ in range(5):
        trainer.train_step(episode)
    started = time.perf_counter()
    for _ in range(steps):
        loss, _ = trainer.train_step(episode)
    float(loss)
    seconds = time.perf_counter() - started
    return {"episodes_per_second": round(steps / seconds, 2)}


def _child(args) -> None:
    if args.child == "training":
        result = measure_training(args.steps)
    else:
        cache_mb = 8192 if args.child == "cached" else 0
        result = measure_pipeline(args.data_dir, cache_mb, args.episodes)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="/tmp/metasearch_bench_miniimagenet_folder")
    parser.add_argument("--episodes", type=int, default=300, help="episodes timed per mode")
    parser.add_argument("--steps", type=int, default=30, help="training steps timed")
    parser.add_argument(
        "--child", choices=("cached", "streaming", "training"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _log(f"writing {CLASSES} x {IMAGES_PER_CLASS} JPEGs into {args.data_dir} (once)")
    started = time.perf_counter()
    make_folder(args.data_dir)
    generated = time.perf_counter() - started
    load_before = os.getloadavg()
    results = {}
    for mode in ("cached", "streaming", "training"):
        _log(f"measuring {mode}")
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                mode,
                "--data_dir",
                args.data_dir,
                "--episodes",
                str(args.episodes),
                "--steps",
                str(args.steps),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    consumed = results["training"]["episodes_per_second"]
    report = {
        "benchmark": "data_pipeline",
        "task": f"{N_WAY}-way {K_SHOT}-shot {N_QUERY}-query at {SIZE}x{SIZE}x3",
        "folder": {"classes": CLASSES, "images_per_class": IMAGES_PER_CLASS, "format": "JPEG"},
        "generate_seconds": round(generated, 1),
        **results,
        "speed_ratio": {
            mode: round(results[mode]["episodes_per_second"] / consumed, 1)
            for mode in ("cached", "streaming")
        },
        "targets": {
            "pipeline_at_least_5x_training": {
                mode: results[mode]["episodes_per_second"] >= 5 * consumed
                for mode in ("cached", "streaming")
            },
            "cached_pipeline_peak_at_most_1500_mb": (
                results["cached"]["pipeline_worker"]["peak_resident_mb"] <= 1500
            ),
            "streaming_pipeline_peak_at_most_600_mb": (
                results["streaming"]["pipeline_worker"]["peak_resident_mb"] <= 600
            ),
        },
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
