#!/usr/bin/env bash
# Sets up everything onekey needs on Debian 12 / Raspberry Pi OS: Mosquitto from Debian's
# packages when it is missing, a virtual environment in .venv with the Python dependencies,
# and the MicroPython type stubs for checking the firmware.  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${ONEKEY_EXTRAS:-test}"

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_passwd >/dev/null 2>&1 || need_apt+=(mosquitto)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing Debian packages: ${need_apt[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating virtual environment .venv"
    python3 -m venv .venv
fi
echo "setup: installing Python dependencies (onekey[$extras])"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[$extras]"

if [ "$extras" = "test" ] && [ ! -d .venv/mpy-stubs ]; then
    echo "setup: installing MicroPython ESP32 stubs into .venv/mpy-stubs"
    .venv/bin/python -m pip install -q --target .venv/mpy-stubs micropython-esp32-stubs
fi
echo "setup: done"
