"""Few-shot classifiers on the small Omniglot archives: train on small1, test on small2's own alphabets.

Meta-trains one plugin (`--plugin`: protonet by default, or matching, maml,
fomaml, metasgd, anil, versa, neural_statistician, meta_critic,
learned_optimizer, or any registered classification plugin, with
`--plugin_config` JSON overriding its default hyperparameters) on `images_background_small1` only (its characters, with their
90/180/270-degree rotations as extra classes, as Snell et al. and Vinyals et
al. do) for a fixed wall-clock budget, then evaluates 5-way and 20-way
1-shot on the three alphabets only `images_background_small2` has
(Japanese_(katakana), Sanskrit, Tagalog), never seen in training, over 600
episodes each. Prints JSON with mean accuracy, 95% CI and training time.

    python benchmarks/omniglot_small.py [--data_dir ../shared/data/omniglot] [--train_minutes 15]
    python benchmarks/omniglot_small.py --plugin maml --plugin_config '{"head_init": "proto"}'
    python benchmarks/omniglot_small.py --episodes 6000 --precision bfloat16

Every plugin gets the same protocol and the same wall-clock training budget,
so runs of different plugins compare directly.

`--train_on=glyphs` meta-trains on the built-in generated `glyphs` instead
(no Omniglot image seen in training) to measure how well it transfers.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from metasearch import registry, threads  # noqa: E402
from metasearch.api import DatasetOptions, TaskSpec  # noqa: E402
from metasearch.data import episodes  # noqa: E402
from metasearch.data.glyphs import Glyphs  # noqa: E402
from metasearch.data.omniglot import load_characters  # noqa: E402
from metasearch.precision import build_backbone, resolve_precision  # noqa: E402
from metasearch.search_spaces.conv_blocks import ConvBlocks  # noqa: E402
from metasearch.testing import sample_configs  # noqa: E402
from metasearch.training import MetaTrainer, resolve_jit_compile  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "omniglot"))
TEST_ALPHABETS = ("Japanese_(katakana)", "Sanskrit", "Tagalog")


# How many points below ProtoNet's 20-way 1-shot accuracy (same budget) each plugin may be.
ALLOWED_GAP_POINTS = {"versa": 0.0, "neural_statistician": 10.0, "meta_critic": 10.0}
DEFAULT_GAP_POINTS = 5.0


def targets(args, results) -> dict:
    """ProtoNet's absolute targets; for other plugins, at most `ALLOWED_GAP_POINTS` (default
    5) points below a ProtoNet run's 20-way 1-shot accuracy (`--reference`: its JSON output,
    same budget)."""
    allowed = ALLOWED_GAP_POINTS.get(args.plugin, DEFAULT_GAP_POINTS)
    if args.plugin == "protonet":
        return {
            "targets": {"20way_1shot": 0.86, "5way_1shot": 0.95},
            "meets_targets": args.train_on == "small1"
            and results["20way_1shot"]["accuracy"] >= 0.86
            and results["5way_1shot"]["accuracy"] >= 0.95,
        }
    if not args.reference:
        return {
            "targets": f"at most {allowed} points below protonet's 20-way 1-shot (pass --reference)"
        }
    with open(args.reference, encoding="utf-8") as handle:
        reference = json.load(handle)
    protonet = reference["results"]["20way_1shot"]["accuracy"]
    gap = protonet - results["20way_1shot"]["accuracy"]
    return {
        "reference": {
            "plugin": reference.get("plugin", "protonet"),
            "20way_1shot": protonet,
            "train_seconds": reference.get("train_seconds"),
        },
        "points_below_reference_20way_1shot": 100 * gap,
        "targets": {"20way_1shot_at_most_points_below_protonet": allowed},
        "meets_targets": args.train_on == "small1" and 100 * gap <= allowed,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=DEFAULT_DATA)
    parser.add_argument("--plugin", default="protonet")
    parser.add_argument(
        "--plugin_config", default="{}", help="JSON overriding the plugin's default config"
    )
    parser.add_argument("--train_minutes", type=float, default=15.0)
    parser.add_argument(
        "--episodes",
        type=int,
        default=None,
        help="train exactly this many episodes instead of --train_minutes (for comparisons "
        "at equal training, e.g. of --precision)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="the backbone's precision (metasearch --precision; auto: what a search picks "
        "here, bfloat16 on a CPU with AMX-BF16 and no GPU)",
    )
    parser.add_argument(
        "--intra_op_threads",
        type=int,
        default=0,
        help="TensorFlow's intra-op threads (metasearch --intra_op_threads; 0: auto, as a "
        "search picks for the plugin and these episodes)",
    )
    parser.add_argument("--train_on", choices=("small1", "glyphs"), default="small1")
    parser.add_argument("--train_n_way", type=int, default=20)
    parser.add_argument("--k_shot", type=int, default=1)
    parser.add_argument("--n_query", type=int, default=5)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--rotations", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--augment", default="affine", choices=episodes.AUGMENTATIONS)
    parser.add_argument("--test_episodes", type=int, default=600)
    parser.add_argument("--image_size", type=int, default=28)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reference",
        default=None,
        help="protonet's JSON output, for the targets relative to it (ALLOWED_GAP_POINTS)",
    )
    parser.add_argument(
        "--eval_inner_steps",
        type=int,
        default=None,
        help="gradient-based plugins: inner steps when adapting to test tasks",
    )
    parser.add_argument("--jit_compile", default="auto")
    args = parser.parse_args()
    # The default mode, as a search picks it; threads before any TensorFlow op runs.
    plugin = registry.load("plugin", args.plugin)
    args.precision = resolve_precision(args.precision)
    images = args.train_n_way * max(args.k_shot, args.n_query)
    intra_op_threads = threads.configure_for(args.intra_op_threads, plugin.STEP_OPS, images)

    size = args.image_size
    if args.train_on == "glyphs":
        train = Glyphs(DatasetOptions(None, size, args.seed, {})).load().train
        train_name = "glyphs (generated, meta-train classes)"
    else:
        train = load_characters(args.data_dir, ["images_background_small1"], size, args.rotations)
        train_name = "images_background_small1" + (" + rotations" if args.rotations else "")
    test = load_characters(
        args.data_dir, [f"images_background_small2/{a}" for a in TEST_ALPHABETS], size
    )
    overlap = set(train.names) & set(test.names)
    assert not overlap, f"train and test share classes: {sorted(overlap)[:3]}"

    keras.utils.set_random_seed(args.seed)
    task = TaskSpec(args.train_n_way, args.k_shot, args.n_query, (size, size, 1))
    architecture = {"depth": 4, "filters": args.filters, "growth": 1.0, "conv_bias": False}
    plugin_config = {**sample_configs(plugin, 1)[0], **json.loads(args.plugin_config)}
    if args.plugin == "protonet" and args.plugin_config == "{}":
        plugin_config.update(metric="sqeuclidean", embedding_dim=0)
    backbone = build_backbone(ConvBlocks(), architecture, task.image_shape, args.precision)
    learner = plugin(backbone, plugin_config, task)
    jit = resolve_jit_compile(args.jit_compile)
    normalization = (float(train.images.mean()), float(train.images.std()))
    stream = episodes.episode_dataset(
        train,
        args.train_n_way,
        args.k_shot,
        args.n_query,
        args.seed,
        episodes.TRAIN_STREAM,
        augment=args.augment,
    )
    trainer = MetaTrainer(learner, normalization, args.learning_rate, args.episodes, jit)
    trainer.build(next(iter(stream)))
    if args.episodes is None:
        trained = trainer.train_for(stream, args.train_minutes * 60.0)
    else:
        trained = trainer.train(stream, args.episodes)
    train_seconds = trained["train_seconds"]

    if args.eval_inner_steps is not None:
        learner.eval_inner_steps = args.eval_inner_steps
        trainer = MetaTrainer(learner, normalization, args.learning_rate, None, jit)
    results = {}
    for n_way in (5, 20):
        # The same episodes as before; learners that embed images independently score
        # them pooled (each distinct image embedded once).
        test_stream = episodes.EvaluationEpisodes(
            test, n_way, 1, 15, args.seed, episodes.TEST_STREAM, count=args.test_episodes
        )
        accuracies = trainer.evaluate(test_stream, n_way)
        mean, ci95 = episodes.mean_and_ci95(accuracies)
        results[f"{n_way}way_1shot"] = {"accuracy": mean, "ci95": ci95, "episodes": len(accuracies)}

    print(
        json.dumps(
            {
                "benchmark": f"omniglot_small_{args.plugin}",
                "plugin": args.plugin,
                "plugin_config": plugin_config,
                "train": train_name,
                "train_classes": train.num_classes,
                "test": "images_background_small2: " + ", ".join(TEST_ALPHABETS),
                "test_classes": test.num_classes,
                "backbone": ConvBlocks().describe(architecture),
                "meta_training": {
                    "n_way": args.train_n_way,
                    "k_shot": args.k_shot,
                    "n_query": args.n_query,
                    "episodes": trained["steps"],
                    "augment": args.augment,
                    "learning_rate": args.learning_rate,
                    "final_train_accuracy": trained["train_accuracy"],
                },
                "jit_compile": jit,
                "precision": args.precision,
                "intra_op_threads": intra_op_threads,
                "train_seconds": train_seconds,
                "results": results,
                **targets(args, results),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
