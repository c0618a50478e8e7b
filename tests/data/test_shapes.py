import numpy as np
import pytest

from metasearch import registry
from metasearch.api import DatasetOptions
from metasearch.data import shapes
from metasearch.errors import UsageError

SEED = shapes.ColourShapes.data_seed


def test_defaults_give_hundreds_of_distinct_classes_of_twenty():
    assert shapes.DEFAULT_CLASSES >= 500
    assert shapes.IMAGES_PER_CLASS == 20
    assert shapes.MAX_CLASSES >= 10 * shapes.DEFAULT_CLASSES
    combos = shapes.combinations(shapes.MAX_CLASSES, SEED)
    assert len({tuple(c) for c in combos}) == shapes.MAX_CLASSES
    names = [shapes.class_name(c) for c in combos]
    assert len(set(names)) == shapes.MAX_CLASSES
    assert registry.load("dataset", "colour_shapes") is shapes.ColourShapes


def test_images_are_colour_in_range_and_deterministic():
    a, names = shapes.generate(6, 32, SEED, images_per_class=5)
    b, _ = shapes.generate(6, 32, SEED, images_per_class=5)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 5, 32, 32, 3) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0 and 0.2 < a.mean() < 0.8
    assert names == [shapes.class_name(c) for c in shapes.combinations(6, SEED)]
    # Colour: the channels differ; every image is redrawn.
    assert np.abs(a[..., 0] - a[..., 1]).mean() > 0.05
    assert all(np.abs(a[c, 0] - a[c, 1]).mean() > 0.01 for c in range(6))


def test_a_class_does_not_depend_on_the_others_or_the_chunking(monkeypatch):
    few, _ = shapes.generate(3, 24, SEED, images_per_class=4)
    many, _ = shapes.generate(7, 24, SEED, images_per_class=4)
    np.testing.assert_array_equal(few, many[:3])
    monkeypatch.setattr(shapes, "_CHUNK_BYTES", 1)  # one class a chunk
    np.testing.assert_array_equal(shapes.generate(7, 24, SEED, images_per_class=4)[0], many)


def test_images_of_a_class_share_its_colours():
    images, _ = shapes.generate(12, 32, SEED, images_per_class=6)
    # The shape sits in the middle of every image; its colours are the class's.
    centre = images[:, :, 12:20, 12:20].reshape(12, 6, -1, 3)
    hist = np.stack(
        [
            np.histogramdd(centre[c, i], bins=4, range=[(0, 1)] * 3)[0].ravel()
            for c in range(12)
            for i in range(6)
        ]
    ).reshape(12, 6, -1)
    hist /= hist.sum(-1, keepdims=True)
    within = np.mean([np.abs(hist[c, 0] - hist[c, 1:]).sum(-1).mean() for c in range(12)])
    between = np.mean([np.abs(hist[c, 0] - hist[(c + 1) % 12]).sum(-1).mean() for c in range(12)])
    assert within < between


def test_load_splits_classes_80_10_10():
    dataset = shapes.ColourShapes(
        DatasetOptions(None, 16, 0, {"classes": 50, "images_per_class": 3})
    )
    splits = dataset.load()
    assert [s.num_classes for _, s in splits.items()] == [40, 5, 5]
    assert splits.train.images.shape == (40, 3, 16, 16, 3)
    names = [set(s.names) for _, s in splits.items()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert dataset.channels == 3


@pytest.mark.parametrize(
    "options, flag",
    [
        ({"classes": 10}, "--colour_shapes_classes"),
        ({"classes": shapes.MAX_CLASSES + 1}, "--colour_shapes_classes"),
        ({"images_per_class": 1}, "--colour_shapes_images_per_class"),
    ],
)
def test_bad_options_name_their_flag(options, flag):
    with pytest.raises(UsageError, match=flag):
        shapes.ColourShapes(DatasetOptions(None, 16, 0, options))
