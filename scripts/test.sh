#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite: lint, types, firmware checks,
# unit and integration tests against real Mosquitto and real MicroPython.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
echo "== ruff"
ruff check .
echo "== mypy (strict: gateway, centre, provisioning, onekey, protocol, transport, harness, modem)"
mypy
echo "== pytest"
exec pytest "$@"
