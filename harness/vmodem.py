"""A virtual GSM modem on a pseudo-terminal, speaking the AT dialect of a SIM7600 (3GPP TS
27.005/27.007 in PDU mode), so that the modem driver, the escalation chain and the gateway's
fallback can be practised and tested without a module, a SIM or a network.

    onekey vmodem run --dir DIR      # prints: virtual modem on DIR/ttyV0 (/dev/pts/7)

The port to open is the link `DIR/ttyV0` (as /dev/serial/by-id/... names a real module): it
points at the current pty, vanishes when the modem is unplugged and comes back, pointing at a
new pty, when it is plugged in again.

What it does, as a module with a SIM on a network would:
- echo on until `ATE0`; `OK`, `ERROR`, `+CME ERROR: <n>` (numeric with `AT+CMEE=1`, text with
  `=2`, plain `ERROR` with `=0`), `+CMS ERROR: <n>`;
- `AT+CMGS=<len>`, the `> ` prompt, the PDU and Ctrl-Z (Esc cancels): decodes the SMS-SUBMIT,
  answers `+CMGS: <mr>`, and records each whole message (parts joined) as one JSON line in
  `DIR/sent.jsonl`: {"to", "text", "parts", "refs", "concat_ref", "at"};
- a status report (`+CDS: <len>` and the PDU, with `AT+CNMI=...,1,...`) for each part sent
  with a report requested, after `report_delay` seconds;
- an SMS from a contact (`inject_sms`, or `onekey vmodem send-reply`) is stored on the "SIM"
  and announced with `+CMTI: "SM",<index>`; `AT+CMGR`, `AT+CMGL`, `AT+CMGD` read, list, delete;
- at plug-in the boot notices `RDY`, `+CPIN: READY`, `SMS DONE`, `PB DONE`.

Faults (`fault(...)`, or `onekey vmodem fault`): no network (`+CREG: 0,2`, `+CSQ: 99,99`,
sends fail `+CMS ERROR: 331`), SIM missing (`+CME ERROR: 10`, sends `+CMS ERROR: 310`),
`+CMS ERROR <n>` on the next N sends, slow answers (every response delayed), delivery reports
off or failed, garbage lines, unplugged (the pty closed, the link removed) and plugged back.

Tests and tools drive a running one through its control socket `DIR/control.sock`: one JSON
request line in, one JSON reply line back (`control(dir, {...})`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path
from typing import Any

from modem import pdu

LINK = "ttyV0"
CONTROL = "control.sock"
SENT = "sent.jsonl"
INFO = "vmodem.json"
SLOTS = 30  # a SIM's message storage
CHINA = dt.timezone(dt.timedelta(hours=8))
CME_TEXT = {10: "SIM not inserted", 3: "operation not allowed", 4: "operation not supported"}
BOOT_NOTICES = b"\r\nRDY\r\n\r\n+CPIN: READY\r\n\r\nSMS DONE\r\n\r\nPB DONE\r\n"
GARBAGE = [b"\x00\xff\xfe~~\x07", b"+QWEIRD: 1,2,3", b"NO DIALTONE??", b"\xe4\xb8\xad\x01\x02",
           b"AT+BOGUS!!", b"+CMTI: broken"]


class VModemError(Exception):
    """The virtual modem is not running or refused a control request."""


def _nonblocking(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


class VirtualModem:
    """The constructor does no I/O; `start()` opens the port; `serve()` answers until
    `request_stop()`. Public methods may be called from other threads."""

    def __init__(self, directory: Path, *, report_delay: float = 0.2) -> None:
        self.dir = Path(directory).resolve()
        self.link = self.dir / LINK
        self.report_delay = report_delay
        self.pty = ""
        self._master = -1
        self._slave = -1
        self._listener: socket.socket | None = None
        self._lock = threading.RLock()
        self._stopping = False
        self._out: list[tuple[float, bytes]] = []
        self._timers: list[tuple[float, bytes]] = []  # delivery reports, each on its own time
        self._inbuf = bytearray()
        self._pdu_mode: int | None = None  # the length given to AT+CMGS while in PDU input
        self._mr = 0
        self._storage: dict[int, tuple[str, str]] = {}  # index -> (status, pdu hex)
        self._assembling: dict[tuple[str, int, int], dict[int, tuple[str, int]]] = {}
        self._next_ref = 1
        # faults
        self.network = True
        self.sim = True
        self.cms_code = 0
        self.cms_count = 0
        self.delay = 0.0
        self.reports = "on"  # on | off | fail
        self.plugged = False
        self._reset_settings()

    def _reset_settings(self) -> None:
        self.echo = True
        self.cmee = 0
        self.cmgf = 0
        self.cnmi_mt = 0
        self.cnmi_ds = 0

    # -- set-up

    def start(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        sock_path = self.dir / CONTROL
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(sock_path))
        self._listener.listen(8)
        self._plug(boot_notices=False)
        self._write_info()
        return str(self.link)

    def _write_info(self) -> None:
        info = {"port": str(self.link), "pty": self.pty, "pid": os.getpid(), "dir": str(self.dir),
                "control": str(self.dir / CONTROL), "plugged": self.plugged}
        tmp = self.dir / (INFO + ".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(self.dir / INFO)

    def _plug(self, *, boot_notices: bool = True) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        _nonblocking(self._master)
        self.pty = os.ttyname(self._slave)
        tmp = self.dir / (LINK + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(self.pty)
        tmp.replace(self.link)
        self.plugged = True
        self._reset_settings()
        self._inbuf.clear()
        self._pdu_mode = None
        self._out.clear()
        if boot_notices:
            self._send(BOOT_NOTICES, delayed=False)

    def _unplug(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1
        self.plugged = False
        self._out.clear()
        self._timers.clear()

    # -- output

    def _send(self, data: bytes, *, delayed: bool = True) -> None:
        now = time.monotonic()
        due = now + (self.delay if delayed else 0.0)
        if self._out:
            due = max(due, self._out[-1][0])  # keep the order of what the module says
        self._out.append((due, data))

    def _respond(self, *lines: str, final: str = "OK") -> None:
        body = b"".join(b"\r\n" + ln.encode() + b"\r\n" for ln in lines)
        self._send(body + b"\r\n" + final.encode() + b"\r\n")

    def _cme(self, code: int) -> None:
        if self.cmee == 0:
            self._respond(final="ERROR")
        elif self.cmee == 2:
            self._respond(final=f"+CME ERROR: {CME_TEXT.get(code, 'unknown')}")
        else:
            self._respond(final=f"+CME ERROR: {code}")

    def _cms(self, code: int) -> None:
        self._respond(final="ERROR" if self.cmee == 0 else f"+CMS ERROR: {code}")

    def _flush(self) -> None:
        now = time.monotonic()
        for item in [t for t in self._timers if t[0] <= now]:
            self._timers.remove(item)
            self._out.append((now, item[1]) if not self._out else (self._out[-1][0], item[1]))
        while self._out and self._out[0][0] <= now and self._master >= 0:
            _, data = self._out.pop(0)
            # Nobody reading: the pty fills and the rest is dropped, as a UART would.
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._master, data)

    # -- input

    def _from_port(self, data: bytes) -> None:
        for byte in data:
            ch = bytes([byte])
            if self._pdu_mode is not None:
                if self.echo:
                    self._send(ch, delayed=False)
                if ch == b"\x1a":
                    self._submit(self._pdu_mode, self._inbuf.decode("ascii", "replace").strip())
                    self._inbuf.clear()
                    self._pdu_mode = None
                elif ch == b"\x1b":
                    self._inbuf.clear()
                    self._pdu_mode = None
                    self._respond()
                else:
                    self._inbuf += ch
                continue
            if self.echo:
                self._send(ch, delayed=False)
            if ch == b"\r":
                line = self._inbuf.decode("ascii", "replace").strip()
                self._inbuf.clear()
                if line:
                    self._command(line)
            elif ch != b"\n":
                self._inbuf += ch
                if len(self._inbuf) > 1024:
                    self._inbuf.clear()

    def _command(self, line: str) -> None:
        up = line.upper()
        if not up.startswith("AT"):
            self._respond(final="ERROR")
            return
        cmd = up[2:]
        if cmd == "":
            self._respond()
        elif cmd in ("E0", "E1"):
            self.echo = cmd == "E1"
            self._respond()
        elif cmd.startswith("+CMEE="):
            self.cmee = int(cmd[6:] or 0) if cmd[6:].isdigit() else 0
            self._respond()
        elif cmd == "+CPIN?":
            if self.sim:
                self._respond("+CPIN: READY")
            else:
                self._cme(10)
        elif cmd in ("+CREG?", "+CEREG?", "+CGREG?"):
            stat = 1 if (self.network and self.sim) else (2 if self.sim else 0)
            self._respond(f"{cmd[:-1]}: 0,{stat}")
        elif cmd == "+CSQ":
            self._respond("+CSQ: 21,99" if (self.network and self.sim) else "+CSQ: 99,99")
        elif cmd.startswith("+CMGF="):
            self.cmgf = 1 if cmd.endswith("1") else 0
            self._respond()
        elif cmd.startswith("+CNMI="):
            vals = (cmd[6:].split(",") + ["0"] * 5)[:5]
            try:
                self.cnmi_mt, self.cnmi_ds = int(vals[1] or 0), int(vals[3] or 0)
            except ValueError:
                self._cms(303)
                return
            self._respond()
        elif cmd.startswith("+CPMS"):
            used = len(self._storage)
            self._respond(f"+CPMS: {used},{SLOTS},{used},{SLOTS},{used},{SLOTS}")
        elif cmd.startswith("+CMGS="):
            self._cmgs(cmd[6:])
        elif cmd.startswith("+CMGR="):
            self._cmgr(cmd[6:])
        elif cmd.startswith("+CMGD="):
            with contextlib.suppress(ValueError):
                self._storage.pop(int(cmd[6:].split(",")[0]), None)
            self._respond()
        elif cmd.startswith("+CMGL"):
            lines = []
            for idx in sorted(self._storage):
                status, hx = self._storage[idx]
                lines += [f"+CMGL: {idx},{status},,{pdu.tpdu_length(hx)}", hx]
                self._storage[idx] = ("1", hx)
            self._respond(*lines)
        elif cmd in ("I", "+CGMM", "+GMM"):
            self._respond("SIMCOM_SIM7600G-H (virtual)")
        else:
            self._respond(final="ERROR")

    def _cmgs(self, arg: str) -> None:
        if not self.sim:
            self._cms(310)
            return
        if self.cmgf != 0 or not arg.isdigit():
            self._cms(304 if self.cmgf == 0 else 305)
            return
        self._pdu_mode = int(arg)
        self._send(b"\r\n> ")

    def _submit(self, length: int, hx: str) -> None:
        try:
            if pdu.tpdu_length(hx) != length:
                raise pdu.PduError(f"length {length} but the PDU has {pdu.tpdu_length(hx)} octets")
            msg = pdu.decode(hx)
            if not isinstance(msg, pdu.Submit):
                raise pdu.PduError("not an SMS-SUBMIT")
        except (pdu.PduError, ValueError, IndexError):
            self._cms(304)
            return
        if not self.network:
            self._cms(331)
            return
        if self.cms_count > 0:
            self.cms_count -= 1
            self._cms(self.cms_code)
            return
        self._mr = (self._mr + 1) % 256
        mr = self._mr
        self._respond(f"+CMGS: {mr}")
        self._record(msg, mr)
        if msg.status_report and self.cnmi_ds == 1 and self.reports != "off":
            status = 0x00 if self.reports == "on" else 0x41  # incompatible destination
            now = dt.datetime.now(CHINA).replace(microsecond=0)
            report = pdu.encode_status_report(mr, msg.number, status, now, now)
            self._timers.append((time.monotonic() + self.report_delay,
                                 f"\r\n+CDS: {pdu.tpdu_length(report)}\r\n{report}\r\n".encode()))

    def _record(self, msg: pdu.Submit, mr: int) -> None:
        at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        if msg.concat is None or msg.concat.total <= 1:
            row = {"to": msg.number, "text": msg.text, "parts": 1, "refs": [mr], "concat_ref": None, "at": at}
        else:
            key = (msg.number, msg.concat.ref, msg.concat.total)
            parts = self._assembling.setdefault(key, {})
            parts[msg.concat.seq] = (msg.text, mr)
            if len(parts) < msg.concat.total:
                return
            del self._assembling[key]
            order = sorted(parts)
            row = {"to": msg.number, "text": "".join(parts[i][0] for i in order), "parts": len(order),
                   "refs": [parts[i][1] for i in order], "concat_ref": msg.concat.ref, "at": at}
        with open(self.dir / SENT, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def _cmgr(self, arg: str) -> None:
        try:
            idx = int(arg)
        except ValueError:
            self._cms(321)
            return
        if idx not in self._storage:
            self._cms(321)
            return
        status, hx = self._storage[idx]
        self._storage[idx] = ("1", hx)
        self._respond(f"+CMGR: {status},,{pdu.tpdu_length(hx)}", hx)

    # -- what tests and tools ask for

    def inject_sms(self, sender: str, text: str, parts: int | None = None) -> list[int]:
        """An SMS from `sender` arrives: stored and announced; `parts` forces a split into that
        many concatenated parts (else split only when it does not fit one message)."""
        with self._lock:
            if parts is None or parts <= 1:
                _, chunks = pdu.split_text(text)
            else:
                size = -(-len(text) // parts)
                chunks = [text[i : i + size] for i in range(0, len(text), size)]
            now = dt.datetime.now(CHINA).replace(microsecond=0)
            ref = self._next_ref
            self._next_ref = self._next_ref % 255 + 1
            indexes = []
            for seq, chunk in enumerate(chunks, start=1):
                concat = pdu.Concat(ref, len(chunks), seq) if len(chunks) > 1 else None
                hx = pdu.encode_deliver(sender, chunk, now, concat=concat)
                if self.cnmi_mt == 2:
                    self._send(f"\r\n+CMT: ,{pdu.tpdu_length(hx)}\r\n{hx}\r\n".encode(), delayed=False)
                    continue
                free = next((i for i in range(SLOTS) if i not in self._storage), None)
                if free is None:
                    raise VModemError("the virtual SIM's message storage is full")
                self._storage[free] = ("0", hx)
                indexes.append(free)
                if self.cnmi_mt == 1:
                    self._send(f'\r\n+CMTI: "SM",{free}\r\n'.encode(), delayed=False)
            return indexes

    def fault(self, **kw: Any) -> dict[str, Any]:
        """network="none"|"ok", sim="missing"|"present", cms=<code> with count=<n>,
        delay=<seconds>, reports="on"|"off"|"fail", garbage=<lines now>, unplug=True, plug=True."""
        with self._lock:
            if "network" in kw:
                self.network = kw["network"] != "none"
            if "sim" in kw:
                self.sim = kw["sim"] != "missing"
            if "cms" in kw:
                self.cms_code = int(kw["cms"])
                self.cms_count = int(kw.get("count") or 1)
            if "delay" in kw:
                self.delay = float(kw["delay"])
            if "reports" in kw:
                if kw["reports"] not in ("on", "off", "fail"):
                    raise VModemError(f"reports must be on, off or fail, not {kw['reports']!r}")
                self.reports = kw["reports"]
            if kw.get("garbage"):
                for i in range(int(kw["garbage"])):
                    self._send(b"\r\n" + GARBAGE[i % len(GARBAGE)] + b"\r\n", delayed=False)
            if kw.get("unplug") and self.plugged:
                self._unplug()
                self._write_info()
            if kw.get("plug") and not self.plugged:
                self._plug()
                self._write_info()
            return self.status()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"port": str(self.link), "pty": self.pty, "plugged": self.plugged,
                    "network": "ok" if self.network else "none", "sim": "present" if self.sim else "missing",
                    "cms": self.cms_code if self.cms_count else None, "cms_count": self.cms_count,
                    "delay": self.delay, "reports": self.reports, "stored": sorted(self._storage),
                    "echo": self.echo, "pdu_input": self._pdu_mode is not None}

    def sent(self) -> list[dict[str, Any]]:
        return read_sent(self.dir)

    # -- the loop

    def _control(self, conn: socket.socket) -> None:
        conn.settimeout(2.0)
        with conn, conn.makefile("rwb") as f:
            try:
                req = json.loads(f.readline() or b"{}")
                cmd = req.pop("cmd", "")
                if cmd == "reply":
                    reply: dict[str, Any] = {"ok": True, "indexes": self.inject_sms(
                        str(req["from"]), str(req["text"]), req.get("parts"))}
                elif cmd == "fault":
                    reply = {"ok": True, "status": self.fault(**req)}
                elif cmd == "status":
                    reply = {"ok": True, "status": self.status()}
                else:
                    reply = {"ok": False, "error": f"unknown command {cmd!r}: reply, fault or status"}
            except (ValueError, KeyError, TypeError, pdu.PduError, VModemError) as exc:
                reply = {"ok": False, "error": str(exc)}
            with contextlib.suppress(OSError):
                f.write(json.dumps(reply, ensure_ascii=False).encode() + b"\n")
                f.flush()

    def step(self, timeout: float = 0.05) -> None:
        with self._lock:
            fds = [fd for fd in (self._master,) if fd >= 0]
            for queue in (self._out, self._timers):
                if queue:
                    timeout = max(0.0, min(timeout, min(t for t, _ in queue) - time.monotonic()))
        listener = self._listener
        rlist: list[Any] = [*fds, listener] if listener is not None else fds
        try:
            ready, _, _ = select.select(rlist, [], [], timeout)
        except (OSError, ValueError):
            return  # a descriptor closed under us by unplug: next turn
        if listener is not None and listener in ready:
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                self._control(conn)
        with self._lock:
            if self._master >= 0 and self._master in ready:
                try:
                    data = os.read(self._master, 4096)
                except (BlockingIOError, OSError):
                    data = b""
                if data:
                    self._from_port(data)
            self._flush()

    def serve(self) -> None:
        while not self._stopping:
            self.step()

    def request_stop(self) -> None:
        self._stopping = True

    def stop(self) -> None:
        self._stopping = True
        with self._lock:
            self._unplug()
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            with contextlib.suppress(FileNotFoundError):
                (self.dir / CONTROL).unlink()


def read_sent(directory: Path) -> list[dict[str, Any]]:
    """The messages a virtual modem in `directory` sent, oldest first."""
    path = Path(directory) / SENT
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def control(directory: Path, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Sends one request to the virtual modem running in `directory`; returns its reply."""
    path = Path(directory) / CONTROL
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(json.dumps(request, ensure_ascii=False).encode() + b"\n")
            with s.makefile("rb") as f:
                line = f.readline()
    except OSError as exc:
        raise VModemError(f"no virtual modem answers at {path} ({exc}): start one with "
                          f"`onekey vmodem run --dir {directory}`") from None
    reply: dict[str, Any] = json.loads(line or b"{}")
    if not reply.get("ok"):
        raise VModemError(f"virtual modem refused {request.get('cmd')}: {reply.get('error', 'no reply')}")
    return reply


class VModemProcess:
    """`onekey vmodem run` as a child process, for tests and the demo."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory).resolve()
        self.port = str(self.dir / LINK)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "vmodem.log", "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "onekey.cli", "vmodem", "run", "--dir", str(self.dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise VModemError(f"onekey vmodem exited ({self._proc.returncode}); "
                                  f"see {self.dir}/vmodem.log")
            with contextlib.suppress(OSError, ValueError, KeyError):
                info = json.loads((self.dir / INFO).read_text())
                if info["pid"] == self._proc.pid and (self.dir / CONTROL).exists():
                    return self.port
            if time.monotonic() > deadline:
                self.stop()
                raise VModemError(f"onekey vmodem did not start within {timeout:g} s; "
                                  f"see {self.dir}/vmodem.log")
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout)
        self._proc = None
