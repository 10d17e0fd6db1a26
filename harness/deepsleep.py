"""Deep sleep of a simulated battery button, as the ESP32 does it.

On the board, `machine.deepsleep(ms)` powers the chip down: RAM is lost, and the chip boots from
main.py again when the timer runs out or the button pin (ext0) is pulled low. The simulated HAL
does the same on the unix port: `deep_sleep()` writes `sleep.json` ({"ms", "awake_ms"}) and the
process exits with code SLEEP_EXIT. `SleepKeeper` (one thread per battery button) then plays
the sleeping chip: it answers the device's control port itself (`status` says it sleeps; `press
<ms>` is the button that wakes it), and starts the firmware again, with `wake.json` saying why
({"reason": "timer" | "button", "hold_ms"}), when the timer runs out or the button is pressed.
So tests, the demo and `onekey sim` drive a sleeping button exactly as an awake one, and the
firmware runs the same boot path as on the board.

Every sleep is recorded (`SleepKeeper.sleeps`): how long the firmware was awake by its own clock
and by the wall clock (process start to exit, including the interpreter's start and compiling
the firmware from source, which a board with frozen modules does not do).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provisioning.simcontrol import CONTROL_HOST

SLEEP_EXIT = 3  # device_fw/sim_sleep.py SLEEP_EXIT
SLEEP_FILE = "sleep.json"
WAKE_FILE = "wake.json"
_BOOT_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Sleep:
    ms: int  # asked for
    awake_ms: int  # by the firmware's clock, from its start to the sleep
    wall_awake_s: float  # process start to exit
    slept_s: float = 0.0  # filled in at the wake
    woke_by: str = ""  # "timer" or "button"


class SleepKeeper:
    """Watches one battery button's process; `spawn()` starts a process and returns it once the
    control port answers (SimButton's own start logic)."""

    def __init__(
        self,
        flash_dir: Path,
        port: int,
        device_id: str,
        spawn: Callable[[], subprocess.Popen[bytes]],
    ) -> None:
        self.flash_dir = flash_dir
        self.port = port
        self.device_id = device_id
        self._spawn = spawn
        self.proc: subprocess.Popen[bytes] | None = None
        self.sleeps: list[Sleep] = []
        self.asleep = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = 0.0
        self.lock = threading.Lock()

    def start(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name=f"sleep-{self.device_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        self._thread = None

    # -- the thread

    def _watch(self) -> None:
        while not self._stop.is_set():
            proc = self.proc
            if proc is None:
                return
            while proc.poll() is None:
                if self._stop.wait(0.05):
                    return
            if proc.returncode != SLEEP_EXIT:
                return  # stopped, killed or crashed: not a sleep
            wall = time.monotonic() - self._started_at
            try:
                info = json.loads((self.flash_dir / SLEEP_FILE).read_text())
                (self.flash_dir / SLEEP_FILE).unlink()
            except (OSError, ValueError):
                return
            ms, awake = int(info["ms"]), int(info["awake_ms"])
            self.asleep = True
            slept_from = time.monotonic()
            reason, hold_ms, reply = self._sleep(ms / 1000)
            if reason is None:
                self.asleep = False
                return
            self.sleeps.append(Sleep(ms, awake, wall, time.monotonic() - slept_from, reason))
            (self.flash_dir / WAKE_FILE).write_text(json.dumps({"reason": reason, "hold_ms": hold_ms}))
            with self.lock:
                if self._stop.is_set():
                    return
                self._started_at = time.monotonic()
                try:
                    self.proc = self._spawn()
                finally:
                    self.asleep = False
            if reply is not None:
                with contextlib.suppress(OSError):
                    reply.sendall(b"ok\n")
                reply.close()

    def _sleep(self, seconds: float) -> tuple[str | None, int, socket.socket | None]:
        """Serves the control port until the timer runs out (("timer", 0, None)) or a press
        arrives (("button", ms, the connection to answer once awake)); (None, ...) if stopped."""
        deadline = time.monotonic() + seconds
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            for _ in range(100):  # the firmware's listening socket may linger a moment
                try:
                    srv.bind((CONTROL_HOST, self.port))
                    break
                except OSError:
                    time.sleep(0.02)
            srv.listen(8)
            srv.settimeout(0.05)
            while not self._stop.is_set():
                if time.monotonic() >= deadline:
                    return "timer", 0, None
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    continue
                woke = self._answer(conn, deadline)
                if woke is not None:
                    return "button", woke, conn
            return None, 0, None
        finally:
            srv.close()

    def _answer(self, conn: socket.socket, deadline: float) -> int | None:
        """Answers one connection's lines while asleep; a `press <ms>` returns ms (the caller
        replies once the firmware is up)."""
        conn.settimeout(0.5)
        buf = b""
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                chunk = conn.recv(256)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                words = line.decode(errors="replace").split()
                if words[:1] == ["press"]:
                    try:
                        return max(1, int(words[1])) if len(words) > 1 else 150
                    except ValueError:
                        reply = "error bad number"
                elif words[:1] == ["status"]:
                    reply = json.dumps({
                        "id": self.device_id, "role": "button", "asleep": True,
                        "sleeps": len(self.sleeps) + 1,
                        "wakes_in_ms": max(0, int((deadline - time.monotonic()) * 1000)),
                    })
                else:
                    reply = "error asleep: only status and press answer while the button sleeps"
                try:
                    conn.sendall(reply.encode() + b"\n")
                except OSError:
                    break
        conn.close()
        return None
