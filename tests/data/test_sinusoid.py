from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from metasearch import registry
from metasearch.api import DatasetOptions, Episode
from metasearch.data import sinusoid
from metasearch.data.episodes import TRAIN_STREAM, VAL_STREAM
from metasearch.errors import UsageError


def _dataset(**options) -> sinusoid.Sinusoid:
    return sinusoid.Sinusoid(DatasetOptions(data_dir=None, image_size=1, seed=0, options=options))


def _episodes(split="train", k_shot=5, n_query=7, seed=0, stream=TRAIN_STREAM, count=4, **kw):
    ds = _dataset(**kw.pop("options", {}))
    return list(ds.episodes(split, k_shot, n_query, seed, stream, count=count, **kw))


def _fit_sine(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares `y = a sin x + b cos x`: amplitude, phase and the largest residual."""
    design = np.stack([np.sin(x), np.cos(x)], axis=1).astype(np.float64)
    (a, b), *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    # A sin(x - phi) = A cos(phi) sin x - A sin(phi) cos x.
    amplitude = math.hypot(a, b)
    phase = math.atan2(-b, a)
    residual = np.abs(design @ np.array([a, b]) - y).max()
    return amplitude, phase, float(residual)


def test_registered_and_declares_regression():
    assert registry.load("dataset", "sinusoid") is sinusoid.Sinusoid
    ds = _dataset()
    assert ds.kind == "regression"
    assert ds.input_shape == (1,) and ds.target_dim == 1
    assert ds.load() is None


def test_shapes_and_dtypes():
    ds = _dataset().episodes("train", 5, 7, seed=0, stream=TRAIN_STREAM, count=3)
    spec = ds.element_spec
    assert isinstance(spec, Episode)
    assert spec.support_images.shape == (5, 1) and spec.support_labels.shape == (5, 1)
    assert spec.query_images.shape == (7, 1) and spec.query_labels.shape == (7, 1)
    episodes = list(ds)
    assert len(episodes) == 3
    for episode in episodes:
        for tensor in episode:
            assert tensor.dtype == tf.float32


def test_deterministic_across_dataset_objects_and_start():
    a = _episodes(seed=3, count=4)
    b = _episodes(seed=3, count=2, start=2)
    for x, y in zip(a[2:], b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u.numpy(), v.numpy())


def test_splits_seeds_streams_and_indices_differ():
    base = _episodes(split="train", count=3)
    others = [
        _episodes(split="val", count=3),
        _episodes(split="test", count=3),
        _episodes(seed=1, count=3),
        _episodes(stream=VAL_STREAM, count=3),
    ]
    for other in others:
        for x, y in zip(base, other):
            assert not np.array_equal(x.support_images.numpy(), y.support_images.numpy())
            assert not np.array_equal(x.support_labels.numpy(), y.support_labels.numpy())
    assert not np.array_equal(base[0].support_images.numpy(), base[1].support_images.numpy())
    # Same (seed, stream, index) in different splits: different tasks, not just other points.
    params = {s: _dataset().task_parameters(s, 0, TRAIN_STREAM, 0) for s in sinusoid.SPLITS}
    assert len(set(params.values())) == 3


def test_support_does_not_depend_on_the_number_of_query_points():
    a = _episodes(n_query=3, count=2)
    b = _episodes(n_query=9, count=2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.support_images.numpy(), y.support_images.numpy())
        np.testing.assert_array_equal(x.support_labels.numpy(), y.support_labels.numpy())


def test_unknown_split_and_bad_sizes_raise():
    with pytest.raises(ValueError, match="split"):
        _dataset().episodes("validation", 5, 5, seed=0, stream=1, count=1)
    with pytest.raises(ValueError, match="k_shot"):
        _dataset().episodes("train", 0, 5, seed=0, stream=1, count=1)


def test_ranges_over_many_episodes():
    episodes = _episodes(k_shot=10, n_query=10, count=200)
    x = np.concatenate([np.concatenate([e.support_images, e.query_images]) for e in episodes])
    y = np.concatenate([np.concatenate([e.support_labels, e.query_labels]) for e in episodes])
    assert x.min() >= -5.0 and x.max() <= 5.0
    assert np.abs(y).max() <= 5.0
    # The draws cover the ranges, not a corner of them.
    assert x.min() < -4.9 and x.max() > 4.9
    params = np.array([_dataset().task_parameters("train", 0, TRAIN_STREAM, i) for i in range(200)])
    assert params[:, 0].min() >= 0.1 and params[:, 0].max() <= 5.0
    assert params[:, 1].min() >= 0.0 and params[:, 1].max() <= math.pi
    assert params[:, 0].max() - params[:, 0].min() > 4.0
    assert params[:, 1].max() - params[:, 1].min() > 2.5


def test_targets_are_the_task_sine_exactly():
    ds = _dataset()
    episodes = list(ds.episodes("val", 4, 6, seed=2, stream=VAL_STREAM, count=5, start=10))
    for offset, episode in enumerate(episodes):
        amplitude, phase = sinusoid.sinusoid_task_parameters(
            sinusoid.task_key("val", 2, VAL_STREAM, 10 + offset)
        )
        pairs = (
            (episode.support_images, episode.support_labels),
            (
                episode.query_images,
                episode.query_labels,
            ),
        )
        for x, y in pairs:
            np.testing.assert_array_equal(y.numpy(), (amplitude * tf.sin(x - phase)).numpy())


def test_support_and_query_come_from_one_sine():
    for episode in _episodes(k_shot=5, n_query=5, count=20):
        x = np.concatenate([episode.support_images, episode.query_images])[:, 0]
        y = np.concatenate([episode.support_labels, episode.query_labels])[:, 0]
        amplitude, _, residual = _fit_sine(x, y)
        assert residual < 1e-4 * max(1.0, amplitude)
    # The check has teeth: support and query of different episodes do not fit one sine.
    a, b = _episodes(k_shot=5, n_query=5, count=2)
    x = np.concatenate([a.support_images, b.query_images])[:, 0]
    y = np.concatenate([a.support_labels, b.query_labels])[:, 0]
    assert _fit_sine(x, y)[2] > 1e-2


def test_fitted_parameters_match_task_parameters():
    ds = _dataset()
    (episode,) = list(ds.episodes("test", 10, 10, seed=5, stream=3, count=1))
    x = np.concatenate([episode.support_images, episode.query_images])[:, 0]
    y = np.concatenate([episode.support_labels, episode.query_labels])[:, 0]
    amplitude, phase, _ = _fit_sine(x, y)
    expected = ds.task_parameters("test", 5, 3, 0)
    assert amplitude == pytest.approx(expected[0], abs=1e-4)
    assert phase == pytest.approx(expected[1], abs=1e-4)


def test_options_override_ranges():
    options = {"amplitude": (2.0, 2.5), "phase": "0.5,0.6", "x_range": [0.0, 1.0]}
    episodes = _episodes(k_shot=8, n_query=8, count=20, options=options)
    ds = _dataset(**options)
    for index, episode in enumerate(episodes):
        x = np.concatenate([episode.support_images, episode.query_images])
        assert x.min() >= 0.0 and x.max() <= 1.0
        amplitude, phase = ds.task_parameters("train", 0, TRAIN_STREAM, index)
        assert 2.0 <= amplitude <= 2.5 and 0.5 <= phase <= 0.6
    assert _dataset(amplitude=None).load() is None  # None: the flag was left unset


@pytest.mark.parametrize(
    "options,named",
    [
        ({"amplitude": (5.0, 1.0)}, "--sinusoid_amplitude"),
        ({"amplitude": (-1.0, 1.0)}, "--sinusoid_amplitude"),
        ({"phase": (1.0, 1.0)}, "--sinusoid_phase"),
        ({"x_range": (1.0,)}, "--sinusoid_x_range"),
        ({"x_range": ("a", "b")}, "--sinusoid_x_range"),
        ({"x_range": (0.0, float("inf"))}, "--sinusoid_x_range"),
        ({"frequency": (1.0, 2.0)}, "frequency"),
    ],
)
def test_bad_options_raise_usage_error_naming_the_option(options, named):
    with pytest.raises(UsageError, match=named) as caught:
        _dataset(**options).load()
    assert "\n" not in str(caught.value)
    with pytest.raises(UsageError, match=named):
        _dataset(**options).episodes("train", 1, 1, seed=0, stream=1, count=1)
