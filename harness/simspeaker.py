"""Simulated broadcast speakers: the real firmware (device_fw/) on the MicroPython unix port,
with `"role": "speaker"` and the simulated HAL (a TTS module that takes real time to speak).

A `SimSpeaker` owns one device: its flash directory (config.json, the counters, the queued
broadcasts, and for the simulation played.log, tts.log and device.log) and one `micropython`
process, started exactly as a simulated button's (harness.simdevice):

    cd FLASH_DIR && MICROPYPATH=DEVICE_FW:.frozen micropython -X heapsize=128K DEVICE_FW/main.py

A speaker gets 128K where a button gets 96K: it holds a 3.4 KB frame buffer, checks frames that
size, and has more code. On the 64-bit unix port the largest frames need 104K (docs/firmware.md,
Heap; a board's figures come from the 32-bit build).

It is driven through the firmware's control channel on 127.0.0.1:<sim_port> (see
device_fw/hal_sim.py): `status`, `played`, `net on|off`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.simdevice import SimButton, button_config
from provisioning.simcontrol import SimDeviceError

SPEAKER_HEAPSIZE = "128K"
SYNTHESISE = 0x01
STOP = 0x02
STATUS_QUERY = 0x21


@dataclass(frozen=True)
class TtsFrame:
    """One frame the firmware sent to the simulated TTS module (a line of tts.log)."""

    ticks_ms: int  # the device's ticks when it was sent
    cmd: int  # SYNTHESISE, STOP, STATUS_QUERY; -1 for bytes that were not a frame
    frame: bytes

    @property
    def text(self) -> str | None:
        """The text of a synthesis frame (0xFD, length, 0x01, 0x03, UTF-16LE text)."""
        if self.cmd != SYNTHESISE or len(self.frame) < 5 or self.frame[4] != 0x03:
            return None
        return self.frame[5:].decode("utf-16-le", errors="replace")


def speaker_config(
    device_id: str,
    key_hex: str,
    mqtt_host: str,
    mqtt_port: int,
    sim_port: int,
    *,
    user: str | None = None,
    password: str | None = None,
    village: str | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """A config.json for a simulated speaker; `settings` adds or overrides top-level fields
    (hb_interval_s, keepalive_s, queue_cap, sim_ms_per_char, sim_min_speak_ms, ...)."""
    cfg = button_config(device_id, key_hex, mqtt_host, mqtt_port, sim_port, user=user, password=password)
    cfg["role"] = "speaker"
    if village is not None:
        cfg["village"] = village
    cfg.update(settings)
    return cfg


class SimSpeaker:
    """One simulated speaker. The constructor does no I/O; `write_config()` and `start()` do.

    `key` is the device key (32 bytes, or 64 hex digits); the speaker logs in to the broker
    as `device_id` with `password`. `settings` go to config.json (see `speaker_config`).
    """

    def __init__(
        self,
        flash_dir: Path,
        device_id: str,
        key: bytes | str,
        mqtt_host: str,
        mqtt_port: int,
        password: str | None,
        village: str | None = None,
        *,
        heapsize: str = SPEAKER_HEAPSIZE,
        micropython: str | None = None,
        firmware: Path | None = None,
        env: dict[str, str] | None = None,
        **settings: Any,
    ) -> None:
        key_hex = key.hex() if isinstance(key, bytes) else key
        if len(key_hex) != 64:
            raise SimDeviceError(f"{device_id}: the device key must be 32 bytes (64 hex digits)")
        self.device_id = device_id
        self.flash_dir = Path(flash_dir)
        settings.setdefault("sim_port", 0)  # 0: write_config() picks a free port
        cfg = speaker_config(
            device_id,
            key_hex,
            mqtt_host,
            mqtt_port,
            settings.pop("sim_port"),
            user=device_id,
            password=password,
            village=village,
            **settings,
        )
        # Starting, stopping and the control channel are a simulated button's (only its press
        # and test commands do not apply: the firmware refuses them).
        self._dev = SimButton(
            device_id, self.flash_dir, cfg, heapsize=heapsize, micropython=micropython, firmware=firmware,
            env=env,
        )  # fmt: skip

    # -- files and process

    @property
    def config(self) -> dict[str, Any]:
        return self._dev.config

    @property
    def heapsize(self) -> str:
        return self._dev.heapsize

    @property
    def log_path(self) -> Path:
        return self._dev.log_path

    @property
    def played_path(self) -> Path:
        return self.flash_dir / "played.log"

    @property
    def tts_log_path(self) -> Path:
        return self.flash_dir / "tts.log"

    @property
    def control_port(self) -> int:
        return self._dev.control_port

    @property
    def pid(self) -> int | None:
        return self._dev.pid

    @property
    def running(self) -> bool:
        return self._dev.running

    def write_config(self) -> None:
        """Writes config.json into the flash directory (with a free control port if none)."""
        self._dev.write_config()

    def command(self) -> list[str]:
        return self._dev.command()

    def log_tail(self, lines: int = 30) -> str:
        return self._dev.log_tail(lines)

    def start(self, timeout: float = 15.0) -> None:
        """Installs the firmware image, starts it (writing config.json first if there is
        none) and returns once its control port answers."""
        self._dev.start(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM; SIGKILL if the process is still there after `timeout` seconds."""
        self._dev.stop(timeout)

    def kill(self) -> None:
        """A power cut: SIGKILL, nothing is flushed or closed."""
        self._dev.kill()

    def __enter__(self) -> SimSpeaker:
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
        return self._dev.send(line, timeout)

    def set_network(self, up: bool) -> None:
        """Connects or cuts the simulated Wi-Fi."""
        self._dev.set_network(up)

    def status(self) -> dict[str, Any]:
        """The firmware's status: playing, queue, bcs (id -> state), bc_counter, clock, ..."""
        return self._dev.status()

    def played(self) -> list[dict[str, Any]]:
        """The played log, oldest first: {"id", "clip", "text", "pri", "at", "result"} each."""
        reply = self.send("played")
        try:
            data = json.loads(reply)
        except ValueError:
            raise SimDeviceError(f"bad played log from {self.device_id}: {reply[:200]}") from None
        if not isinstance(data, list):
            raise SimDeviceError(f"bad played log from {self.device_id}: {reply[:200]}")
        return data

    def tts_frames(self) -> list[TtsFrame]:
        """Every frame the firmware wrote to the simulated TTS module (tts.log), in order."""
        try:
            lines = self.tts_log_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            parts = line.split()
            if len(parts) == 3:
                out.append(TtsFrame(int(parts[0]), int(parts[1]), bytes.fromhex(parts[2])))
        return out

    def spoken(self) -> list[str]:
        """The text of every synthesis frame, in order."""
        return [f.text for f in self.tts_frames() if f.text is not None]

    def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 10.0,
        interval: float = 0.05,
    ) -> dict[str, Any]:
        """Polls the status until `predicate(status)` is true; returns that status, or raises
        TimeoutError (with the last status) after `timeout` seconds."""
        return self._dev.wait_for(predicate, timeout, interval)

    def wait_state(self, bc_id: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        """Waits until the speaker's state for broadcast `bc_id` is `state`."""
        return self.wait_for(lambda st: st["bcs"].get(bc_id) == state, timeout)
