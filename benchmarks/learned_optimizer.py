"""A meta-trained LSTM optimiser against tuned Adam on small MLPs (glyph tasks).

The MNIST experiment of Andrychowicz et al. (NeurIPS 2016, section 3.2) on
the built-in `glyphs` data set: the optimisee is an MLP with one hidden layer
of 20 sigmoid units (196-20-10), trained for 100 steps on mini-batches of
128 images to classify a 10-way task. The data set is generated with 300
classes (240 meta-train, 30 meta-validation, 30 meta-test) of 200 images
each at 14x14 (`--num_classes`, `--images_per_class`, `--image_size`): with
the default 20 images per class a task's 200 images are memorised within a
few dozen steps by either optimiser. A task is 10 random classes of one
class set with all their images (2000), ink as 1 on a background of 0,
flattened. Each problem draws its own task, initial weights (N(0, 1/fan_in),
zero biases) and mini-batches (a random 128 of the 2000 per step).

Protocol:
1. Meta-training: an `LSTMOptimizer` (two layers of 20 units, the paper's
   preprocessing with p = 10, output scale 0.1) is meta-trained with
   `metasearch.learned_optimizers.meta_train` on problems from the
   meta-train classes: 100-step unrolls in truncations of 20, the gradient
   of each truncation's meta-loss taken through the updates (the optimisee's
   gradients as constants) and applied by Adam (1e-2, cosine-decayed over
   the budget, global-norm clipping at 1), for a wall-clock budget
   (`--meta_train_minutes`). Departure from the paper: the meta-loss is the
   mean of the log losses (`--meta_objective log_loss`; the paper's plain
   sum, `loss`, is dominated by the first steps' large losses and gave a
   learned optimiser that starts fast but is overtaken by Adam after about
   60 steps).
2. Adam's learning rate is tuned by grid (`--adam_grid`, 11 log-spaced
   rates from 1e-3 to 0.32) on 10 problems from the meta-validation classes:
   the rate with the lowest mean final training loss wins.
3. Test: 20 problems (`--seeds`) from the meta-test classes; both optimisers
   start from the same weights and see the same mini-batches. The training
   loss is the loss over all of the task's images after each step.

Reports the mean (and standard error) final training loss of each, the mean
over the last 10 steps, per-seed wins, the mean loss curves (every 5 steps),
the Adam grid, and the meta-training time; `meets_target` holds when the
learned optimiser's mean final training loss over the 20 test problems is
lower than tuned Adam's. Prints JSON. The whole run takes about
`--meta_train_minutes` plus a minute on two CPU cores (XLA, `--jit_compile`,
takes minutes to compile the unrolled truncation on CPU).

    python benchmarks/learned_optimizer.py [--meta_train_minutes 5]
        [--seeds 20] [--meta_objective log_loss|loss] [--save_optimizer DIR]

`--save_optimizer DIR` keeps the meta-trained LSTM; any Keras model can then
train with it:

    from metasearch import learned_optimizers
    lstm = learned_optimizers.load_optimizer(DIR)
    model.compile(optimizer=learned_optimizers.to_keras_optimizer(lstm), loss=...)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from metasearch import learned_optimizers  # noqa: E402
from metasearch.api import ClassSet, DatasetOptions  # noqa: E402
from metasearch.data.glyphs import Glyphs  # noqa: E402
from metasearch.inner_optimizers import LSTMOptimizer  # noqa: E402

N_WAY = 10
HIDDEN = 20
LAST_STEPS = 10
CURVE_EVERY = 5
# Distinct random streams per use, so that validation and test problems never
# share draws with meta-training ones.
STREAMS = {"train": 0, "val": 1, "test": 2}


def _floats(text):
    return [float(part) for part in text.split(",") if part]


class Problems:
    """Random optimisee problems (task, initial weights, mini-batches) from one class set."""

    def __init__(self, classes: ClassSet, steps: int, batch_size: int, stream: int):
        # Ink as 1 on 0 (as MNIST), flattened.
        self.images = (1.0 - classes.images).reshape(
            classes.num_classes, classes.images_per_class, -1
        )
        self.steps = steps
        self.batch_size = batch_size
        self.stream = stream

    @property
    def inputs(self) -> int:
        return int(self.images.shape[-1])

    def __call__(self, index: int) -> learned_optimizers.Problem:
        rng = np.random.default_rng([self.stream, index])
        classes = rng.choice(len(self.images), N_WAY, replace=False)
        images = self.images[classes].reshape(-1, self.inputs).astype(np.float32)
        labels = np.repeat(np.arange(N_WAY), self.images.shape[1]).astype(np.int32)
        count = len(labels)
        # One mini-batch per step and one more for judging the last update.
        batches = np.stack(
            [rng.permutation(count)[: self.batch_size] for _ in range(self.steps + 1)]
        ).astype(np.int32)
        params = [
            rng.normal(0.0, self.inputs**-0.5, size=(self.inputs, HIDDEN)),
            np.zeros(HIDDEN),
            rng.normal(0.0, HIDDEN**-0.5, size=(HIDDEN, N_WAY)),
            np.zeros(N_WAY),
        ]
        return learned_optimizers.Problem(
            [tf.constant(p, tf.float32) for p in params],
            (tf.constant(images), tf.constant(labels), tf.constant(batches)),
        )


def mlp_loss(params, images, labels):
    """Mean cross-entropy of the sigmoid MLP at `params` on `images`."""
    w1, b1, w2, b2 = params
    logits = tf.matmul(tf.sigmoid(tf.matmul(images, w1) + b1), w2) + b2
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


def batch_loss(params, data, step):
    """The loss on step `step`'s mini-batch (what the optimisers descend)."""
    images, labels, batches = data
    index = batches[step]
    return mlp_loss(params, tf.gather(images, index), tf.gather(labels, index))


def full_loss(params, data):
    """The training loss over all of the task's images (what is reported)."""
    images, labels, _ = data
    return mlp_loss(params, images, labels)


def _gradients(params, data, step):
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = batch_loss(params, data, step)
    return tape.gradient(loss, params)


def make_runners(lstm: LSTMOptimizer, steps: int):
    """Compiled trajectories: `learned(params, data)` and `adam(params, data, lr)`.

    Each returns the full training loss before and after every step `[steps + 1]`.
    """

    @tf.function
    def learned(params, data):
        params = list(params)
        state = lstm.init(params)
        losses = tf.TensorArray(tf.float32, size=steps + 1)
        losses = losses.write(0, full_loss(params, data))
        for t in tf.range(steps):
            grads = _gradients(params, data, t)
            params, state = lstm.update(params, grads, state, 0)
            losses = losses.write(t + 1, full_loss(params, data))
        return losses.stack()

    @tf.function
    def adam(params, data, learning_rate):
        # Keras's Adam (beta 0.9, 0.999, epsilon 1e-7), written functionally so
        # that both optimisers run from the same tensors.
        params = list(params)
        m = [tf.zeros_like(p) for p in params]
        v = [tf.zeros_like(p) for p in params]
        losses = tf.TensorArray(tf.float32, size=steps + 1)
        losses = losses.write(0, full_loss(params, data))
        for t in tf.range(steps):
            grads = _gradients(params, data, t)
            count = tf.cast(t + 1, tf.float32)
            alpha = learning_rate * tf.sqrt(1.0 - 0.999**count) / (1.0 - 0.9**count)
            m = [0.9 * a + 0.1 * g for a, g in zip(m, grads)]
            v = [0.999 * a + 0.001 * tf.square(g) for a, g in zip(v, grads)]
            params = [p - alpha * a / (tf.sqrt(b) + 1e-7) for p, a, b in zip(params, m, v)]
            losses = losses.write(t + 1, full_loss(params, data))
        return losses.stack()

    return learned, adam


def check_adam() -> float:
    """Largest difference between our Adam and `keras.optimizers.Adam` over 3 steps."""
    _, adam = make_runners(None, 3)
    problem = _toy_problems()(0)
    ours = adam(problem.params, problem.data, tf.constant(0.01)).numpy()
    variables = [tf.Variable(p) for p in problem.params]
    reference = keras.optimizers.Adam(0.01)
    theirs = [float(full_loss(variables, problem.data))]
    for t in range(3):
        grads = _gradients([tf.convert_to_tensor(v) for v in variables], problem.data, t)
        reference.apply_gradients(zip(grads, variables))
        theirs.append(float(full_loss(variables, problem.data)))
    return float(np.max(np.abs(ours[:4] - np.array(theirs))))


def _toy_problems():
    rng = np.random.default_rng(0)
    classes = ClassSet(rng.uniform(size=(N_WAY, 4, 3, 3, 1)).astype(np.float32), [""] * N_WAY)
    return Problems(classes, 3, 16, 99)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meta_train_minutes", type=float, default=5.0)
    parser.add_argument("--meta_train_problems", type=int, default=None, help="cap, for quick runs")
    parser.add_argument("--meta_learning_rate", type=float, default=1e-2)
    parser.add_argument("--clip_norm", type=float, default=1.0)
    parser.add_argument("--hidden_units", type=int, default=20)
    parser.add_argument("--output_scale", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--truncation", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--image_size", type=int, default=14)
    parser.add_argument("--num_classes", type=int, default=300, help="glyph classes generated")
    parser.add_argument("--images_per_class", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--val_seeds", type=int, default=10)
    parser.add_argument(
        "--adam_grid",
        type=_floats,
        default=[round(float(x), 5) for x in np.logspace(-3, -0.5, 11)],
        help="Adam learning rates tried (default: 11 log-spaced, 1e-3 to 0.32)",
    )
    parser.add_argument("--constant_meta_learning_rate", action="store_true")
    parser.add_argument("--jit_compile", action="store_true", help="slow to compile on CPU")
    parser.add_argument(
        "--meta_objective", choices=learned_optimizers.META_OBJECTIVES, default="log_loss"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--save_optimizer",
        default=None,
        help="folder to save the meta-trained LSTM in (load it with "
        "metasearch.learned_optimizers.load_optimizer, then to_keras_optimizer)",
    )
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)

    start = time.perf_counter()
    options = {"classes": args.num_classes, "images_per_class": args.images_per_class}
    splits = Glyphs(DatasetOptions(None, args.image_size, 0, options)).load()
    problems = {
        name: Problems(classes, args.steps, args.batch_size, STREAMS[name] + 10 * args.seed)
        for name, classes in splits.items()
    }
    load_seconds = time.perf_counter() - start

    lstm = LSTMOptimizer(hidden_units=args.hidden_units, output_scale=args.output_scale)
    progress = []

    def on_problem(index, losses):
        progress.append(float(np.mean(losses)))
        if index % 25 == 0:
            # Progress on stderr: stdout is the JSON result alone.
            print(f"problem {index}: meta-loss {np.mean(progress[-25:]):.4f}", file=sys.stderr)

    history = learned_optimizers.meta_train(
        lstm,
        problems["train"],
        batch_loss,
        problems=args.meta_train_problems,
        seconds=args.meta_train_minutes * 60.0,
        unroll_steps=args.steps,
        truncation=args.truncation,
        learning_rate=args.meta_learning_rate,
        clip_norm=args.clip_norm,
        jit_compile=args.jit_compile,
        meta_objective=args.meta_objective,
        cosine_decay=not args.constant_meta_learning_rate,
        on_problem=on_problem,
    )

    if args.save_optimizer:
        learned_optimizers.save_optimizer(lstm, args.save_optimizer)

    adam_check = check_adam()
    learned, adam = make_runners(lstm, args.steps)

    evaluation_start = time.perf_counter()
    grid = {}
    for rate in args.adam_grid:
        finals = [
            float(adam(p.params, p.data, tf.constant(rate))[-1])
            for p in map(problems["val"], range(args.val_seeds))
        ]
        grid[f"{rate:g}"] = float(np.mean(finals))
    finite = {k: v for k, v in grid.items() if np.isfinite(v)}
    best_rate = float(min(finite, key=finite.get))

    learned_curves, adam_curves = [], []
    for index in range(args.seeds):
        problem = problems["test"](index)
        learned_curves.append(learned(problem.params, problem.data).numpy())
        adam_curves.append(adam(problem.params, problem.data, tf.constant(best_rate)).numpy())
    learned_curves, adam_curves = np.array(learned_curves), np.array(adam_curves)
    evaluation_seconds = time.perf_counter() - evaluation_start

    def summary(curves):
        finals = curves[:, -1]
        return {
            "final_loss": float(np.mean(finals)),
            "final_loss_sem": float(np.std(finals, ddof=1) / np.sqrt(len(finals))),
            f"mean_loss_last_{LAST_STEPS}_steps": float(np.mean(curves[:, -LAST_STEPS:])),
            "curve": [round(float(x), 4) for x in np.mean(curves, 0)[::CURVE_EVERY]],
        }

    wins = int(np.sum(learned_curves[:, -1] < adam_curves[:, -1]))
    result = {
        "benchmark": "learned_optimizer",
        "protocol": {
            "optimisee": f"MLP {problems['test'].inputs}-{HIDDEN}(sigmoid)-{N_WAY}",
            "task": f"{N_WAY}-way glyphs, {args.images_per_class} images per class, "
            f"{args.image_size}x{args.image_size}",
            "steps": args.steps,
            "batch_size": args.batch_size,
            "truncation": args.truncation,
            "seeds": args.seeds,
            "val_seeds": args.val_seeds,
        },
        "lstm": {
            "hidden_units": args.hidden_units,
            "output_scale": args.output_scale,
            "parameters": int(sum(np.prod(v.shape) for v in lstm.trainable_variables)),
        },
        "meta_training": {
            "minutes_budget": args.meta_train_minutes,
            "seconds": round(history["seconds"], 1),
            "problems": history["problems"],
            "truncations": history["truncations"],
            "meta_learning_rate": args.meta_learning_rate,
            "clip_norm": args.clip_norm,
            "meta_objective": args.meta_objective,
            "cosine_decay": not args.constant_meta_learning_rate,
            "meta_loss_first_25": float(np.mean(history["meta_losses"][:25])),
            "meta_loss_last_25": float(np.mean(history["meta_losses"][-25:])),
        },
        "adam_grid_val_final_loss": grid,
        "adam_learning_rate": best_rate,
        "adam_matches_keras": adam_check < 1e-5,
        "learned": summary(learned_curves),
        "adam": summary(adam_curves),
        "learned_wins": wins,
        "per_seed_final_loss": {
            "learned": [round(float(x), 4) for x in learned_curves[:, -1]],
            "adam": [round(float(x), 4) for x in adam_curves[:, -1]],
        },
        "meets_target": bool(np.mean(learned_curves[:, -1]) < np.mean(adam_curves[:, -1])),
        "seconds": {
            "data": round(load_seconds, 1),
            "evaluation": round(evaluation_seconds, 1),
            "total": round(time.perf_counter() - start, 1),
        },
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "tensorflow": tf.__version__,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
