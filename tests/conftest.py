"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_support import OMNIGLOT_DIR


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    if not (OMNIGLOT_DIR / "images_background_small1.zip").exists():
        pytest.skip(f"shared Omniglot archives not found in {OMNIGLOT_DIR}")
    return OMNIGLOT_DIR
