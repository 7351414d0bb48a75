"""Manifest validation and NIH conversion at scale, against a plain per-row Python loop.

Synthetic data (made in a temporary folder, nothing from the repository is touched):
- a manifest of N rows (default 1,000,000; --quick 100,000): about 3 images per patient, views,
  a patient-consistent split, sex, age, site and 14 findings with 1/0/-1/blank values;
- an NIH Data_Entry table of N rows for conversion;
- for the file-existence check, P empty image files (default 200,000; --quick 20,000) in 200
  folders and a manifest listing them.

Each measurement runs in a fresh child process (time.perf_counter around the call; peak memory
= the child's peak resident set size, VmHWM, which includes the imports (numpy, pandas,
chestxr) loaded before the call in both the chestxr and the loop children).

    python benchmarks/bench_manifest.py [--quick] [--rows N] [--path-rows P] [--markdown OUT.md]

The chestxr side: ``validate_manifest`` (vectorized: factorized label strings, numpy field
counts, pandas group-bys, one directory listing per folder); ``convert_nih`` + ``write_manifest``.
The baseline: csv.reader with a Python loop doing the same checks and building the same
label array; csv.reader + per-row label splitting + csv.writer for conversion;
os.path.exists per row for the path check.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FINDINGS = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
]
META = {"path", "patient_id", "study_id", "view", "split", "sex", "age", "age_band", "site"}


# ----------------------------------------------------------------------------- synthetic data
def make_manifest(path: Path, n: int, seed: int = 0, image_dir: str = "images", files_per_dir: int = 1000) -> None:
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    pid = i // 3
    paths = [f"{image_dir}/{k // files_per_dir:05d}/{k:08d}.png" for k in range(n)]
    split = np.array(["train"] * 7 + ["val"] + ["test"] * 2)[pid % 10]
    view = np.array(["PA", "AP", "LATERAL"])[rng.integers(0, 3, n)]
    sex = np.array(["F", "M"])[rng.integers(0, 2, n)]
    age = rng.integers(18, 95, n).astype(str)
    labels = np.array(["1", "0", "-1", ""])[rng.choice(4, size=(n, len(FINDINGS)), p=[0.1, 0.6, 0.05, 0.25])]
    header = "path,patient_id,study_id,view,split,sex,age,site," + ",".join(FINDINGS)
    cols = [
        paths,
        [f"p{p}" for p in pid],
        [f"p{p}_{k % 3}" for p, k in zip(pid, i)],
        view.tolist(),
        split.tolist(),
        sex.tolist(),
        age.tolist(),
        ["H1"] * n,
    ] + [labels[:, j].tolist() for j in range(len(FINDINGS))]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(header + "\n")
        fh.write("\n".join(",".join(r) for r in zip(*cols)) + "\n")


def make_nih(path: Path, n: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    pid = np.arange(n) // 4 + 1
    follow = np.arange(n) % 4
    pos = rng.random((n, len(FINDINGS))) < 0.06
    names = np.array(FINDINGS, dtype=object)
    labels = ["|".join(names[row]) or "No Finding" for row in pos]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(
            "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
            "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
        )
        fh.write(
            "\n".join(
                f"{p:08d}_{f:03d}.png,{lab},{f},{p},{40 + p % 50},{'MF'[p % 2]},{'PA' if p % 3 else 'AP'},"
                "2048,2500,0.143,0.143"
                for p, f, lab in zip(pid, follow, labels)
            )
            + "\n"
        )


def make_files(root: Path, n: int, per_dir: int) -> None:
    for k in range(n):
        d = root / "images" / f"{k // per_dir:05d}"
        if k % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        open(d / f"{k:08d}.png", "wb").close()


# ----------------------------------------------------------------------------- the baselines
def naive_validate(path: Path, check_paths: bool) -> tuple[int, np.ndarray]:
    """The same checks as validate_manifest, one row at a time; returns (n_errors, labels)."""
    folder = os.path.dirname(os.path.abspath(path))
    errors: list[str] = []
    seen: dict[str, int] = {}
    patient_split: dict[str, str] = {}
    labels: list[list[float]] = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader)]
        idx = {h: k for k, h in enumerate(header)}
        fcols = [k for h, k in idx.items() if h not in META and not h.startswith("meta_")]
        for rownum, rec in enumerate(reader, start=2):
            if not rec:
                continue
            if len(rec) != len(header):
                errors.append(f"row {rownum}: field count")
                continue
            p = rec[idx["path"]].strip().replace("\\", "/")
            if not p:
                errors.append(f"row {rownum}: blank path")
            full = os.path.normpath(os.path.join(folder, p))
            if full in seen:
                errors.append(f"row {rownum}: duplicate of row {seen[full]}")
            else:
                seen[full] = rownum
            if check_paths and not os.path.isfile(full):
                errors.append(f"row {rownum}: file not found")
            pid = rec[idx["patient_id"]].strip()
            if not pid:
                errors.append(f"row {rownum}: blank patient_id")
            split = rec[idx["split"]].strip().lower()
            if split not in ("train", "val", "test"):
                errors.append(f"row {rownum}: unknown split")
            elif patient_split.setdefault(pid, split) != split:
                errors.append(f"row {rownum}: patient in two splits")
            row = []
            for k in fcols:
                v = rec[k].strip()
                if v == "":
                    row.append(float("nan"))
                    continue
                try:
                    x = float(v)
                except ValueError:
                    errors.append(f"row {rownum}: bad label")
                    row.append(float("nan"))
                    continue
                if not (x == -1.0 or 0.0 <= x <= 1.0):
                    errors.append(f"row {rownum}: bad label")
                row.append(x)
            labels.append(row)
    return len(errors), np.asarray(labels, dtype=np.float64)


def naive_convert_nih(src: Path, out: Path) -> int:
    names = FINDINGS + ["No Finding"]
    with open(src, newline="", encoding="utf-8") as fh, open(out, "w", newline="", encoding="utf-8") as oh:
        reader = csv.DictReader(fh)
        writer = csv.writer(oh, lineterminator="\n")
        writer.writerow(["path", "patient_id", "study_id", "view", "sex", "age"] + names)
        n = 0
        for rec in reader:
            found = set(rec["Finding Labels"].split("|"))
            pid = rec["Patient ID"].zfill(8)
            writer.writerow(
                [
                    f"images/{rec['Image Index']}",
                    pid,
                    f"{pid}_{rec['Follow-up #'].zfill(3)}",
                    rec["View Position"],
                    rec["Patient Gender"],
                    rec["Patient Age"],
                ]
                + ["1" if f in found else "0" for f in names]
            )
            n += 1
    return n


# ----------------------------------------------------------------------------- child process
def _hwm_mb() -> float:
    """Peak resident memory of this process (VmHWM; unlike ru_maxrss it does not inherit the
    parent's peak across fork/exec). Falls back to ru_maxrss where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, a: str, b: str) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import pandas  # noqa: F401  (imports are not part of the measurement)

    from chestxr.data import convert_nih, validate_manifest, write_manifest

    before = _hwm_mb()
    t0 = time.perf_counter()
    info: dict = {}
    if kind == "chestxr-validate":
        r = validate_manifest(a, check_paths=b == "paths")
        info["errors"] = len(r.errors)
    elif kind == "naive-validate":
        n_err, labels = naive_validate(Path(a), check_paths=b == "paths")
        info["errors"] = n_err
    elif kind == "chestxr-convert":
        frame = convert_nih(a)
        write_manifest(frame, b)
        info["rows"] = len(frame)
    elif kind == "naive-convert":
        info["rows"] = naive_convert_nih(Path(a), Path(b))
    else:
        raise SystemExit(f"unknown kind {kind}")
    info["seconds"] = time.perf_counter() - t0
    info["peak_mb"] = _hwm_mb()
    info["base_mb"] = before
    return info


def measure(kind: str, a: str, b: str = "") -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, a, b],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if out.returncode:
        raise RuntimeError(f"{kind} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100k rows, 20k files")
    ap.add_argument("--smoke", action="store_true", help="seconds: 2,000 rows, 500 files (tests/test_benchmarks.py)")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--path-rows", type=int, default=None)
    ap.add_argument("--markdown", default=None, help="also write the table to this file")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    n = args.rows or (2_000 if args.smoke else 100_000 if args.quick else 1_000_000)
    n_files = args.path_rows or (500 if args.smoke else 20_000 if args.quick else 200_000)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_manifest_") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        make_manifest(tmp / "m.csv", n)
        make_nih(tmp / "Data_Entry.csv", n)
        make_files(tmp / "files", n_files, per_dir=1000)
        make_manifest(tmp / "files" / "m.csv", n_files)
        print(f"synthetic data: {n:,} rows, {n_files:,} files ({time.perf_counter() - t:.1f} s)", file=sys.stderr)
        size = (tmp / "m.csv").stat().st_size / 2**20
        tasks = [
            (
                f"validate {n:,} rows ({size:.0f} MB), no path check",
                "chestxr-validate",
                "naive-validate",
                (str(tmp / "m.csv"), "nopaths"),
            ),
            (
                f"validate {n_files:,} rows with file-existence check",
                "chestxr-validate",
                "naive-validate",
                (str(tmp / "files" / "m.csv"), "paths"),
            ),
            (
                f"convert NIH Data_Entry, {n:,} rows, and write",
                "chestxr-convert",
                "naive-convert",
                (str(tmp / "Data_Entry.csv"), str(tmp / "out.csv")),
            ),
        ]
        for title, ours, theirs, targs in tasks:
            a = measure(ours, *targs)
            b = measure(theirs, *targs)
            if "errors" in a and a["errors"] != b["errors"]:
                raise RuntimeError(f"{title}: chestxr found {a['errors']} errors, the loop {b['errors']}")
            rows.append((title, a, b))
            print(
                f"{title}: chestxr {a['seconds']:.2f} s / {a['peak_mb']:.0f} MB, "
                f"loop {b['seconds']:.2f} s / {b['peak_mb']:.0f} MB",
                file=sys.stderr,
            )
    table = [
        "| task | chestxr time | loop time | speed-up | chestxr peak RSS MB | loop peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for title, a, b in rows:
        table.append(
            f"| {title} | {a['seconds']:.2f} s | {b['seconds']:.2f} s | {b['seconds'] / a['seconds']:.1f}x "
            f"| {a['peak_mb']:.0f} | {b['peak_mb']:.0f} |"
        )
    base = max(b["base_mb"] for _, a, b in rows)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at the end; RSS after imports about {base:.0f} MB"
    )
    text = "\n".join(table) + f"\n\n({machine})\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
