#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install chestxr into it.
# Usage: scripts/setup_venv.sh VENV_DIR [EXTRAS]
# TORCH_SPEC overrides the torch install line (default: the versions this project is tested with).
set -euo pipefail
venv=${1:-.venv}
extras=${2:-}
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
torch_spec=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
stamp="$venv/.chestxr-installed${extras:+-$extras}"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# torch first, from the pinned versions (on this machine pip takes them from a local cache);
# elsewhere set TORCH_SPEC="torch torchvision" to take any recent release.
if ! "$venv/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "installing $torch_spec ..."
  "$venv/bin/python" -m pip install -q $torch_spec
fi
"$venv/bin/python" -m pip install -q -e ".${extras:+[$extras]}"
touch "$stamp"
