"""Shared fixtures. Real data lives in ../shared/data (or $CHESTXR_SHARED/data); tests that need it skip
cleanly when it is absent. Everything else is generated in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """``$CHESTXR_SHARED/data``, default ``<repo>/../shared/data``."""
    root = Path(os.environ.get("CHESTXR_SHARED", REPO.parent / "shared"))
    return root / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder; skips the test when it is not there."""
    d = shared_data_dir()
    if not d.is_dir():
        pytest.skip(f"real data not found at {d} (set CHESTXR_SHARED)")
    return d


def pytest_configure(config):
    """Under pytest-xdist every worker gets one torch thread: two workers x two OpenMP threads on two
    cores oversubscribe the CPU and run 5-10x slower than one thread each."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover
            pass


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    """No progress bars in tests."""
    monkeypatch.setenv("CHESTXR_NO_PROGRESS", "1")
    yield
