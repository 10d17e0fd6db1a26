#!/usr/bin/env bash
# Sets up everything onekey needs on Debian 12 / Raspberry Pi OS: Mosquitto from Debian's
# packages when it is missing, a virtual environment in .venv with the Python dependencies,
# the MicroPython type stubs for checking the firmware, and (for the test extra) a 32-bit build
# of the MicroPython unix port in .venv/micropython32, built once from the source in
# ../shared/third_party/micropython (the heap tests run the firmware on it).  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${ONEKEY_EXTRAS:-test}"

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_passwd >/dev/null 2>&1 || need_apt+=(mosquitto)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# The 32-bit unix port (heap tests) needs a compiler for i386: gcc-multilib. The tests also
# build a 32-bit port with the firmware frozen in, and a small clock-shift library, with it.
mp32_src="../shared/third_party/micropython"
mp32_out=".venv/micropython32"
if [ "$extras" = "test" ] && [ -f "$mp32_src/build-unix32.sh" ]; then
    command -v make >/dev/null 2>&1 || need_apt+=(make)
    dpkg -s gcc-multilib >/dev/null 2>&1 || need_apt+=(gcc-multilib)
fi
# The console's browser tests drive Debian's chromium through Playwright (nothing downloaded).
if [ "$extras" = "test" ]; then
    [ -x /usr/bin/chromium ] || need_apt+=(chromium)
    # A Chinese font, so that the console's screenshots show its words (zh-CN first).
    dpkg -s fonts-wqy-zenhei >/dev/null 2>&1 || need_apt+=(fonts-wqy-zenhei)
fi
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

if [ "$extras" = "test" ]; then
    if [ -x "$mp32_out/micropython" ]; then
        :  # built before; delete .venv/micropython32 to build it again
    elif [ -f "$mp32_src/build-unix32.sh" ]; then
        echo "setup: building the 32-bit MicroPython unix port into $mp32_out (about 20 s)"
        bash "$mp32_src/build-unix32.sh" "$mp32_out" >/dev/null
    else
        echo "setup: no MicroPython source at $mp32_src: the 32-bit heap tests will be skipped." \
             "Put the onekey shared folder beside the repository (it holds" \
             "third_party/micropython/build-unix32.sh and the source archive), then run this again."
    fi
fi
echo "setup: done"
