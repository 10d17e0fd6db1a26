"""MicroPython's raw REPL over a serial port (pyserial), as a board speaks it over USB.

The conversation (MicroPython's docs, "raw REPL"; mpremote speaks the same):

- Ctrl-C (0x03) interrupts whatever runs; Ctrl-A (0x01) enters the raw REPL, which answers
  `raw REPL; CTRL-B to exit\\r\\n>`. Ctrl-B (0x02) leaves it.
- Code is sent, then Ctrl-D (0x04). The board answers `OK`, runs it, and sends its standard
  output, 0x04, its error output (a traceback), 0x04, then the `>` prompt again.
- Raw-paste mode (`0x05 A 0x01`, answered `R\\x01` and a 16-bit window) has flow control: the
  board sends 0x01 each time it has room for another window. Boards that do not know it answer
  otherwise, and the plain mode is used, written in small paced chunks.
- Ctrl-D with no code is a soft reset: `OK`, then `soft reboot`, then the raw prompt again.

Every wait is bounded. A port that disappears (cable pulled, board reset into another USB
device, a virtual board killed) surfaces as `BoardLostError`, whatever pyserial or the OS said.
"""

from __future__ import annotations

import struct
import time
from typing import Protocol

from provisioning.errors import (
    BoardCommandError,
    BoardLostError,
    NotMicroPythonError,
    RawReplError,
)

CTRL_A = b"\x01"
CTRL_B = b"\x02"
CTRL_C = b"\x03"
CTRL_D = b"\x04"
RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"
SOFT_REBOOT = b"soft reboot\r\n"
RAW_PASTE_ENTER = b"\x05A\x01"

# Plain raw mode has no flow control: a board's UART buffer is a few hundred bytes.
PLAIN_CHUNK = 256
PLAIN_PAUSE_S = 0.01
READ_SLICE_S = 0.05


class SerialLike(Protocol):
    """What RawRepl needs of a port: pyserial's `Serial`, or a fake in tests."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...


def _lost(port: str, exc: BaseException) -> BoardLostError:
    return BoardLostError(
        f"the board on {port} went away ({exc}); check the USB cable and that the board is "
        "powered, plug it back in and run the same command again (finished steps are kept)"
    )


class RawRepl:
    """One raw REPL conversation with the board on `serial`. Nothing is sent until a
    method is called; `close()` leaves the raw REPL and closes the port."""

    def __init__(self, serial: SerialLike, port: str = "the serial port") -> None:
        self.serial = serial
        self.port = port
        self.in_raw = False
        self.use_paste: bool | None = None  # None: not tried yet
        self.bytes_sent = 0
        self._buf = bytearray()  # read from the port, not yet consumed

    # -- bytes, with the port's failures translated (pyserial's errors are OSErrors)

    def _write(self, data: bytes) -> None:
        try:
            self.serial.write(data)
        except OSError as exc:
            raise _lost(self.port, exc) from None
        self.bytes_sent += len(data)

    def _waiting(self) -> int:
        try:
            return int(self.serial.in_waiting)
        except OSError as exc:
            raise _lost(self.port, exc) from None

    def _fill(self) -> None:
        """Appends what the port has (waiting at most the port's read timeout)."""
        try:
            n = self.serial.in_waiting
            self._buf += self.serial.read(max(1, min(n, 4096)))
        except OSError as exc:
            raise _lost(self.port, exc) from None

    def read_until(self, marker: bytes, timeout: float) -> bytes:
        """Everything up to and including `marker`; RawReplError if it does not come."""
        deadline = time.monotonic() + timeout
        while True:
            i = self._buf.find(marker)
            if i >= 0:
                end = i + len(marker)
                got = bytes(self._buf[:end])
                del self._buf[:end]
                return got
            if time.monotonic() > deadline:
                raise RawReplError(
                    f"the board on {self.port} did not send {marker!r} within {timeout:g} s "
                    f"(it sent: {bytes(self._buf[-200:])!r})"
                )
            self._fill()

    def read_exact(self, n: int, timeout: float) -> bytes:
        """`n` bytes, or fewer if the time runs out."""
        deadline = time.monotonic() + timeout
        while len(self._buf) < n and time.monotonic() < deadline:
            self._fill()
        got = bytes(self._buf[:n])
        del self._buf[:n]
        return got

    def discard(self, settle: float = 0.1, limit: float = 2.0) -> bytes:
        """Drops what the board sends until it has been quiet for `settle` seconds."""
        got = bytes(self._buf)
        self._buf.clear()
        quiet = time.monotonic() + settle
        deadline = time.monotonic() + limit
        while time.monotonic() < min(quiet, deadline):
            self._fill()
            if self._buf:
                got += bytes(self._buf)
                self._buf.clear()
                quiet = time.monotonic() + settle
        return got

    # -- modes

    def interrupt(self) -> None:
        """Ctrl-C twice: stops a running program (the firmware's main.py, a stuck command)."""
        self._write(b"\r" + CTRL_C + CTRL_C)

    def enter_raw(self, timeout: float = 6.0, attempts: int = 3) -> None:
        """Interrupts whatever runs and enters the raw REPL. A device that never shows the raw
        prompt is not a MicroPython board (or not at this baud rate)."""
        seen = b""
        per_try = max(0.5, timeout / attempts)
        for _ in range(attempts):
            self.interrupt()
            seen = (seen + self.discard(0.05))[-300:]
            self._write(b"\r" + CTRL_A)
            try:
                self.read_until(RAW_PROMPT, per_try)
            except RawReplError:
                seen = (seen + bytes(self._buf))[-300:]
                self._buf.clear()
                continue
            self.in_raw = True
            return
        raise NotMicroPythonError(
            f"the device on {self.port} does not answer as a MicroPython board: no raw REPL "
            f"prompt after Ctrl-C, Ctrl-A ({attempts} tries). Is MicroPython flashed on it (see "
            f"docs/firmware.md, 'Flashing an ESP32'), and is nothing else using the port? "
            f"It sent: {seen[-120:]!r}"
        )

    def exit_raw(self) -> None:
        if self.in_raw:
            self._write(b"\r" + CTRL_B)
            self.in_raw = False

    def soft_reset(self, timeout: float = 10.0) -> None:
        """Ctrl-D at the raw prompt: a fresh heap and interpreter; stays in the raw REPL."""
        self._require_raw()
        self._write(CTRL_D)
        self.read_until(SOFT_REBOOT, timeout)
        self.read_until(RAW_PROMPT, timeout)

    # -- running code

    def exec(self, code: str | bytes, timeout: float = 10.0) -> bytes:
        """Runs `code` on the board; returns its standard output ("\\r\\n" made "\\n").
        Raises BoardCommandError with the board's traceback if the code raised."""
        self.send(code)
        out, err = self.follow(timeout)
        if err:
            text = err.decode(errors="replace").strip()
            last = text.splitlines()[-1] if text else "error"
            raise BoardCommandError(f"the board reported: {last}", text)
        return out

    def send(self, code: str | bytes) -> None:
        """Sends `code` for execution without waiting for its output (see `follow`)."""
        self._require_raw()
        data = code.encode() if isinstance(code, str) else code
        if self.use_paste is not False and self._start_paste():
            self._paste(data)
            return
        for i in range(0, len(data), PLAIN_CHUNK):
            self._write(data[i : i + PLAIN_CHUNK])
            time.sleep(PLAIN_PAUSE_S)
        self._write(CTRL_D)
        ok = self.read_exact(2, 5.0)
        if ok != b"OK":
            raise RawReplError(f"the board on {self.port} did not accept code: {ok!r}")

    def follow(self, timeout: float) -> tuple[bytes, bytes]:
        """Waits for the end of a command: (standard output, error output)."""
        try:
            out = self.read_until(CTRL_D, timeout)
            err = self.read_until(CTRL_D, timeout)
            self.read_until(b">", 5.0)
        except RawReplError:
            # Stop what runs, so that the next command finds a prompt.
            self.interrupt()
            raise RawReplError(
                f"the board on {self.port} did not finish a command within {timeout:g} s; "
                "it was interrupted. Run the same command again."
            ) from None
        return out[:-1].replace(b"\r\n", b"\n"), err[:-1].replace(b"\r\n", b"\n")

    def _start_paste(self) -> bool:
        """Asks for raw-paste mode; True if the board entered it."""
        self._write(RAW_PASTE_ENTER)
        answer = self.read_exact(2, 2.0)
        if answer == b"R\x01":
            self.use_paste = True
            return True
        if self.use_paste:
            raise RawReplError(f"the board on {self.port} refused raw-paste mode: {answer!r}")
        self.use_paste = False
        if answer != b"R\x00":
            # An old board that does not know raw-paste took the bytes as code: wait for its
            # prompt to come back before using the plain mode.
            self.read_until(RAW_PROMPT, 5.0)
        return False

    def _paste(self, data: bytes) -> None:
        header = self.read_exact(2, 2.0)
        if len(header) != 2:
            raise RawReplError(f"the board on {self.port} sent no raw-paste window size")
        window = struct.unpack("<H", header)[0]
        remain = window
        i = 0
        deadline = time.monotonic() + 30.0
        while i < len(data):
            while remain == 0 or self._buf or self._waiting():
                if time.monotonic() > deadline:
                    raise RawReplError(f"the board on {self.port} stopped taking code")
                flag = self.read_exact(1, 1.0)
                if flag == b"\x01":
                    remain += window
                elif flag == CTRL_D:
                    # The board ended the paste early (e.g. a syntax error): acknowledge.
                    self._write(CTRL_D)
                    return
                elif flag:
                    raise RawReplError(f"unexpected byte {flag!r} from {self.port} during raw paste")
            part = data[i : i + remain]
            self._write(part)
            remain -= len(part)
            i += len(part)
        self._write(CTRL_D)
        # The board acknowledges the end of the code with 0x04; window grants may precede it.
        ack = self.read_until(CTRL_D, 10.0)
        if ack.strip(b"\x01") != CTRL_D:
            raise RawReplError(f"unexpected bytes from {self.port} ending raw paste: {ack!r}")

    def _require_raw(self) -> None:
        if not self.in_raw:
            raise RawReplError("not in the raw REPL: call enter_raw() first")

    # -- end

    def close(self) -> None:
        try:
            self.exit_raw()
        except BoardLostError:
            pass
        try:
            self.serial.close()
        except OSError:
            pass
