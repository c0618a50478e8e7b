"""Shared fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from cli_support import OMNIGLOT_DIR

# Generated data sets are cached between the suite's processes (and runs), but not in
# the home folder of whoever runs the tests.
os.environ.setdefault(
    "METASEARCH_CACHE_DIR", os.path.join(tempfile.gettempdir(), "metasearch-test-cache")
)


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    if not (OMNIGLOT_DIR / "images_background_small1.zip").exists():
        pytest.skip(f"shared Omniglot archives not found in {OMNIGLOT_DIR}")
    return OMNIGLOT_DIR


# The conformance checks that compile with XLA, reload an export in a fresh process or
# train on 84x84 colour episodes take seconds per registered component: they run in
# the full suite (CI), and `-m "not slow"` leaves them out to keep the quick loop short.
HEAVY_CONFORMANCE_CHECKS = (
    "test_compiles_with_xla",
    "test_export_round_trip",
    "test_colour_episodes",
    "test_regression",
    "test_sample_builds_trains_traces_compiles_exports",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if (
            item.path.name == "test_conformance.py"
            and item.originalname in HEAVY_CONFORMANCE_CHECKS
        ):
            item.add_marker(pytest.mark.slow)
