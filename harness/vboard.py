"""A virtual board: the MicroPython unix port behind a pseudo-terminal, as an ESP32 sits
behind its USB serial port, so that provisioning can be practised and tested without one.

    onekey vboard --dir DIR          # prints: virtual board vb1 (unique id ...) on /dev/pts/7

Layout of DIR: `flash/` is the board's file system (the interpreter's working directory, where
provisioning writes the firmware and config.json), `rom/machine.py` gives the unix port what
the firmware and provisioning read from `machine` on a board (`unique_id()`, `reset()`),
`console.log` keeps everything the board printed, `board.json` its id and port.

The serial port is one pty (the technician's side); the interpreter runs on a second pty, and
this process relays bytes between them. The relay is what makes the unix port behave like a
board where it does not by itself:

- A soft reset (Ctrl-D) ends the unix port's process. The relay prints `MPY: soft reboot` and
  starts it again on the same port: into the raw REPL if it was in the raw REPL (as a board
  stays there), else booting `main.py` from the flash, as a board does.
- `machine.reset()` (exit code 3 from rom/machine.py) is a hard reset: `main.py` runs.
- When `main.py` ends (or exits), the REPL takes over, as on a board.
- Ctrl-C while `main.py` runs raises KeyboardInterrupt in it (the interpreter's pty sends
  SIGINT), and the REPL follows, as on a board.
- With no program reading the port, what the board prints is dropped, as by a UART.

The interpreter always runs with `-X heapsize=96K` (an ESP32-sized heap) by default.

`--frozen` makes it a plain ESP32 flashed with an image that has the firmware frozen in: the
interpreter is the 32-bit unix port built with the firmware's modules and the stamped
fwversion.py frozen, and MicroPython's raw REPL (`harness/port32.py`, `frozen_port32(repl=True)`,
the tree provisioning's
`freeze_tree` writes; about 25 s the first time, then cached), with the 56K heap of a plain
ESP32. Its `sys.path` has '.frozen' after the flash, as a board's has after '', so module files
on the flash shadow the frozen ones there too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import select
import signal
import subprocess
import termios
import threading
import time
import tty
from pathlib import Path
from typing import BinaryIO

from harness.port32 import ESP32_HEAPSIZE, frozen_port32
from harness.simdevice import micropython_binary
from provisioning.simcontrol import registry_dir

RAW_MARK = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_PROMPT = b">>> "
EXIT_HARD_RESET = 3
DEFAULT_HEAPSIZE = "96K"
# A board that keeps dying at boot must not spin: wait this long between fast restarts.
FAST_EXIT_S = 0.5
RESTART_BACKOFF_S = 1.0
CONSOLE_LOG_MAX = 4_000_000

_SHIM = '''\
# onekey vboard: what the firmware and provisioning take from `machine` on a board.
import sys

VIRTUAL = True
_UID = bytes.fromhex("{uid}")


def unique_id():
    return _UID


def reset():
    # A hard reset: the vboard starts the interpreter again and runs main.py.
    sys.exit({hard})


def soft_reset():
    sys.exit(0)
'''


def _set_nonblocking(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


class _Interpreter:
    """One unix-port process on its own pty, in its own session, with that pty as its
    controlling terminal so that Ctrl-C (with ISIG on) becomes SIGINT, as on a board."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[3] |= termios.ISIG
        termios.tcsetattr(slave, termios.TCSANOW, attrs)

        def controlling_tty() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        try:
            self.proc = subprocess.Popen(
                argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                preexec_fn=controlling_tty, close_fds=True,
            )
        finally:
            os.close(slave)
        _set_nonblocking(master)
        self.fd = master
        self.started = time.monotonic()
        self.got_input = False  # the technician sent it something

    def read(self) -> bytes | None:
        """Output, b"" if none now, None once the process has closed its terminal."""
        try:
            return os.read(self.fd, 4096)
        except BlockingIOError:
            return b""
        except OSError:
            return None

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(self.fd, data)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        with contextlib.suppress(OSError):
            os.close(self.fd)


class VirtualBoard:
    """The constructor does no I/O; `start()` opens the port and boots the board; `serve()`
    relays until `stop()` (or a signal) ends it."""

    def __init__(
        self,
        directory: Path,
        *,
        name: str = "vb1",
        uid: str | None = None,
        heapsize: str | None = None,
        micropython: str | None = None,
        frozen: bool = False,
    ) -> None:
        self.dir = Path(directory).resolve()
        self.name = name
        self._uid = uid
        self.frozen = frozen
        self.heapsize = heapsize or (ESP32_HEAPSIZE if frozen else DEFAULT_HEAPSIZE)
        self.micropython = micropython
        self.flash = self.dir / "flash"
        self.rom = self.dir / "rom"
        self.port = ""
        self._master = -1
        self._slave = -1
        self._interp: _Interpreter | None = None
        self._raw = False
        self._auto_raw = False  # restarting into the raw REPL: hold output until its prompt
        self._held = bytearray()  # board output held during that
        self._pending = bytearray()  # technician's input that arrived while restarting
        self._sent_ctrl_a = False
        self._tail = b""
        self._fast_exits = 0
        self._stopping = False
        self._served = threading.Event()
        self._served.set()  # not serving
        self._log: BinaryIO | None = None

    @property
    def uid(self) -> str:
        assert self._uid is not None, "start() first"
        return self._uid

    # -- set-up

    def _prepare(self) -> None:
        self.flash.mkdir(parents=True, exist_ok=True)
        self.rom.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "board.json"
        if self._uid is None and meta.exists():
            with contextlib.suppress(OSError, ValueError, KeyError):
                self._uid = str(json.loads(meta.read_text())["uid"])
        if self._uid is None:
            # Like an ESP32's: six bytes (its Wi-Fi MAC), here locally administered.
            self._uid = "02" + secrets.token_hex(5)
        bytes.fromhex(self._uid)  # a bad --uid fails here
        (self.rom / "machine.py").write_text(_SHIM.format(uid=self._uid, hard=EXIT_HARD_RESET))

    def start(self) -> str:
        self._prepare()
        if self.frozen and self.micropython is None:
            self.micropython = str(frozen_port32(repl=True))
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing: bytes pass as on a UART
        _set_nonblocking(self._master)
        self.port = os.ttyname(self._slave)
        self._log = open(self.dir / "console.log", "ab")  # closed in stop()
        self._boot(run_main=True)
        info = {"name": self.name, "port": self.port, "pid": os.getpid(), "dir": str(self.dir),
                "uid": self._uid}
        (self.dir / "board.json").write_text(json.dumps({**info, "frozen": self.frozen}, indent=2) + "\n")
        reg = registry_dir()
        reg.mkdir(parents=True, exist_ok=True)
        (reg / f"{self.name}.json").write_text(json.dumps(info) + "\n")
        return self.port

    def _argv(self, run_main: bool) -> list[str]:
        argv = [self.micropython or micropython_binary(), "-X", f"heapsize={self.heapsize}"]
        if run_main and (self.flash / "main.py").is_file():
            argv += ["-i", "main.py"]
        return argv

    def _boot(self, *, run_main: bool, raw: bool = False) -> None:
        env = dict(os.environ)
        # rom first, so that `machine` is the shim; .frozen holds the port's asyncio.
        env["MICROPYPATH"] = f"{self.rom}:.frozen:lib"
        self._interp = _Interpreter(self._argv(run_main), self.flash, env)
        self._raw = False
        self._auto_raw = raw
        self._sent_ctrl_a = False
        self._held.clear()
        self._tail = b""

    # -- relay

    def _to_technician(self, data: bytes) -> None:
        log = self._log
        if log is not None and log.tell() < CONSOLE_LOG_MAX:
            log.write(data)
            log.flush()
        # Nobody reading: the pty fills and the rest is dropped, as a UART would.
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._master, data)

    def _from_board(self, data: bytes) -> None:
        # The raw prompt may arrive split over two reads: look at the end of the last one too.
        seen = self._tail + data
        i = seen.rfind(RAW_MARK)
        self._tail = seen[i + len(RAW_MARK) :][-64:] if i >= 0 else seen[-64:]
        if self._auto_raw:
            self._held += data
            if FRIENDLY_PROMPT in self._held and not self._sent_ctrl_a:
                assert self._interp is not None
                self._interp.write(b"\r\x01")
                self._sent_ctrl_a = True
            at = self._held.find(RAW_MARK)
            if at >= 0:
                self._auto_raw = False
                self._sent_ctrl_a = False
                self._raw = True
                self._to_technician(bytes(self._held[at:]))
                self._held.clear()
                self._release_pending()
            return
        if i >= 0:
            self._raw = True
        self._to_technician(data)

    def _from_technician(self, data: bytes) -> None:
        if self._interp is None or self._auto_raw:
            self._pending += data
            return
        if self._raw and b"\x02" in data:
            self._raw = False
            self._tail = b""
        self._interp.write(data)
        self._interp.got_input = True

    def _release_pending(self) -> None:
        data = bytes(self._pending)
        self._pending.clear()
        if data:
            self._from_technician(data)

    def _restart(self, code: int | None) -> None:
        assert self._interp is not None
        lived = time.monotonic() - self._interp.started
        asked = self._interp.got_input
        was_raw = self._raw
        self._interp.stop()
        self._interp = None
        if self._stopping:
            return
        # A reset the technician asked for (Ctrl-D, machine.reset()) is not a crash loop.
        crashed_fast = lived < FAST_EXIT_S and not asked
        self._fast_exits = self._fast_exits + 1 if crashed_fast else 0
        if self._fast_exits >= 3:
            time.sleep(RESTART_BACKOFF_S)
        if code == 0:
            # Ctrl-D: a soft reset. In the raw REPL a board stays there; else it boots.
            self._to_technician(b"MPY: soft reboot\r\n")
            self._boot(run_main=not was_raw, raw=was_raw)
        elif code == EXIT_HARD_RESET:
            self._to_technician(b"\r\n[vboard] hard reset\r\n")
            self._boot(run_main=True)
        else:
            # main.py ended (an exception, sys.exit) or the interpreter died: the REPL.
            self._boot(run_main=False)
        if not self._auto_raw:
            self._release_pending()

    def step(self, timeout: float = 0.05) -> None:
        """One turn of the relay: move what is there, restart a board that ended."""
        interp = self._interp
        if interp is None:
            return
        ready, _, _ = select.select([self._master, interp.fd], [], [], timeout)
        if self._master in ready:
            with contextlib.suppress(BlockingIOError):
                data = os.read(self._master, 4096)
                if data:
                    self._from_technician(data)
        if interp.fd in ready:
            data_b = interp.read()
            if data_b:
                self._from_board(data_b)
        code = interp.proc.poll()
        if code is not None:
            # Pass on what it printed last, then restart it.
            while (rest := interp.read()):
                self._from_board(rest)
            self._restart(code)

    def serve(self) -> None:
        """Relays until request_stop() or stop() (from a signal handler or another thread)."""
        self._served.clear()
        try:
            while not self._stopping:
                self.step()
        finally:
            self._served.set()

    def request_stop(self) -> None:
        self._stopping = True

    def stop(self) -> None:
        self._stopping = True
        # A relay running in another thread could restart the interpreter after we kill it:
        # let it finish its turn first.
        self._served.wait(2.0)
        if self._interp is not None:
            self._interp.stop()
            self._interp = None
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1
        with contextlib.suppress(OSError):
            (registry_dir() / f"{self.name}.json").unlink()
        if self._log is not None:
            self._log.close()
        self._log = None


class VBoardProcess:
    """`onekey vboard` as a child process: a board that tests can unplug (`kill()`) and plug
    in again (`start()` on the same directory: same unique id, same flash)."""

    def __init__(
        self, directory: Path, *, name: str = "vb1", heapsize: str | None = None, frozen: bool = False
    ) -> None:
        self.dir = Path(directory).resolve()
        self.name = name
        self.frozen = frozen
        self.heapsize = heapsize or (ESP32_HEAPSIZE if frozen else DEFAULT_HEAPSIZE)
        self.port = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> str:
        """Starts it; returns its port once the board is up."""
        import sys

        self.dir.mkdir(parents=True, exist_ok=True)
        # board.json holds the board's unique id, which must outlive a restart (a board keeps
        # its MAC when it is unplugged): it is left in place, and the board is up once the file
        # names the new process.
        meta = self.dir / "board.json"
        argv = [sys.executable, "-m", "onekey.cli", "vboard", "--dir", str(self.dir),
                "--name", self.name, "--heapsize", self.heapsize]
        if self.frozen:
            frozen_port32(repl=True)  # built (once, about 25 s) before the board's start is timed
            argv.append("--frozen")
        with open(self.dir / "vboard.log", "ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"onekey vboard exited ({self._proc.returncode}); see {self.dir}/vboard.log"
                )
            with contextlib.suppress(OSError, ValueError, KeyError):
                info = json.loads(meta.read_text())
                if info["pid"] == self._proc.pid and Path(info["port"]).exists():
                    self.port = str(info["port"])
                    return self.port
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"onekey vboard did not start within {timeout:g} s; see {self.dir}/vboard.log"
                )
            time.sleep(0.02)

    @property
    def flash(self) -> Path:
        return self.dir / "flash"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """Unplugged: the port vanishes at once (SIGKILL; the interpreter gets SIGHUP)."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)
            self._proc = None

    def stop(self, timeout: float = 5.0) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._proc = None
