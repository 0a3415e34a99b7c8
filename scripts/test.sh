#!/usr/bin/env bash
# The test suite (parity against diffusers/transformers, installed as test-only dependencies by setup.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
# The browser test (tests/server/test_browser.py) drives Debian's headless chromium through its chromedriver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null \
      || echo "test.sh: could not install chromium and chromium-driver with apt; the browser test will be skipped"
  else
    echo "test.sh: chromium and chromium-driver are missing and apt-get is not usable here (needs root); the browser test will be skipped"
  fi
fi
exec python -m pytest "$@"
