"""The exported SavedModel loads in a process that imports only TensorFlow."""

import json
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from metasearch import testing
from metasearch.export import export_learner
from metasearch.plugins.protonet import PrototypicalNetworks
from metasearch.search_spaces.conv_blocks import ConvBlocks
from metasearch.training import MetaTrainer

PLAIN_TF_SCRIPT = textwrap.dedent(
    """
    import json, sys, zipfile
    import tensorflow as tf

    model_dir, zip_path, members_json, labels_json, out_path = sys.argv[1:]
    members = json.loads(members_json)
    labels = json.loads(labels_json)
    with zipfile.ZipFile(zip_path) as zf:
        images = [tf.io.decode_png(zf.read(m), channels=1) for m in members]
    images = tf.cast(tf.stack(images), tf.float32) / 255.0
    n = len(labels)
    loaded = tf.saved_model.load(model_dir)
    few_shot = loaded.signatures["few_shot"]
    logits = few_shot(
        support_images=images[:n],
        support_labels=tf.constant(labels, tf.int32),
        query_images=images[n:],
    )["logits"]
    embeddings = loaded.signatures["embed"](images=images)["embeddings"]
    metadata = json.loads(loaded.metadata().numpy().decode())
    assert set(sys.modules) & {"metasearch", "keras_tuner"} == set(), "imported more than TF"
    json.dump({"logits": logits.numpy().tolist(), "embeddings": embeddings.numpy().tolist(),
               "plugin": metadata["plugin"], "shape": list(images.shape)}, open(out_path, "w"))
    """
)


def _omniglot_task(omniglot_dir, n_way=5, n_query=2):
    zip_path = omniglot_dir / "images_background_small2.zip"
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png") and "/Sanskrit/" in n)
    by_character = {}
    for name in names:
        by_character.setdefault(name.rsplit("/", 2)[1], []).append(name)
    characters = sorted(by_character)[:n_way]
    support = [by_character[c][0] for c in characters]
    query = [m for c in characters for m in by_character[c][1 : 1 + n_query]]
    labels = list(range(n_way))
    return zip_path, support + query, labels


@pytest.mark.slow
def test_plain_tensorflow_process_reproduces_logits_on_raw_omniglot_pngs(omniglot_dir, tmp_path):
    task = testing.tiny_task(28)
    learner = testing.build_learner(
        PrototypicalNetworks,
        ConvBlocks,
        task,
        plugin_config={"metric": "cosine", "embedding_dim": 64},
        space_config={"depth": 4, "filters": 32, "growth": 1.0},
    )
    normalization = (0.92, 0.26)
    trainer = MetaTrainer(learner, normalization, 1e-3, 3, jit_compile=False)
    episode = testing.tiny_episode(task)
    trainer.build(episode)
    for _ in range(3):
        trainer.train_step(episode)  # moves weights and batch-norm statistics off their defaults
    path = export_learner(
        learner, tmp_path / "learner", 28, 1, normalization, {"plugin": "protonet"}
    )

    zip_path, members, labels = _omniglot_task(omniglot_dir)
    with zipfile.ZipFile(zip_path) as zf:
        raw = (
            tf.cast(
                tf.stack([tf.io.decode_png(zf.read(m), channels=1) for m in members]), tf.float32
            )
            / 255.0
        )
    assert raw.shape[1:] == (105, 105, 1)
    n = len(labels)
    from metasearch.data.preprocess import normalize, resize

    expected = trainer.adapt_step(
        resize(raw[:n], 28), tf.constant(labels), resize(raw[n:], 28), len(labels)
    ).numpy()
    expected_embeddings = learner.embed(normalize(resize(raw, 28), *normalization)).numpy()

    out = tmp_path / "out.json"
    script = tmp_path / "plain_tf.py"
    script.write_text(PLAIN_TF_SCRIPT)
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(path),
            str(zip_path),
            json.dumps(members),
            json.dumps(labels),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got["plugin"] == "protonet"
    assert got["shape"] == [len(members), 105, 105, 1]
    logits = np.array(got["logits"])
    assert logits.shape == (len(members) - n, n)
    assert np.max(np.abs(logits - expected)) <= 1e-4
    assert np.max(np.abs(np.array(got["embeddings"]) - expected_embeddings)) <= 1e-4


def test_export_replaces_atomically_and_leaves_no_temporaries(tmp_path):
    task = testing.tiny_task(16)
    learner = testing.build_learner(
        PrototypicalNetworks,
        ConvBlocks,
        task,
        space_config={"depth": 2, "filters": 8, "growth": 1.0},
    )
    MetaTrainer(learner, (0.5, 0.3), 1e-3, 1, jit_compile=False).build(testing.tiny_episode(task))
    target = tmp_path / "export" / "learner"
    export_learner(learner, target, 16, 1, (0.5, 0.3), {"n": 1})
    export_learner(learner, target, 16, 1, (0.5, 0.3), {"n": 2})
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["learner"]
    assert json.loads((target / "assets" / "metasearch.json").read_text()) == {"n": 2}
    loaded = tf.saved_model.load(str(target))
    # Any image size and number of classes works.
    logits = loaded.few_shot(
        tf.random.uniform([4, 40, 33, 1]),
        tf.constant([0, 1, 2, 3]),
        tf.random.uniform([6, 50, 50, 1]),
    )["logits"]
    assert logits.shape == (6, 4)


# --------------------------------------------------------------------------- input checks


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny classification export (1 channel) and a regression export (1-d inputs)."""
    from metasearch.api import REGRESSION
    from metasearch.plugins.maml import MAML
    from metasearch.search_spaces.mlp import MLP

    folder = tmp_path_factory.mktemp("exports")
    task = testing.tiny_task(16)
    learner = testing.build_learner(
        PrototypicalNetworks,
        ConvBlocks,
        task,
        space_config={"depth": 2, "filters": 8, "growth": 1.0},
    )
    MetaTrainer(learner, (0.5, 0.3), 1e-3, 1, jit_compile=False).build(testing.tiny_episode(task))
    images = export_learner(learner, folder / "images", 16, 1, (0.5, 0.3), {})
    task = testing.tiny_task(kind=REGRESSION)
    learner = testing.build_learner(MAML, MLP, task, {"inner_steps": 1})
    MetaTrainer(learner, (0.0, 1.0), 1e-3, 1, jit_compile=False).build(testing.tiny_episode(task))
    points = export_learner(learner, folder / "points", 1, 1, (0.0, 1.0), {})
    return (
        tf.saved_model.load(str(images)).signatures["few_shot"],
        tf.saved_model.load(str(points)).signatures["adapt_and_predict"],
    )


def _images(n, size=20, channels=1):
    return tf.random.uniform([n, size, size, channels], seed=1)


GOOD_IMAGES = {
    "support_images": _images(5),
    "support_labels": tf.constant([0, 1, 2, 3, 4]),
    "query_images": _images(3),
}
BAD_IMAGES = [
    (
        "label 7 of 5 classes",
        {"support_labels": tf.constant([0, 1, 2, 3, 7])},
        "support_labels must be in 0..C-1 for the C classes",
    ),
    (
        "label -1",
        {"support_labels": tf.constant([0, 1, 2, 3, -1])},
        "support_labels must be in 0..C-1; got a negative",
    ),
    (
        "empty support set",
        {"support_images": _images(0), "support_labels": tf.zeros([0], tf.int32)},
        "support_labels is empty",
    ),
    (
        "3 channels",
        {"support_images": _images(5, channels=3)},
        "support_images must be images [n, height, width, 1]",
    ),
    (
        "query rank 3",
        {"query_images": _images(3)[..., 0]},
        "query_images must be images [n, height, width, 1]",
    ),
    (
        "labels rank 2",
        {"support_labels": tf.constant([[0], [1], [2], [3], [4]])},
        "support_labels must be a vector [n]",
    ),
    (
        "lengths differ",
        {"support_images": _images(4)},
        "support_images and support_labels must have the same length",
    ),
    (
        "NaN query",
        {"query_images": _images(3) * float("nan")},
        "query_images holds non-finite values",
    ),
    (
        "infinite support",
        {"support_images": _images(5) + float("inf")},
        "support_images holds non-finite values",
    ),
]


@pytest.mark.parametrize(
    "inputs, message", [case[1:] for case in BAD_IMAGES], ids=[c[0] for c in BAD_IMAGES]
)
def test_few_shot_refuses_bad_inputs_naming_them(exported, inputs, message):
    few_shot, _ = exported
    assert few_shot(**GOOD_IMAGES)["logits"].shape == (3, 5)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        few_shot(**{**GOOD_IMAGES, **inputs})
    assert message in str(error.value)
    # Classes numbered 0..C-1 in any order and with any number of shots are fine.
    logits = few_shot(**{**GOOD_IMAGES, "support_labels": tf.constant([1, 0, 1, 0, 1])})["logits"]
    assert logits.shape == (3, 2)


def _points(n, dims=1):
    return tf.random.uniform([n, dims], -5.0, 5.0, seed=2)


GOOD_POINTS = {"support_x": _points(5), "support_y": _points(5), "query_x": _points(4)}
BAD_POINTS = [
    ("empty support set", {"support_x": _points(0), "support_y": _points(0)}, "support_x is empty"),
    (
        "lengths differ",
        {"support_y": _points(3)},
        "support_x and support_y must have the same length",
    ),
    ("NaN target", {"support_y": _points(5) * float("nan")}, "support_y holds non-finite values"),
    ("infinite query", {"query_x": _points(4) + float("inf")}, "query_x holds non-finite values"),
    ("query rank 1", {"query_x": _points(4)[:, 0]}, "query_x must be inputs [n, 1]"),
    ("2-d inputs", {"support_x": _points(5, dims=2)}, "support_x must be inputs [n, 1]"),
    ("targets rank 3", {"support_y": _points(5)[None]}, "support_y must be targets [n, 1]"),
]


@pytest.mark.parametrize(
    "inputs, message", [case[1:] for case in BAD_POINTS], ids=[c[0] for c in BAD_POINTS]
)
def test_adapt_and_predict_refuses_bad_inputs_naming_them(exported, inputs, message):
    _, adapt_and_predict = exported
    assert adapt_and_predict(**GOOD_POINTS)["predictions"].shape == (4, 1)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        adapt_and_predict(**{**GOOD_POINTS, **inputs})
    assert message in str(error.value)
