#!/usr/bin/env bash
# One GPU session for issue 26 (the GPU path, measured), run from the repository root on a machine with a CUDA
# GPU and a Python that already has torch (CUDA build), torchvision, numpy, pandas, scikit-learn, scipy,
# Pillow, safetensors, PyYAML, jinja2, matplotlib, tqdm and pytest:
#
#     OUT=/some/folder bash benchmarks/gpu_session.sh        # everything it writes goes to $OUT
#
# 1. checks and prints the machine (nvidia-smi, /dev/shm, CPU cores) and the packages: it installs NOTHING
#    from the network. Missing Python packages can be carried as wheels in .whl/ (see benchmarks/README.md,
#    "GPU session"); they are installed with --no-index into /tmp/site. chestxr itself runs from this tree
#    (PYTHONPATH), no pip install. pydicom / pylibjpeg are not needed (the data are synthetic PNGs).
# 2. tests/test_cuda.py: 2 epochs with AMP on the GPU (finite loss and AUROC), fp16 + GradScaler, and
#    calibrate / evaluate / predict on GPU vs CPU (same calls except within 0.02 of a threshold).
# 3. benchmarks/bench_gpu.py --full with the time left (cells in priority order; the deadline cuts the tail).
#
# GPU_SESSION_DRY=1 rehearses the whole script on a machine without a GPU (tests/test_cuda.py with
# CHESTXR_TEST_ACCEL=cpu, bench_gpu.py --smoke): run it before spending device time.
#
# Total deadline: GPU_SESSION_SECONDS (default 480 s = 8 min: the test gets at most 150 s, the benchmark the
# rest minus 20 s). Outputs in $OUT: session.log (everything printed), test_cuda.txt (pytest's report),
# bench_gpu.json and bench_gpu.md (every cell, the environment). The exit code is 0 when the test passed
# and the benchmark ran (failed cells are results, listed in its tables), else 1.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-session-out}
mkdir -p "$OUT"
TOTAL=${GPU_SESSION_SECONDS:-480}
PY=${PYTHON:-python3}
START=$(date +%s)
left() { echo $((TOTAL - ($(date +%s) - START))); }
exec > >(tee -a "$OUT/session.log") 2>&1

echo "== gpu_session.sh: $(date -u +%FT%TZ), deadline ${TOTAL} s, repo $(git rev-parse --short HEAD 2>/dev/null || echo '?'), python $PY"
echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv 2>&1 || echo "nvidia-smi: not available"
echo "cores: $(nproc)  memory: $(free -g 2>/dev/null | awk '/Mem:/{print $2 " GiB"}')  /dev/shm: $(df -h /dev/shm 2>/dev/null | awk 'NR==2{print $2 " (" $4 " free)"}')  load: $(cat /proc/loadavg 2>/dev/null)"

echo "== packages (nothing is installed from the network)"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    echo "installing the carried wheels in .whl/ into /tmp/site (--no-index)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export CHESTXR_NO_PROGRESS=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
"$PY" - <<'EOF'
import importlib
import sys

need = ["torch", "torchvision", "numpy", "pandas", "sklearn", "scipy", "PIL", "safetensors", "yaml", "jinja2",
        "matplotlib", "tqdm", "pytest"]
optional = ["pydicom", "pylibjpeg", "onnxruntime"]
missing = []
print(f"python {sys.version.split()[0]} at {sys.executable}")
for name in need + optional:
    try:
        mod = importlib.import_module(name)
        print(f"  {name} {getattr(mod, '__version__', '')}")
    except Exception as exc:  # noqa: BLE001
        print(f"  {name}: MISSING ({type(exc).__name__}: {exc})")
        if name in need:
            missing.append(name)
import torch

cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"cuda available: {cuda}" + (f", {torch.cuda.get_device_name(0)}, bf16 {torch.cuda.is_bf16_supported()}" if cuda else ""))
import os

import chestxr

print(f"chestxr {chestxr.__version__} from {chestxr.__file__}")
if os.environ.get("GPU_SESSION_DRY"):
    cuda = True  # the rehearsal: CPU stand-ins below
if missing or not cuda:
    print(f"CANNOT RUN: missing {missing}" if missing else "CANNOT RUN: torch sees no CUDA device")
    sys.exit(3)
EOF
if [ $? -ne 0 ]; then
    echo "== stopped: the machine lacks what the session needs (above); nothing measured"
    exit 1
fi

BENCH_MODE=--full
if [ -n "${GPU_SESSION_DRY:-}" ]; then
    echo "== GPU_SESSION_DRY: rehearsal on the CPU (CHESTXR_TEST_ACCEL=cpu, bench_gpu.py --smoke); nothing here is a GPU number"
    export CHESTXR_TEST_ACCEL=cpu
    BENCH_MODE="--smoke --threads 1"
    export OMP_NUM_THREADS=1
fi

echo "== tests/test_cuda.py ($(left) s left)"
T_TEST=$(( $(left) < 150 ? $(left) : 150 ))
timeout -k 10 "$T_TEST" "$PY" -m pytest -q -rA -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.txt"
TEST_RC=${PIPESTATUS[0]}
echo "test_cuda exit code: $TEST_RC"

B=$(( $(left) - 20 ))
echo "== benchmarks/bench_gpu.py $BENCH_MODE --deadline $B ($(left) s left)"
if [ "$B" -gt 60 ]; then
    timeout -k 10 $((B + 15)) "$PY" benchmarks/bench_gpu.py $BENCH_MODE --out "$OUT" --deadline "$B"
    BENCH_RC=$?
else
    echo "too little time left for the benchmark"
    BENCH_RC=1
fi
echo "bench_gpu exit code: $BENCH_RC"
echo "== done in $(( $(date +%s) - START )) s: test_cuda $TEST_RC, bench_gpu $BENCH_RC; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
[ "$TEST_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ]
