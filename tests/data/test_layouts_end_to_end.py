"""Each file layout users have, through a short CLI search, and its export in plain TensorFlow.

Fixtures hold real JPEG and PNG files of mixed sizes, grey among colour, with
uneven class sizes. One search per layout; then one process that imports only
TensorFlow feeds every export raw decoded JPEGs of mixed sizes through
`few_shot`.
"""

import json
import subprocess
import sys
import textwrap

import pytest

from cli_support import read_json, run_cli_in_process
from image_fixtures import (
    class_colour,
    write_cub,
    write_image,
    write_meta_album,
    write_mini_imagenet,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("layouts_end_to_end")]

SEARCH = [
    "--max_trials=1",
    "--episodes_per_trial=4",
    "--eval_episodes=2",
    "--n_way=2",
    "--k_shot=1",
    "--n_query=2",
    "--image_size=16",
    "--test_episodes=10",
    "--noprogress",
    "--fix_hparams=conv_blocks/depth=3,conv_blocks/filters=32,conv_blocks/growth=1.0",
]


def _image_folder(root, split_folders: bool):
    """ROOT/CLASS/* (8 classes) or ROOT/{train,val,test}/CLASS/*, uneven, JPEG and PNG."""
    counts = (5, 7, 4, 6, 5, 8, 4, 6)
    for index, count in enumerate(counts):
        if split_folders:
            split = "train" if index < 4 else ("val" if index < 6 else "test")
            folder = root / split / f"class_{index}"
        else:
            folder = root / f"class_{index}"
        for j in range(count):
            suffix = ".png" if j % 3 == 0 else ".jpg"
            size = ((40 + 9 * j, 30 + 5 * j), (50, 50))[j % 2]
            bar = (index * 0.37) % 1.0
            write_image(folder / f"{j}{suffix}", size, class_colour(index), j == 1, j, bar)
    return root


LAYOUTS = {
    "image_folder": lambda root: ("image_folder", _image_folder(root, False), []),
    "image_folder_splits": lambda root: ("image_folder", _image_folder(root, True), []),
    "mini_imagenet": lambda root: ("mini_imagenet", write_mini_imagenet(root).root, []),
    "cub": lambda root: ("cub", write_cub(root).root, []),
    "meta_album": lambda root: ("meta_album", write_meta_album(root).root, []),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One finished search per layout: name -> (run folder, fixture root)."""
    finished = {}
    for name, make in LAYOUTS.items():
        base = tmp_path_factory.mktemp(name)
        dataset, data_dir, extra = make(base / "data")
        out = base / "run"
        # In process: five fresh processes would each pay TensorFlow's start again.
        result = run_cli_in_process(
            f"--dataset={dataset}",
            f"--data_dir={data_dir}",
            *SEARCH,
            *extra,
            f"--output_dir={out}",
        )
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
        finished[name] = (out, data_dir)
    return finished


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_a_short_search_on_each_layout_completes_and_records_its_data(runs, name):
    out, _ = runs[name]
    trial = read_json(out / "results.json")["trials"][0]
    assert trial["status"] == "COMPLETED" and 0.0 <= trial["val_accuracy"] <= 1.0
    data = read_json(out / "dataset.json")
    assert data["channels"] == 3
    sets = data["class_sets"]
    assert set(sets) == {"train", "val", "test"}
    # Fixtures mix grey images in; the pipeline converted them and says so.
    assert sum(s["converted"]["grey_images"] for s in sets.values()) > 0
    assert all(s["mode"] == "cached" for s in sets.values())
    counts = [s["images_per_class"] for s in sets.values()]
    assert any(c["min"] < c["max"] for c in counts), "the fixture's classes are uneven"
    assert (out / "export" / "best_learner" / "saved_model.pb").exists()


TF_ONLY = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    report = {}
    for name, export, paths in json.loads(sys.argv[1]):
        model = tf.saved_model.load(export)
        by_size = {}
        for path in paths:
            raw = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
            image = tf.image.convert_image_dtype(raw, tf.float32)  # [0, 1], as decoded
            by_size.setdefault(tuple(image.shape), []).append(image)
        sizes = sorted(by_size, key=lambda s: -len(by_size[s]))
        support, query = by_size[sizes[0]][:2], by_size[sizes[1]][:3]
        logits = model.signatures["few_shot"](
            support_images=tf.stack(support),
            support_labels=tf.constant([0, 1], tf.int32),
            query_images=tf.stack(query),
        )["logits"].numpy()
        report[name] = {
            "shape": list(logits.shape),
            "queries": len(query),
            "finite": bool(np.all(np.isfinite(logits))),
            "support_size": list(sizes[0]),
            "query_size": list(sizes[1]),
        }
    report["modules"] = sorted(m for m in sys.modules if m.startswith("metasearch"))
    print(json.dumps(report))
    """
)


def test_every_export_answers_few_shot_on_raw_jpegs_of_mixed_sizes_in_plain_tensorflow(runs):
    jobs = []
    for name, (out, data_dir) in runs.items():
        jpegs = [str(p) for p in sorted(data_dir.rglob("*.jpg"))[:40]]
        jobs.append((name, str(out / "export" / "best_learner"), jpegs))
    result = subprocess.run(
        [sys.executable, "-c", TF_ONLY, json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # The process imported TensorFlow only.
    assert report.pop("modules") == []
    for name, _, _ in jobs:
        answer = report[name]
        assert answer["shape"] == [answer["queries"], 2] and answer["finite"], answer
        # Support and query images came in at different sizes, neither the model's 16x16.
        assert answer["support_size"] != answer["query_size"]
        assert 16 not in answer["support_size"][:2]
