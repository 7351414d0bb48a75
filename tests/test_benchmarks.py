"""Benchmarks cannot rot: every benchmarks/bench_*.py runs with --smoke (seconds, every code path once,
numbers meaningless) and must exit 0 and print its tables. ``make bench`` failed for months on a
TypeError nobody saw because nothing ran the benchmarks."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = sorted(p.stem for p in (REPO / "benchmarks").glob("bench_*.py"))
# a benchmark with its own smoke test (tests/test_bench_pacs.py starts Orthanc for it) is run there
SMOKED_HERE = [b for b in BENCH if not (REPO / "tests" / f"test_{b}.py").exists()]
pytestmark = pytest.mark.slow  # each starts a fresh interpreter with torch: ~10 s CPU


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CHESTXR_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_every_benchmark_is_run_by_run_all():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import run_all
    finally:
        sys.path.pop(0)
    assert sorted(run_all.BENCHMARKS) == BENCH
    assert run_all.command("bench_train", full=False, shared=None, smoke=True)[-1] == "--smoke"


@pytest.mark.parametrize("name", SMOKED_HERE)
def test_benchmark_smoke_runs(name, tmp_path):
    args = [f"benchmarks/{name}.py", "--smoke"]
    if name in ("bench_train", "bench_predict", "bench_scale", "bench_gpu"):
        args += ["--threads", "1"]
    if name == "bench_gpu":
        args += ["--out", str(tmp_path)]
    out = _run(args)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    table_rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table_rows) >= 2, out.stdout[-3000:]  # a header and at least one measured row
    assert "Traceback" not in out.stderr
    if name == "bench_gpu":  # a failing cell is recorded, not raised: every cell of the dry run must be ok
        import json

        result = json.loads((tmp_path / "bench_gpu.json").read_text())
        kinds = {c["kind"] for c in result["cells"]}
        assert kinds == {"ceiling", "baseline", "chestxr", "infer_ceiling", "infer_chestxr", "gradcam"}, kinds
        bad = [(c["kind"], c["variant"], c.get("error")) for c in result["cells"] if c["status"] != "ok"]
        assert not bad, bad
        assert all(c["img_s"] > 0 and c["peak_mem_mib"] > 0 for c in result["cells"])
        assert result["environment"]["torch"] and "cudnn" in result["environment"]
        assert "| densenet121 |" in (tmp_path / "bench_gpu.md").read_text()
    if name == "bench_data" and importlib.util.find_spec("torchxrayvision") is not None:
        xrv = [line for line in table_rows if "| torchxrayvision |" in line]
        assert xrv and not any("skipped" in line for line in xrv), xrv  # the loader table measures its row


def test_gpu_session_script_parses_and_names_files_that_exist():
    """benchmarks/gpu_session.sh runs only on a GPU machine: at least check here that bash parses it and that
    the test and benchmark it runs still exist (a rename would otherwise surface only in a GPU session)."""
    import re

    script = REPO / "benchmarks" / "gpu_session.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    named = set(re.findall(r"\b((?:tests|benchmarks)/[\w/]+\.py)\b", script.read_text()))
    assert any(n.endswith("test_cuda.py") for n in named) and "benchmarks/bench_gpu.py" in named, named
    assert all((REPO / n).is_file() for n in named), [n for n in named if not (REPO / n).is_file()]


def test_cuda_smoke_test_dry_run_on_the_cpu():
    """tests/test_cuda.py skips without CUDA, so CI would never notice it break (an API it calls changed); its
    CPU dry run (CHESTXR_TEST_ACCEL=cpu: same calls, tiny network, bf16 autocast on the CPU) must pass."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CHESTXR_TEST_ACCEL": "cpu"}
    env.pop("PYTEST_XDIST_WORKER", None)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "test_cuda.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout and "failed" not in out.stdout, out.stdout[-1000:]
