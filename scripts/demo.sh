#!/usr/bin/env bash
# The main job on the built-in default: `nanoldm demo`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec nanoldm demo "$@"
