#!/usr/bin/env bash
# The test suite (parity against diffusers/transformers, installed as test-only dependencies by setup.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
exec python -m pytest "$@"
