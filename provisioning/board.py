"""What provisioning asks of a board through the raw REPL: who it is, and its files.

The board-side code is small helper functions sent once per interpreter (after every reset)
and called by short commands. They use only what MicroPython 1.20 and later have on an ESP32
and on the unix port: `os`, `sys`, `json`, `binascii`, and `hashlib.sha256` when present
(otherwise a CRC-32, or the file read back when even that is missing).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from provisioning.errors import BoardCommandError, BoardTooOldError, NotMicroPythonError, RawReplError
from provisioning.rawrepl import RawRepl

# The firmware uses asyncio features and bytecode of MicroPython 1.20 (mpy format 6).
MIN_VERSION = (1, 20, 0)

_PRELUDE = """\
import os, sys
try:
    import binascii as _ok_ba
except ImportError:
    import ubinascii as _ok_ba
def _ok_digest(p):
    try:
        f = open(p, 'rb')
    except OSError:
        print('null')
        return
    try:
        import hashlib
        h = hashlib.sha256()
        kind = 'sha256'
    except (ImportError, AttributeError):
        h = None
        kind = 'crc32' if hasattr(_ok_ba, 'crc32') else 'size'
    n = 0
    c = 0
    b = bytearray(512)
    while True:
        k = f.readinto(b)
        if not k:
            break
        m = memoryview(b)[:k]
        n += k
        if h:
            h.update(m)
        elif kind == 'crc32':
            c = _ok_ba.crc32(m, c)
    f.close()
    d = _ok_ba.hexlify(h.digest()).decode() if h else '%08x' % (c & 0xffffffff)
    print('["%s",%d,"%s"]' % (kind, n, d))
def _ok_open(p):
    global _ok_f
    _ok_f = open(p, 'wb')
def _ok_w(s):
    _ok_f.write(_ok_ba.a2b_base64(s))
def _ok_close():
    _ok_f.close()
def _ok_mv(a, b):
    try:
        os.rename(a, b)
    except OSError:
        os.remove(b)
        os.rename(a, b)
def _ok_rm(p):
    try:
        os.remove(p)
    except OSError:
        pass
def _ok_cat(p):
    try:
        f = open(p, 'rb')
    except OSError:
        print('null')
        return
    while True:
        b = f.read(384)
        if not b:
            break
        print(_ok_ba.b2a_base64(b).decode().strip())
    f.close()
"""

_INFO = """\
import json
try:
    import machine
    _u = machine.unique_id()
except Exception:
    _u = b''
try:
    _s = os.statvfs('.')
    _free = _s[0] * _s[3]
except Exception:
    _free = -1
_i = sys.implementation
print(json.dumps([_i.name, list(_i.version), sys.platform, getattr(_i, '_machine', ''),
    getattr(_i, '_mpy', 0), _ok_ba.hexlify(_u).decode(), _free, 'okproto' in sys.modules]))
"""


# Which of the firmware's modules the board's image has frozen in, and at which version: with
# sys.path narrowed to '.frozen', import the version marker (a constant and a tuple, nothing
# run) that an image built from freeze_tree carries; without it, try okproto (pure codecs) to
# tell an image frozen before the marker existed from an image with no firmware at all. Files on
# the file system are never consulted, and sys.path and sys.modules are put back as they were.
_FROZEN = """\
import json
_ok_p = list(sys.path)
_ok_r = [False, None, []]
if '.frozen' in _ok_p:
    _ok_r[0] = True
    sys.path.clear()
    sys.path.append('.frozen')
    try:
        for _ok_n in ('fwversion', 'okproto'):
            _ok_had = _ok_n in sys.modules
            _ok_m = sys.modules.pop(_ok_n, None)
            try:
                _ok_i = __import__(_ok_n)
            except ImportError:
                _ok_i = None
            finally:
                if _ok_had:
                    sys.modules[_ok_n] = _ok_m
                else:
                    sys.modules.pop(_ok_n, None)
            if _ok_i is None:
                continue
            if _ok_n == 'fwversion':
                _ok_r[1] = str(getattr(_ok_i, 'VERSION', ''))
                _ok_r[2] = [str(x) for x in getattr(_ok_i, 'MODULES', ())]
                break
            _ok_r[2] = [_ok_n]
    finally:
        _ok_i = None
        _ok_m = None
        sys.path.clear()
        for _ok_n in _ok_p:
            sys.path.append(_ok_n)
print(json.dumps(_ok_r))
"""


@dataclass(frozen=True)
class FrozenFirmware:
    """The onekey firmware frozen into a board's MicroPython image."""

    version: str | None  # the image's fwversion.VERSION; None: frozen before the marker existed
    modules: tuple[str, ...]  # the firmware's modules the image holds


def parse_frozen(text: str, port: str) -> FrozenFirmware | None:
    try:
        has_frozen, version, modules = json.loads(text)
        names = tuple(str(m) for m in modules)
    except (ValueError, TypeError):
        raise RawReplError(
            f"the board on {port} gave an unreadable answer about its frozen modules: {text[:120]!r}"
        ) from None
    if not has_frozen or not names:
        return None
    return FrozenFirmware(str(version) if version else None, names)


@dataclass(frozen=True)
class BoardInfo:
    implementation: str
    version: tuple[int, int, int]
    platform: str
    machine: str
    mpy: int
    uid: str  # hex of machine.unique_id()
    free_bytes: int | None
    firmware_loaded: bool  # the onekey firmware ran since the last reset

    @property
    def virtual(self) -> bool:
        """The unix port: a virtual board (`onekey vboard`), which runs the simulated HAL."""
        return self.platform in ("linux", "darwin")

    @property
    def version_text(self) -> str:
        return ".".join(str(p) for p in self.version)


def parse_version(value: Sequence[object] | str) -> tuple[int, int, int]:
    """(major, minor, micro) from `sys.implementation.version` or a text such as
    'v1.19.1', '1.22.0-preview' or a banner 'MicroPython v1.20.0 on 2023-04-26; ...'."""
    if isinstance(value, str):
        m = re.search(r"v?(\d+)\.(\d+)(?:\.(\d+))?", value)
        if not m:
            raise ValueError(f"no version number in {value!r}")
        return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    parts = [p for p in value if isinstance(p, int) and not isinstance(p, bool)]
    if len(parts) < 2:
        raise ValueError(f"not a version: {value!r}")
    return parts[0], parts[1], parts[2] if len(parts) > 2 else 0


def parse_info(text: str, port: str) -> BoardInfo:
    try:
        data = json.loads(text)
        name, version, platform, machine, mpy, uid, free, loaded = data
        return BoardInfo(
            implementation=str(name),
            version=parse_version(version),
            platform=str(platform),
            machine=str(machine),
            mpy=int(mpy),
            uid=str(uid).lower(),
            free_bytes=int(free) if int(free) >= 0 else None,
            firmware_loaded=bool(loaded),
        )
    except (ValueError, TypeError) as exc:
        raise NotMicroPythonError(
            f"the device on {port} has a raw REPL but did not describe itself as MicroPython "
            f"does ({exc}; it printed {text[:120]!r})"
        ) from None


def check_board(info: BoardInfo, port: str) -> None:
    """Refuses what the firmware cannot run on."""
    if info.implementation != "micropython":
        raise NotMicroPythonError(
            f"the board on {port} runs {info.implementation}, not MicroPython; flash MicroPython "
            f"{'.'.join(map(str, MIN_VERSION))} or later (docs/firmware.md, 'Flashing an ESP32')"
        )
    if info.version < MIN_VERSION:
        need = ".".join(map(str, MIN_VERSION))
        raise BoardTooOldError(
            f"the board on {port} runs MicroPython {info.version_text}; the firmware needs {need} "
            f"or later. Flash a current MicroPython (docs/firmware.md, 'Flashing an ESP32'), "
            "then run the same command again"
        )
    if not info.uid:
        raise NotMicroPythonError(
            f"the board on {port} has no machine.unique_id(); it cannot be told from other boards"
        )


class Board:
    """Board operations over an open raw REPL (`repl.in_raw`)."""

    def __init__(self, repl: RawRepl) -> None:
        self.repl = repl
        self._prelude = False

    def prelude(self) -> None:
        if not self._prelude:
            self.repl.exec(_PRELUDE)
            self._prelude = True

    def forget_prelude(self) -> None:
        """After a reset the helpers are gone."""
        self._prelude = False

    def info(self) -> BoardInfo:
        self.prelude()
        out = self.repl.exec(_INFO).decode(errors="replace").strip()
        return parse_info(out.splitlines()[-1] if out else "", self.repl.port)

    def frozen_firmware(self) -> FrozenFirmware | None:
        """The firmware frozen into the board's image, or None when it has none."""
        self.prelude()
        out = self.repl.exec(_FROZEN).decode(errors="replace").strip()
        return parse_frozen(out.splitlines()[-1] if out else "", self.repl.port)

    def digest(self, path: str) -> tuple[str, int, str] | None:
        """(kind, size, hex digest) of a file on the board, or None if it does not exist."""
        self.prelude()
        out = self.repl.exec(f"_ok_digest({path!r})").decode().strip()
        data = json.loads(out)
        if data is None:
            return None
        kind, size, digest = data
        return str(kind), int(size), str(digest)

    def read_file(self, path: str, timeout: float = 30.0) -> bytes | None:
        self.prelude()
        out = self.repl.exec(f"_ok_cat({path!r})", timeout=timeout).decode().strip()
        if out == "null":
            return None
        try:
            return b"".join(base64.b64decode(line) for line in out.splitlines())
        except (ValueError, binascii.Error):
            raise RawReplError(f"unreadable reply while reading {path} from the board") from None

    def listdir(self, path: str = "") -> list[str]:
        self.prelude()
        arg = repr(path) if path else ""
        out = self.repl.exec(f"import json\nprint(json.dumps(os.listdir({arg})))")
        names = json.loads(out.decode().strip() or "[]")
        return [str(n) for n in names]

    def remove(self, path: str) -> None:
        self.prelude()
        self.repl.exec(f"_ok_rm({path!r})")

    def rename(self, src: str, dst: str) -> None:
        self.prelude()
        self.repl.exec(f"_ok_mv({src!r}, {dst!r})")

    def run(self, code: str, timeout: float = 10.0) -> str:
        self.prelude()
        return self.repl.exec(code, timeout=timeout).decode(errors="replace")

    def hard_reset(self) -> None:
        """machine.reset(): the board restarts and runs main.py. Nothing answers after it."""
        try:
            self.repl.send("import machine\nmachine.reset()\n")
        except (RawReplError, BoardCommandError):
            pass  # the reset may cut the answer short
        self.repl.in_raw = False
        self._prelude = False
