#!/usr/bin/env bash
# Create (or reuse) ./.venv with everything nanoldm and its tests need. Sourced by demo.sh and test.sh.
# PyTorch is pinned to the CPU wheel: a bare "torch" requirement would pull a multi-GB CUDA build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.nanoldm-setup-v6"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[test]"
  # CLIP's BPE vocabulary ships inside open-clip-torch; it declares torchvision, which we must not pull in.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps open-clip-torch
  # Test-only: k-diffusion's sampler functions are the A1111 reference; it declares torchvision (and more) that
  # its sampling.py / external.py do not need, so no deps (torchdiffeq and scipy come with the test extra).
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "k-diffusion==0.1.1.post1"
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
