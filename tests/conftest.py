"""Shared pytest fixtures for petir's tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path | None:
    """The shared real datasets (``$PETIR_DATA``, else ``<repo>/../shared/data``), or None where absent."""
    root = Path(os.environ.get("PETIR_DATA", REPO.parent / "shared" / "data"))
    return root if root.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    """Path to the shared real datasets; skips the test where they are not present."""
    root = data_root()
    if root is None:
        pytest.skip("real datasets not found: set PETIR_DATA or place them in <repo>/../shared/data")
    return root
