"""Stand-ins for boards, for the provisioning tests: a scripted MicroPython raw REPL (pure:
bytes in, bytes out), the same behind a fake serial object or behind a real pseudo-terminal,
and a pseudo-terminal that answers garbage."""

from __future__ import annotations

import contextlib
import json
import os
import select
import struct
import threading
import tty
from collections.abc import Callable, Iterator

Handler = Callable[[str], tuple[str, str]]

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"


def info_reply(
    version: tuple[int, ...] = (1, 22, 2), name: str = "micropython", platform: str = "esp32",
    uid: str = "a0b1c2d3e4f5", loaded: bool = False,
) -> str:
    return json.dumps([name, list(version), platform, "ESP32 module with ESP32", 1542, uid,
                       1_900_000, loaded]) + "\n"


def frozen_reply(version: str | None = None, modules: tuple[str, ...] = ()) -> str:
    """The answer to provisioning's frozen-modules query: '.frozen' in sys.path (as on every
    ESP32 image), and the firmware's version marker and modules frozen in, if any."""
    return json.dumps([True, version, list(modules)]) + "\n"


def default_handler(code: str) -> tuple[str, str]:
    """Answers the info query like an ESP32 with MicroPython 1.22.2 and no firmware frozen in;
    everything else: nothing."""
    if "sys.implementation" in code:
        return info_reply(), ""
    if "'.frozen'" in code:
        return frozen_reply(), ""
    return "", ""


class FakeBoard:
    """MicroPython's REPL protocol, scripted: `feed(input)` returns what the board sends."""

    def __init__(self, handler: Handler = default_handler, *, paste: bool = True, window: int = 32) -> None:
        self.handler = handler
        self.paste = paste
        self.window = window
        self.raw = False
        self.pasting = False
        self.code = bytearray()
        self.received_in_window = 0
        self.executed: list[str] = []
        self.soft_resets = 0

    def _run(self) -> bytes:
        code = self.code.decode()
        self.code.clear()
        if not code:
            self.soft_resets += 1
            return b"\r\nMPY: soft reboot\r\n" + RAW_BANNER
        self.executed.append(code)
        out, err = self.handler(code)
        return out.replace("\n", "\r\n").encode() + b"\x04" + err.encode() + b"\x04>"

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        i = 0
        while i < len(data):
            b = data[i : i + 1]
            i += 1
            if self.pasting:
                if b == b"\x04":
                    self.pasting = False
                    out += b"\x04" + self._run()
                    continue
                self.code += b
                self.received_in_window += 1
                if self.received_in_window >= self.window:
                    self.received_in_window = 0
                    out += b"\x01"
                continue
            if not self.raw:
                if b == b"\x01":
                    self.raw = True
                    out += b"\r\n" + RAW_BANNER
                elif b == b"\x03":
                    out += b"\r\n>>> "
                continue
            if b == b"\x02":
                self.raw = False
                out += b"\r\nMicroPython v1.22.2 on 2024-02-22; ESP32 module with ESP32\r\n>>> "
            elif b == b"\x01":
                self.code.clear()
                out += b"\r\n" + RAW_BANNER
            elif b == b"\x03":
                self.code.clear()
            elif b == b"\x05" and data[i : i + 2] == b"A\x01":
                i += 2
                if self.paste:
                    self.pasting = True
                    self.received_in_window = 0
                    out += b"R\x01" + struct.pack("<H", self.window) + b"\x01"
                else:
                    out += b"R\x00"
            elif b == b"\x04":
                out += b"OK" + self._run()
            else:
                self.code += b
        return bytes(out)


class FakeSerial:
    """A FakeBoard behind the part of pyserial's interface that RawRepl uses."""

    def __init__(self, board: FakeBoard, *, lose_after: int | None = None) -> None:
        self.board = board
        self.buf = bytearray()
        self.written = 0
        self.lose_after = lose_after
        self.closed = False

    @property
    def in_waiting(self) -> int:
        self._check()
        return len(self.buf)

    def _check(self) -> None:
        if self.lose_after is not None and self.written >= self.lose_after:
            raise OSError(5, "Input/output error")

    def read(self, size: int = 1) -> bytes:
        self._check()
        got = bytes(self.buf[:size])
        del self.buf[:size]
        return got

    def write(self, data: bytes) -> int:
        self._check()
        self.written += len(data)
        self.buf += self.board.feed(data)
        return len(data)

    def reset_input_buffer(self) -> None:
        self.buf.clear()

    def close(self) -> None:
        self.closed = True


class PtyDevice:
    """Something on the far end of a real pseudo-terminal: `answer(input) -> output`."""

    def __init__(self, answer: Callable[[bytes], bytes]) -> None:
        self.answer = answer
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            reply = self.answer(data)
            if reply:
                with contextlib.suppress(OSError):
                    os.write(self.master, reply)

    def __enter__(self) -> PtyDevice:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def fake_board_on_pty(handler: Handler = default_handler) -> Iterator[str]:
    """A scripted MicroPython board behind a real pty; yields its port path."""
    board = FakeBoard(handler)
    with PtyDevice(board.feed) as dev:
        yield dev.port


@contextlib.contextmanager
def garbage_on_pty() -> Iterator[str]:
    """A device that answers every byte with noise (a GPS module, a modem at another baud)."""
    with PtyDevice(lambda data: b"\xfe\x13$GPGGA,,,,\xff" * max(1, len(data) // 4)) as dev:
        yield dev.port
