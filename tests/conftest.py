"""Shared fixtures. Real data lives in ../shared/data (or $CHESTXR_SHARED/data); tests that need it skip
cleanly when it is absent. Everything else is generated in tmp_path.

The tiny training recipe every test uses is here once: ``TINY_OVERRIDES`` (config overrides: 32 px
``tiny`` backbone, one epoch, no DataLoader workers), ``tiny_args(...)`` (the same as CLI ``--set``
arguments) and ``tiny_config(manifest, ...)`` (a Config). ``tiny_run`` is one session-wide run trained
with it on ``synth_manifest``; tests that write into a run folder use ``tiny_run_copy``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: the tiny recipe as dotted config overrides (``chestxr train --set ...`` / ``load_config(None, ...)``).
TINY_OVERRIDES = (
    "model.backbone=tiny",
    "preprocessing.size=32",
    "preprocessing.cache_size=48",
    "data.num_workers=0",
    "train.batch_size=16",
    "train.epochs=1",
)
FINDINGS = ["Opacity", "Cardiomegaly", "Effusion", "Nodule"]


def tiny_overrides(*extra: str) -> list[str]:
    """TINY_OVERRIDES followed by ``extra`` (later overrides win)."""
    return [*TINY_OVERRIDES, *extra]


def tiny_args(*extra: str) -> list[str]:
    """The tiny recipe (plus ``extra`` overrides) as CLI arguments: ``["--set", "model.backbone=tiny", ...]``."""
    return [arg for o in tiny_overrides(*extra) for arg in ("--set", o)]


def tiny_config(manifest: str | Path, *extra: str):
    """A validated Config for the tiny recipe on ``manifest`` (``extra``: more dotted overrides)."""
    from chestxr.core import load_config

    return load_config(None, tiny_overrides(f"data.manifest={manifest}", *extra))


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


@pytest.fixture
def frozen_training(monkeypatch):
    """Training whose optimizer never moves a weight (SGD at lr 0; config refuses train.lr=0), so a test
    can compare the weights a run starts from (e.g. model.init_from) with the ones it saves."""
    import torch

    import chestxr.modeling._training as fitting  # the epoch loop builds the optimizer

    monkeypatch.setattr(fitting, "build_optimizer", lambda model, config: torch.optim.SGD(model.parameters(), lr=0.0))


@pytest.fixture(scope="session")
def synth_manifest(tmp_path_factory) -> Path:
    """60 synthetic 48 px X-rays (PNG and DICOM, four findings) with a patient-level ``split`` column:
    45 train, 8 val, 7 test images, every finding positive in val and in test. Read-only (write
    variants under tmp_path)."""
    from chestxr.data import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("session")
    return generate_synthetic_dataset(root / "data", n_images=60, seed=1, size=48, with_split=True)


@pytest.fixture(scope="session")
def tiny_run(synth_manifest) -> Path:
    """A run folder trained once per session with the tiny recipe, 2 epochs (lr 0.003), on the train rows
    of ``synth_manifest`` (val rows pick the best epoch; calibrate on ``--split val``, evaluate on
    ``--split test``). Read-only: tests that calibrate or edit it use ``tiny_run_copy``.
    """
    from chestxr.runs import train

    with pytest.MonkeyPatch.context() as mp:  # session-scoped: the autouse env fixture is not active yet
        mp.setenv("CHESTXR_NO_PROGRESS", "1")
        config = tiny_config(synth_manifest, "train.epochs=2", "train.lr=0.003", "name=session")
        return train(config, out_dir=synth_manifest.parent.parent / "run", log=lambda s: None).run_dir


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of ``tiny_run`` (beside it, in the session folder)."""
    dst = tiny_run.parent / f"run-{tmp_path.name}"
    shutil.copytree(tiny_run, dst)
    return dst


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    """No progress bars in tests."""
    monkeypatch.setenv("CHESTXR_NO_PROGRESS", "1")
    yield


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """A real Orthanc (DICOMweb on, auth on) on free localhost ports, storage in a temp folder; stopped at the
    end of the session. Skips when Orthanc or its DICOMweb plugin is not installed."""
    pytest.importorskip("requests")
    from orthanc import orthanc_missing, start_orthanc

    why = orthanc_missing()
    if why:
        pytest.skip(why)
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        yield server
    finally:
        server.stop()


#: headless Chromium flags for the report checks (no network, no first-run work)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_executable() -> str | None:
    """$CHESTXR_CHROMIUM, else the first Chromium on PATH (scripts/install_browser.sh installs Debian's)."""
    for name in (os.environ.get("CHESTXR_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (playwright) for a test module; skips where none is installed."""
    exe = chromium_executable()
    if exe is None:
        pytest.skip("no chromium found; run scripts/install_browser.sh")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()
