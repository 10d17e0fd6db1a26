#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the demo village on loopback.  Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
ONEKEY_EXTRAS=sim bash scripts/setup.sh
exec .venv/bin/onekey demo "$@"
