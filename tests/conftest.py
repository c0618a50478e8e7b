"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli_support import OMNIGLOT_DIR

# Two pytest-xdist workers share two cores: one TensorFlow thread pool thread each
# (this process and the CLI processes it starts) instead of every process
# spreading over both cores and fighting the other worker for them.
for _variable in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    if not (OMNIGLOT_DIR / "images_background_small1.zip").exists():
        pytest.skip(f"shared Omniglot archives not found in {OMNIGLOT_DIR}")
    return OMNIGLOT_DIR
