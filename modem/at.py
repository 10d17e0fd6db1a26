"""The AT command channel (3GPP TS 27.007 / 27.005): bytes from the serial port in, command
results and unsolicited result codes out. No I/O of its own: the driver feeds it what the port
gave and hands it a `write` function, so that it can be tested with plain bytes.

One command is outstanding at a time (a lock). Each line the module prints is one of:
- an unsolicited result code (`+CMTI`, `+CDSI`, `+CDS` and `+CMT` with their PDU on the next
  line, boot notices such as `RDY`, `SMS DONE`): handed to `on_urc`, even in the middle of a
  command's response;
- the echo of the command (before `ATE0`): ignored;
- an information line of the outstanding command (its expected prefix, or the PDU line that
  follows a `+CMGR:`/`+CMGL:` header);
- a final result code: `OK`, `ERROR`, `+CME ERROR: <n>`, `+CMS ERROR: <n>`;
- anything else is garbage: counted (`garbage`), logged, and otherwise ignored.
The `> ` prompt of `AT+CMGS` has no line end: it is recognised in the unfinished line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from modem.errors import CmsError, CommandError, ModemGone, ModemTimeout

log = logging.getLogger("modem")

CTRL_Z = b"\x1a"
ESC = b"\x1b"
MAX_LINE = 4096
# Unsolicited codes that carry nothing the driver needs: boot and status notices of
# SIM7600/EC20-class modules (and ring indications, for a module that also takes calls).
IGNORED_URC = ("RDY", "SMS DONE", "PB DONE", "*ATREADY", "+QIND", "+CPIN:", "RING", "NO CARRIER",
               "+CGEV", "+CTZV", "+CTZE", "+QUSIM", "+CFUN:", "+CSQN", "START", "POWERED DOWN")
URC_WITH_PDU = ("+CDS:", "+CMT:")
URC_SIMPLE = ("+CMTI:", "+CDSI:")
_CME = re.compile(r"^\+CME ERROR: *(\d+)$")
_CMS = re.compile(r"^\+CMS ERROR: *(\d+)$")


@dataclass(frozen=True)
class Urc:
    """An unsolicited result code: `line`, and the PDU line for `+CDS:`/`+CMT:`."""

    line: str
    pdu: str = ""


class _Pending:
    def __init__(self, command: str, prefix: str | None, pdu_lines: bool) -> None:
        self.command = command
        self.prefix = prefix
        self.pdu_lines = pdu_lines
        self.pdu_next = False
        self.lines: list[str] = []
        self.want_prompt = False
        self.prompt: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()


class Channel:
    def __init__(self, write: Callable[[bytes], None], on_urc: Callable[[Urc], None]) -> None:
        self._write = write
        self._on_urc = on_urc
        self._buf = bytearray()
        self._pending: _Pending | None = None
        self._urc_head: str | None = None  # a +CDS:/+CMT: line whose PDU is the next line
        self._lock = asyncio.Lock()
        self.garbage = 0
        self.stray = 0  # late final results (a command that had timed out)
        self._gone: ModemGone | None = None

    # -- input

    def feed(self, data: bytes) -> None:
        self._buf += data
        while True:
            i = self._find_eol()
            if i < 0:
                break
            raw = bytes(self._buf[:i])
            del self._buf[: i + 1]
            line = raw.strip(b"\r\n").decode("ascii", errors="replace").strip()
            if line:
                self._line(line)
        p = self._pending
        if p is not None and p.want_prompt and not p.prompt.done() and self._buf.lstrip(b"\r\n")[:1] == b">":
            self._buf.clear()
            p.prompt.set_result(None)
        if len(self._buf) > MAX_LINE:
            self._garbage(self._buf[:80].decode("ascii", errors="replace"))
            self._buf.clear()

    def _find_eol(self) -> int:
        for i, b in enumerate(self._buf):
            if b in (0x0A, 0x0D):
                return i
        return -1

    def _garbage(self, line: str) -> None:
        self.garbage += 1
        log.warning("event=modem_garbage line=%r count=%d", line[:80], self.garbage)

    def _line(self, line: str) -> None:
        if self._urc_head is not None:
            head, self._urc_head = self._urc_head, None
            if _is_hex(line):
                self._on_urc(Urc(head, line))
                return
            self._garbage(head)  # its PDU never came; read this line as usual
        if line.startswith(URC_WITH_PDU):
            self._urc_head = line
            return
        if line.startswith(URC_SIMPLE):
            self._on_urc(Urc(line))
            return
        p = self._pending
        if p is None:
            if line in ("OK", "ERROR") or _CME.match(line) or _CMS.match(line):
                self.stray += 1
            elif not line.startswith(IGNORED_URC):
                self._garbage(line)
            return
        if line == "OK":
            self._finish(p, None)
            return
        m = _CMS.match(line)
        if m:
            self._finish(p, CmsError(int(m.group(1)), p.command))
            return
        m = _CME.match(line)
        if line == "ERROR" or m:
            self._finish(p, CommandError(p.command, int(m.group(1)) if m else None))
            return
        if p.pdu_next:
            p.pdu_next = False
            if _is_hex(line):
                p.lines.append(line)
                return
        if line.upper().startswith("AT"):
            return  # the echo of our command
        if p.prefix is None or line.startswith(p.prefix):
            p.lines.append(line)
            p.pdu_next = p.pdu_lines
            return
        if line.startswith(IGNORED_URC):
            return
        self._garbage(line)

    def _finish(self, p: _Pending, exc: Exception | None) -> None:
        self._pending = None
        if p.done.done():
            return
        if exc is None:
            p.done.set_result(p.lines)
        else:
            p.done.set_exception(exc)

    def gone(self, exc: ModemGone) -> None:
        """The port vanished: fail what waits, and every later command."""
        self._gone = exc
        p = self._pending
        if p is not None:
            self._pending = None
            for fut in (p.prompt, p.done):
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # retrieved here when nobody waits for the prompt

    # -- commands

    async def command(
        self, command: str, *, prefix: str | None = None, pdu_lines: bool = False, timeout: float = 5.0
    ) -> list[str]:
        """Sends `command`; returns its information lines (those starting with `prefix`, or all
        when None) once the module answers OK; raises CommandError, CmsError, ModemTimeout or
        ModemGone."""
        async with self._lock:
            p = self._start(command, prefix, pdu_lines)
            try:
                self._send(command.encode() + b"\r")
                await self._wait(p, p.done, timeout)
                return p.done.result()
            finally:
                self._drop(p)

    def abort_input(self) -> None:
        """ESC: leaves the PDU input of an `AT+CMGS` that another program began and never
        finished (TS 27.005 3.5.1: the message is not sent); then CR, so that a module that
        was not in it ends the line (it answers ERROR or nothing; an answer while no command
        waits is counted as stray and ignored)."""
        self._send(ESC + b"\r")

    async def send_pdu(
        self, tpdu_len: int, pdu_hex: str, *, prompt_timeout: float, timeout: float
    ) -> list[str]:
        """`AT+CMGS=<len>`, the PDU after the `> ` prompt, Ctrl-Z; returns the `+CMGS:` line."""
        command = f"AT+CMGS={tpdu_len}"
        async with self._lock:
            p = self._start(command, "+CMGS:", False)
            p.want_prompt = True
            try:
                self._send(command.encode() + b"\r")
                await self._wait(p, p.prompt, prompt_timeout)
                if p.done.done():
                    return p.done.result()  # refused at once: raises its error
                p.prompt.result()  # raises ModemGone if the port vanished
                self._send(pdu_hex.encode() + CTRL_Z)
                await self._wait(p, p.done, timeout)
                return p.done.result()
            finally:
                self._drop(p)

    def _start(self, command: str, prefix: str | None, pdu_lines: bool) -> _Pending:
        if self._gone is not None:
            raise self._gone
        p = _Pending(command, prefix, pdu_lines)
        self._pending = p
        return p

    def _drop(self, p: _Pending) -> None:
        if self._pending is p:
            self._pending = None

    def _send(self, data: bytes) -> None:
        try:
            self._write(data)
        except ModemGone as exc:
            self.gone(exc)
            raise

    async def _wait(self, p: _Pending, fut: asyncio.Future[None] | asyncio.Future[list[str]],
                    timeout: float) -> None:
        done, _ = await asyncio.wait({fut, p.done}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if done:
            return
        self._drop(p)
        if p.want_prompt:
            # Leave the PDU input state, else the module reads the next command as PDU.
            with contextlib.suppress(ModemGone):
                self._send(ESC)
        raise ModemTimeout(
            f"modem did not answer {p.command} within {timeout:g} s: check that the module is "
            "powered and that the port and baud rate are right"
        )


def _is_hex(line: str) -> bool:
    return len(line) % 2 == 0 and all(c in "0123456789ABCDEFabcdef" for c in line)
