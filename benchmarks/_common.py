"""Helpers shared by bench_train.py, bench_predict.py and bench_scale.py (no psutil needed).

* memory: ``rss_mb()`` / ``peak_rss_mb()`` read VmRSS / VmHWM from /proc/self/status (falling back
  to ``resource.getrusage`` where /proc is absent); ``reset_peak_rss()`` restarts the peak
  (Linux: ``echo 5 > /proc/self/clear_refs``) so one process can measure several sections;
  ``run_cli_peak`` runs ``chestxr ...`` in a fresh interpreter and reads that process's own peak.
* ``add_common_args``: ``--smoke`` (seconds; the test suite runs it) / ``--quick`` / ``--full``, ``--shared`` (default $CHESTXR_SHARED or ../shared
  next to the repository), ``--threads`` (default 2), ``--json``.
* ``print_table``: a Markdown table (paste-able into benchmarks/README.md).
* ``machine_description``: CPU model, cores, RAM, torch version, GPU or not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python benchmarks/bench_x.py` without installing
    sys.path.insert(0, str(REPO))


# ----------------------------------------------------------------------------- memory


def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB since start or the last ``reset_peak_rss``."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak_rss() -> bool:
    """Restart the peak at the current RSS (Linux only); False when the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def children_peak_rss_mb() -> float:
    """Largest ``ru_maxrss`` of the waited-for child processes (DataLoader workers, ...), MiB.

    A forked child starts with its parent's pages counted, so this overstates the child's own use."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


_CLI_WRAPPER = r"""
import json, resource, sys, time
out = sys.argv[1]
t0 = time.perf_counter()
code = None
try:
    from chestxr.cli._main import main
    code = main(sys.argv[2:])
finally:
    hwm = None
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                hwm = float(line.split()[1]) / 1024
    if hwm is None:
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump({"code": code, "seconds": time.perf_counter() - t0, "peak_mb": hwm,
               "children_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}, open(out, "w"))
sys.exit(code or 0)
"""


def run_cli_peak(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 900) -> dict[str, Any]:
    """Run ``chestxr ARGV`` in a fresh interpreter; returns {"code", "seconds", "wall_s", "peak_mb",
    "children_peak_mb", "stderr"} where peak_mb is that process's own VmHWM (imports included)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "peak.json")
        full_env = {**os.environ, "CHESTXR_NO_PROGRESS": "1", **(env or {})}
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _CLI_WRAPPER, out, *argv],
            env=full_env,
            cwd=str(REPO),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        wall = time.perf_counter() - t0
        info: dict[str, Any] = json.load(open(out)) if os.path.exists(out) else {"code": proc.returncode}
    info.update(wall_s=wall, returncode=proc.returncode, stderr=proc.stderr[-2000:])
    return info


# ----------------------------------------------------------------------------- arguments and output


def default_shared() -> str:
    return os.environ.get("CHESTXR_SHARED", str(REPO.parent / "shared"))


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """--quick / --full, --shared PATH, --threads N, --json FILE."""
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    mode.add_argument("--quick", action="store_true", help="small settings (seconds to a minute or two)")
    mode.add_argument("--full", action="store_true", help="the settings the README numbers come from (default)")
    parser.add_argument(
        "--shared",
        default=default_shared(),
        help="folder holding data/ (default: $CHESTXR_SHARED or ../shared beside the repository)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


SMOKE_HELP = "seconds: every code path once on tiny inputs, numbers meaningless (tests/test_benchmarks.py runs it)"


def mode_name(args: argparse.Namespace) -> str:
    """ "smoke" | "quick" | "full" for the header line."""
    return "smoke" if getattr(args, "smoke", False) else "quick" if getattr(args, "quick", False) else "full"


def setup_torch(threads: int) -> None:
    """Fixed thread count, no progress bars."""
    import torch

    torch.set_num_threads(max(1, threads))
    os.environ.setdefault("CHESTXR_NO_PROGRESS", "1")


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Print (and return) a Markdown table; floats get 1-3 significant decimals."""

    def fmt(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            if v != v:
                return "n/a"
            return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = [
        f"| {' | '.join(headers)} |",
        "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(headers))) + " |",
    ]
    lines += [f"| {' | '.join(fmt(v) for v in row)} |" for row in rows]
    text = f"\n### {title}\n\n" + "\n".join(lines) + "\n"
    print(text, flush=True)
    return text


def write_json(path: str | None, obj: Any) -> None:
    if path:
        Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")


def machine_description() -> dict[str, Any]:
    """CPU model, logical cores, RAM, Python/torch versions, GPU name or None."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(ram_gb, 1) if ram_gb else None,
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    try:
        info["load_avg"] = os.getloadavg()
    except OSError:
        pass
    return info


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    """(fn(*args, **kwargs), seconds)."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
