"""What the PyTorch peers share: the conv4-64 network, Adam and its decay, episodes, timing.

The peers mirror what `benchmarks/throughput.py` measures of metasearch, in
plain eager PyTorch as a researcher would write it:

* conv4-64 at 28x28x1: four blocks of 3x3 "same" convolution (with bias),
  batch norm (epsilon 1e-3, Keras's; running-average momentum 0.9 in Keras's
  convention, 0.1 in PyTorch's), ReLU and 2x2 max pooling: 28 -> 14 -> 7 ->
  3 -> 1, so 64 features. Glorot-uniform kernels and zero biases, as Keras
  initialises them.
* the outer optimiser: Adam at 1e-3 (epsilon 1e-7, Keras's) under Keras's
  `CosineDecay` over all the steps of the run (alpha 0.05), as
  `metasearch.training.MetaTrainer` runs it.
* episodes: 5-way 1-shot 15-query, images standardised with the training
  set's mean and standard deviation inside the timed step (as MetaTrainer
  does). They come from an `.npz` that throughput.py writes from its own
  episode stream (the same first episodes metasearch trains on), or are
  random when the peer runs alone.

Nothing here imports metasearch: the peers run in a separate environment
(see README.md) and never make PyTorch a dependency of metasearch.
"""

from __future__ import annotations

import math
import os
import time

try:
    import numpy as np
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import nn
except ImportError as error:  # pragma: no cover - exercised without torch installed
    raise ImportError(
        f"benchmarks/peers needs PyTorch and NumPy ({error.name} is missing): install them in "
        "a separate environment, e.g. `python3 -m venv /work/peers_venv && "
        "/work/peers_venv/bin/pip install torch numpy` (or `pip install -e .[peers]`), "
        "and pass `--peers_python /work/peers_venv/bin/python` to benchmarks/throughput.py"
    ) from error

N_WAY, K_SHOT, N_QUERY = 5, 1, 15
IMAGE_SHAPE = (28, 28, 1)
FILTERS, DEPTH = 64, 4
# Keras's BatchNormalization epsilon; the backbone's momentum 0.9 is PyTorch's 0.1.
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.1
LEARNING_RATE = 1e-3
ADAM_EPSILON = 1e-7  # Keras's default (PyTorch's is 1e-8)
FINAL_LEARNING_RATE_FRACTION = 0.05  # MetaTrainer's CosineDecay alpha


def conv4(track_running_stats: bool = True, head: int = 0) -> nn.Sequential:
    """conv4-64 as `conv_blocks` builds it, with a linear head of `head` outputs if > 0.

    `track_running_stats=False` keeps batch norm on batch statistics always
    (MAML's transductive batch norm); True keeps running averages like Keras.
    """
    layers: list[nn.Module] = []
    channels, size = IMAGE_SHAPE[2], IMAGE_SHAPE[0]
    for _ in range(DEPTH):
        layers += [
            nn.Conv2d(channels, FILTERS, 3, padding=1, bias=False),  # as conv_blocks
            nn.BatchNorm2d(
                FILTERS,
                eps=BN_EPSILON,
                momentum=BN_MOMENTUM,
                track_running_stats=track_running_stats,
            ),
            nn.ReLU(),
        ]
        if size >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        channels = FILTERS
    layers.append(nn.Flatten())
    if head:
        layers.append(nn.Linear(FILTERS * size * size, head))
    model = nn.Sequential(*layers)
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(module.weight)  # Keras's glorot_uniform
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def adam(model: nn.Module, total_steps: int):
    """Adam under Keras's CosineDecay over `total_steps` (MetaTrainer's), and its scheduler."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, eps=ADAM_EPSILON)
    alpha = FINAL_LEARNING_RATE_FRACTION

    def decay(step: int) -> float:
        fraction = min(step, total_steps) / max(1, total_steps)
        return (1.0 - alpha) * 0.5 * (1.0 + math.cos(math.pi * fraction)) + alpha

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, decay)


class Episodes:
    """An endless cycle over a pool of episodes, as NCHW float32 tensors.

    Images stay raw; `standardise` applies the training set's statistics
    (inside the timed step, as MetaTrainer normalises inside its step).
    """

    def __init__(self, path: str | None = None, pool: int = 20, seed: int = 0):
        if path:
            data = np.load(path)
            arrays = [data[k] for k in ("support_images", "support_labels")]
            arrays += [data[k] for k in ("query_images", "query_labels")]
            self.mean, self.std = float(data["mean"]), float(data["std"])
        else:
            rng = np.random.default_rng(seed)
            shape = IMAGE_SHAPE
            arrays = [
                rng.random((pool, N_WAY * K_SHOT, *shape), dtype=np.float32),
                np.tile(np.repeat(np.arange(N_WAY), K_SHOT), (pool, 1)),
                rng.random((pool, N_WAY * N_QUERY, *shape), dtype=np.float32),
                np.tile(np.repeat(np.arange(N_WAY), N_QUERY), (pool, 1)),
            ]
            self.mean, self.std = 0.5, 0.29
        support, support_labels, query, query_labels = arrays
        # NHWC (TensorFlow's layout) to NCHW (PyTorch's), once, outside the timing.
        self.episodes = [
            (
                torch.from_numpy(np.ascontiguousarray(support[i].transpose(0, 3, 1, 2))),
                torch.from_numpy(support_labels[i].astype(np.int64)),
                torch.from_numpy(np.ascontiguousarray(query[i].transpose(0, 3, 1, 2))),
                torch.from_numpy(query_labels[i].astype(np.int64)),
            )
            for i in range(len(support))
        ]
        if not self.episodes:
            raise ValueError("no episodes to train on")
        self.index = 0

    def standardise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def restart(self) -> None:
        """Back to the first episode (metasearch reads its stream from the start each run)."""
        self.index = 0

    def next(self):
        episode = self.episodes[self.index % len(self.episodes)]
        self.index += 1
        return episode


def class_means(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Per-class mean embedding, by a one-hot matmul as `metasearch.api.class_means`."""
    one_hot = F.one_hot(labels, num_classes).to(embeddings.dtype)
    return (one_hot.T @ embeddings) / one_hot.sum(0).clamp_min(1.0)[:, None]


def run_steps(step, episodes: Episodes, count: int) -> list[float]:
    """Runs `step(episode)` `count` times from the first episode; the losses, checked finite.

    Losses are read back once per run (PyTorch's CPU eager ops have already
    finished; metasearch reads its back every 20 steps).
    """
    episodes.restart()
    losses = [step(episodes.next()) for _ in range(count)]
    values = torch.stack(losses).tolist() if losses else []
    if not all(math.isfinite(v) for v in values):
        raise RuntimeError(f"the PyTorch peer diverged: losses {values[:5]}...")
    return values


def rates(step, episodes: Episodes, count: int, repeats: int) -> dict:
    """Median, best and every rate (steps/s) of `repeats` timed runs, and CPU seconds per step.

    The same statistics as throughput.py's `_rates` for metasearch.
    """
    runs, cpu = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        run_steps(step, episodes, count)
        runs.append(count / (time.perf_counter() - start))
        cpu.append((time.process_time() - cpu_start) / count)
    runs.sort()
    cpu.sort()
    return {
        "median": runs[len(runs) // 2],
        "best": runs[-1],
        "all_runs": runs,
        "cpu_seconds": cpu[len(cpu) // 2],
    }


def matmul_gflops(size: int = 2048, count: int = 10, repeats: int = 3) -> float:
    """Best fp32 GFLOP/s of `count` chained `size`-square matmuls (2 n^3 FLOPs each)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator) / math.sqrt(size)
    torch.mm(a, b)  # warm up
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        c = a
        for _ in range(count):
            c = torch.mm(c, b)
        float(c[0, 0])
        best = max(best, 2.0 * size**3 * count / (time.perf_counter() - start) / 1e9)
    return best


def set_threads(threads: int, interop_threads: int | None = None) -> dict:
    """Sets PyTorch's intra-op (and, before any parallel work, inter-op) thread counts."""
    torch.set_num_threads(int(threads))
    if interop_threads:
        try:
            torch.set_num_interop_threads(int(interop_threads))
        except RuntimeError:  # already started
            pass
    return {
        "intra_op": torch.get_num_threads(),
        "inter_op": torch.get_num_interop_threads(),
        "cores_available": len(os.sched_getaffinity(0)),
    }
