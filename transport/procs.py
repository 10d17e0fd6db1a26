"""Child processes for tests, the demo and local tools: Mosquitto, MicroPython, gateway, centre.

A `ManagedProcess` runs one command in its own process group (so a signal reaches the
command's children too), with stdout and stderr appended to a log file. Readiness is proved,
never assumed: `wait_port` retries a TCP connect until the process answers, and gives up with
the tail of the log as soon as the process has exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

log = logging.getLogger("onekey.transport.procs")

_POLL_FIRST = 0.005
_POLL_MAX = 0.1


class ProcessError(Exception):
    """A managed process did not start, exited early, or never opened its port."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that was free a moment ago (the kernel picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_taken(host: str, port: int) -> bool:
    """True if something listens on host:port now, so a server could not bind it. The test
    bind uses SO_REUSEADDR as uvicorn and Mosquitto do: a port left in TIME_WAIT is free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if a TCP connect to host:port succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(
    host: str, port: int, timeout: float = 10.0, proc: ManagedProcess | None = None
) -> None:
    """Retry a TCP connect to host:port until it answers.

    Raises ProcessError when `proc` (if given) exits first, TimeoutError after `timeout`.
    """
    deadline = time.monotonic() + timeout
    delay = _POLL_FIRST
    while True:
        if proc is not None and not proc.running:
            raise ProcessError(proc.exit_message(f"exited before {host}:{port} answered"))
        if port_answers(host, port, timeout=max(0.05, min(1.0, deadline - time.monotonic()))):
            return
        if time.monotonic() >= deadline:
            what = f" ({proc.name})" if proc is not None else ""
            raise TimeoutError(f"{host}:{port}{what} did not answer within {timeout:g} s")
        time.sleep(delay)
        delay = min(delay * 2, _POLL_MAX)


async def async_port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def async_wait_port(
    host: str,
    port: int,
    timeout: float = 10.0,
    proc: ManagedProcess | None = None,
) -> None:
    """`wait_port` for use inside an event loop (does not block the loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = _POLL_FIRST
    while True:
        if proc is not None and not proc.running:
            raise ProcessError(proc.exit_message(f"exited before {host}:{port} answered"))
        remaining = deadline - loop.time()
        if await async_port_answers(host, port, timeout=max(0.05, min(1.0, remaining))):
            return
        if loop.time() >= deadline:
            what = f" ({proc.name})" if proc is not None else ""
            raise TimeoutError(f"{host}:{port}{what} did not answer within {timeout:g} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, _POLL_MAX)


class ManagedProcess:
    """One command in its own process group, its output appended to `log_path`.

    The constructor starts nothing; `start()` does. `stop()` is graceful (SIGTERM to the
    group, then SIGKILL after `timeout`); `kill()` is a crash (SIGKILL, no cleanup).
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        if not argv:
            raise ValueError("argv is empty")
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.name = name or Path(self.argv[0]).name
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def start(self) -> None:
        if self.running:
            raise ProcessError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            try:
                self._proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.cwd,
                    env=self.env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ProcessError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from None
        log.info("process=%s event=started pid=%s log=%s", self.name, self._proc.pid, self.log_path)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            # The group leader may have changed its group; signal the process itself.
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    def send_signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the process itself (e.g. SIGHUP to reload)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM to the group, wait up to `timeout`, then SIGKILL. Returns the exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("process=%s event=stop_timeout pid=%s", self.name, self._proc.pid)
                self._signal_group(signal.SIGKILL)
                self._proc.wait()
        else:
            self._signal_group(signal.SIGKILL)  # reap any children left in the group
        log.info("process=%s event=stopped rc=%s", self.name, self._proc.returncode)
        return self._proc.returncode

    def kill(self) -> None:
        """SIGKILL to the whole group, as a crash or power cut would: nothing is saved."""
        if self._proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self._proc.wait()
        log.info("process=%s event=killed pid=%s", self.name, self._proc.pid)

    def wait(self, timeout: float | None = None) -> int:
        if self._proc is None:
            raise ProcessError(f"{self.name} was never started")
        return self._proc.wait(timeout)

    def wait_port(self, host: str, port: int, timeout: float = 10.0) -> None:
        wait_port(host, port, timeout, proc=self)

    async def async_wait_port(
        self,
        host: str,
        port: int,
        timeout: float = 10.0,
    ) -> None:
        await async_wait_port(host, port, timeout, proc=self)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def exit_message(self, what: str) -> str:
        rc = self.returncode
        tail = self.log_tail()
        msg = f"{self.name} {what} (exit code {rc}); log {self.log_path}"
        return f"{msg}:\n{tail}" if tail else msg

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
