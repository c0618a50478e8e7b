import numpy as np
import pytest

from metasearch.api import DatasetOptions
from metasearch.data import glyphs
from metasearch.errors import UsageError


def test_default_has_over_a_thousand_classes_of_twenty():
    assert glyphs.DEFAULT_CLASSES >= 1000
    assert glyphs.IMAGES_PER_CLASS == 20


def test_glyphs_look_like_omniglot_and_are_deterministic():
    a = glyphs.generate(6, 28, seed=5)
    b = glyphs.generate(6, 28, seed=5)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 20, 28, 28, 1) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    # White background (1), dark ink (0), mostly background like Omniglot.
    assert np.median(a) == 1.0
    assert (a.reshape(120, -1).min(axis=1) < 0.2).all(), "every drawing has ink"
    assert 0.85 < a.mean() < 0.99


def test_instances_of_a_class_are_closer_than_instances_of_different_classes():
    images = glyphs.generate(10, 28, seed=1).reshape(10, 20, -1)
    within = np.mean([np.abs(images[c, 0] - images[c, 1]).mean() for c in range(10)])
    between = np.mean([np.abs(images[c, 0] - images[(c + 1) % 10, 0]).mean() for c in range(10)])
    assert within < between


def test_load_splits_classes_disjointly():
    splits = glyphs.Glyphs(DatasetOptions(None, 20, 0, {"classes": 50})).load()
    names = [set(s.names) for _, s in splits.items()]
    assert sum(len(n) for n in names) == 50
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    assert splits.train.images.shape[2:] == (20, 20, 1)


def test_too_few_classes_is_a_usage_error():
    with pytest.raises(UsageError, match="--glyphs_classes"):
        glyphs.Glyphs(DatasetOptions(None, 20, 0, {"classes": 3})).load()
