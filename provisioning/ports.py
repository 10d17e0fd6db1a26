"""Finding boards: USB serial ports with the adapters ESP32 boards use, and virtual boards.

`open_port()` opens one with pyserial and turns the usual failures into messages a
technician can act on (no such port, in use, no permission).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import serial
from serial.tools import list_ports

from provisioning.errors import PortError
from provisioning.simcontrol import running_boards

BAUD = 115200

# USB vendor:product ids of the serial adapters found on ESP32 boards.
KNOWN_ADAPTERS = {
    (0x10C4, 0xEA60): "CP210x (Silicon Labs)",
    (0x1A86, 0x7523): "CH340 (WCH)",
    (0x1A86, 0x55D4): "CH9102 (WCH)",
    (0x0403, 0x6001): "FTDI FT232",
    (0x303A, 0x1001): "ESP32-S3/C3 native USB",
}


@dataclass(frozen=True)
class PortInfo:
    device: str
    kind: str  # the adapter, or "virtual board"
    detail: str  # serial number, by-id link, virtual board name


def _by_id() -> dict[str, str]:
    """/dev/serial/by-id names (stable across replugging) by the device they point to."""
    links: dict[str, str] = {}
    d = Path("/dev/serial/by-id")
    if d.is_dir():
        for link in d.iterdir():
            try:
                links[str(link.resolve())] = str(link)
            except OSError:
                continue
    return links


def list_boards(all_ports: bool = False) -> list[PortInfo]:
    """Serial ports that look like boards (all serial ports with `all_ports`), then the
    running virtual boards."""
    found: list[PortInfo] = []
    by_id = _by_id()
    for p in sorted(list_ports.comports(), key=lambda p: p.device):
        vid_pid = (p.vid, p.pid) if p.vid is not None and p.pid is not None else None
        kind = KNOWN_ADAPTERS.get(vid_pid) if vid_pid else None
        if kind is None and not all_ports:
            continue
        if kind is None:
            kind = f"{p.vid:04x}:{p.pid:04x}" if vid_pid else (p.description or "serial port")
        detail = by_id.get(os.path.realpath(p.device), p.serial_number or "")
        found.append(PortInfo(p.device, kind, detail))
    for vb in running_boards():
        found.append(PortInfo(vb.port, "virtual board", f"{vb.name} in {vb.dir}"))
    return found


def open_port(port: str, baud: int = BAUD) -> serial.Serial:
    """The port, opened for the raw REPL (short read timeout: callers keep their own)."""
    if not os.path.exists(port):
        raise PortError(
            f"there is no serial port {port}; is the board plugged in? "
            "`onekey provision list` shows the boards this computer sees"
        )
    if not os.access(port, os.R_OK | os.W_OK):
        raise PortError(
            f"no permission to open {port}: add your user to the dialout group "
            "(sudo usermod -aG dialout $USER, then log out and in again)"
        )
    ser = serial.Serial(None, baud, timeout=0.05, write_timeout=5, exclusive=True)
    ser.port = port
    # ESP32 boards wire DTR and RTS to GPIO0 and EN (for esptool): both released, so that
    # opening or closing the port neither resets the board nor puts it in its bootloader.
    ser.dtr = False
    ser.rts = False
    try:
        ser.open()
        return ser
    except serial.SerialException as exc:
        code = getattr(exc, "errno", None)
        if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "lock" in str(exc).lower():
            raise PortError(
                f"{port} is in use by another program (a serial terminal, mpremote, another "
                "onekey?); close it and run the same command again"
            ) from None
        raise PortError(f"cannot open {port}: {exc}") from None
