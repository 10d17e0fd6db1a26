"""Simulated devices seen from the technician's tools: the control channel of a simulated device
(the firmware's sim HAL listens on loopback; one line in, one line back), used by `onekey sim`
and the self-test of a virtual board, and the directory where running virtual boards announce
themselves, read by `onekey provision list`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

CONTROL_HOST = "127.0.0.1"


class SimDeviceError(Exception):
    """A simulated device is missing, did not start, or did not answer on its control port."""


def control_port(flash_dir: Path) -> int:
    """The control port of the simulated device whose flash is `flash_dir`."""
    path = Path(flash_dir) / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise SimDeviceError(f"no device at {flash_dir}: {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise SimDeviceError(f"cannot read {path}: {exc}") from None
    port = cfg.get("sim_port") if isinstance(cfg, dict) else None
    if not isinstance(port, int) or not 0 < port < 65536:
        raise SimDeviceError(f"{path} has no sim_port: not a simulated device")
    return port


def send_command(port: int, line: str, timeout: float = 5.0) -> str:
    """Sends one control command to the device on `port` and returns its reply line."""
    try:
        with socket.create_connection((CONTROL_HOST, port), timeout=timeout) as sock:
            sock.sendall(line.encode() + b"\n")
            with sock.makefile("rb") as reader:
                reply = reader.readline()
    except OSError as exc:
        raise SimDeviceError(f"device on port {port} does not answer: {exc}") from None
    if not reply.endswith(b"\n"):
        raise SimDeviceError(f"device on port {port} closed the connection without a reply")
    text = reply.decode().strip()
    if text.startswith("error"):
        raise SimDeviceError(f"device refused {line!r}: {text}")
    return text


def registry_dir() -> Path:
    """Where running virtual boards announce themselves (`onekey provision list` looks)."""
    override = os.environ.get("ONEKEY_VBOARD_DIR")
    if override:
        return Path(override)
    return Path(f"/tmp/onekey-vboards-{os.getuid()}")


@dataclass(frozen=True)
class Announcement:
    name: str
    port: str
    pid: int
    dir: str
    uid: str


def running_boards() -> list[Announcement]:
    """Virtual boards whose process is alive, by name."""
    found: list[Announcement] = []
    d = registry_dir()
    if not d.is_dir():
        return found
    for f in sorted(d.glob("*.json")):
        try:
            a = Announcement(**json.loads(f.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        try:
            os.kill(a.pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                f.unlink()
            continue
        except PermissionError:
            pass
        if Path(a.port).exists():
            found.append(a)
    return found
