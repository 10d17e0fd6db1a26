"""Helpers for the firmware tests: the MicroPython binary, a plain Mosquitto on a free loopback
port, a gateway stand-in that answers simulated buttons, and scripts run on the unix port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import paho.mqtt.client as mqtt
import pytest

from device_fw import okproto
from harness import port32
from harness.simdevice import SimButton, button_config, firmware_dir, micropython_binary

REPO = Path(__file__).resolve().parent.parent
FW_DIR = firmware_dir()
VECTORS = REPO / "docs" / "vectors" / "protocol-v1.json"
STUBS_DIR = REPO / ".venv" / "mpy-stubs"
MYPY_INI = FW_DIR / "mypy.ini"
MOSQUITTO = os.environ.get("ONEKEY_MOSQUITTO", "/usr/sbin/mosquitto")
HOST = "127.0.0.1"
KEY_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
KEY = bytes.fromhex(KEY_HEX)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def run_micropython(
    script: Path,
    *args: str,
    cwd: Path | None = None,
    heapsize: str = "96K",
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Runs a script on the unix port with the firmware on its path."""
    env = dict(os.environ)
    env["MICROPYPATH"] = f"{FW_DIR}:.frozen"
    return subprocess.run(
        [micropython_binary(), "-X", f"heapsize={heapsize}", str(script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def micropython_json_lines(script: Path, *args: str, **kw: Any) -> list[Any]:
    """Runs a script on the unix port and returns its output, one JSON value per line."""
    proc = run_micropython(script, *args, **kw)
    assert proc.returncode == 0, f"micropython failed:\n{proc.stdout[-3000:]}\n{proc.stderr}"
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


# -- Mosquitto without authentication, for the firmware's own tests


class Mosquitto:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {HOST}\nallow_anonymous true\npersistence false\nlog_dest stdout\n"
        )
        with open(self.workdir / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(self.workdir / 'mosquitto.log').read_text()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("mosquitto did not open its port") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


@contextmanager
def mosquitto(workdir: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# -- a gateway stand-in: checks every uplink with the shared codec and answers on request


@dataclass
class Seen:
    topic: str
    payload: bytes
    kind: str
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class Responder:
    """Subscribes to ok/v1/dev/+/up/#, verifies each message (okproto.open_up: MAC over topic
    and body) and records it; `auto` lists the ack states it sends, in turn, for every alarm,
    cancel or test it sees for the first time.

    With `sync` on it answers a heartbeat's `ev` as the gateway does (§4.3): for each pair whose
    state it has acked further, it sends that state again. With `drop_acks` on, `ack()` records
    the state but publishes nothing: the ack is lost on its way."""

    def __init__(self, port: int, keys: dict[str, bytes], auto: tuple[str, ...] = ()) -> None:
        self.port = port
        self.keys = keys
        self.auto = auto
        self.seen: list[Seen] = []
        self.rejected: list[tuple[str, str]] = []  # (topic, reason)
        self.wills: list[str] = []
        self.sync = False
        self.drop_acks = False
        self.known: dict[tuple[str, int], str] = {}  # (device, counter) -> furthest state acked
        self._answered: set[tuple[str, int]] = set()
        self._ack_counter = int(time.time() * 1000)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"gw-test-{port}", clean_session=True
        )
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *a: self._subscribed.set()

    def start(self) -> None:
        self._client.connect(HOST, self.port)
        self._client.subscribe("ok/v1/dev/+/up/#", qos=1)
        self._client.loop_start()
        if not self._subscribed.wait(5):
            raise TimeoutError("responder did not subscribe")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        # Closes the client's wake-up socket pair now rather than in a finaliser.
        self._client.reinitialise()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic
        if topic.endswith("/up/will"):
            with self._cond:
                self.wills.append(msg.payload.decode(errors="replace"))
                self._cond.notify_all()
            return
        try:
            device, kind, body = okproto.open_up(topic, msg.payload, self.keys.get)
        except okproto.ProtocolError as exc:
            with self._cond:
                self.rejected.append((topic, exc.reason))
                self._cond.notify_all()
            return
        with self._cond:
            self.seen.append(Seen(topic, bytes(msg.payload), kind, body))
            first = (device, body["c"]) not in self._answered
            self._answered.add((device, body["c"]))
            self._cond.notify_all()
        if kind in okproto.EVENT_KINDS and first:
            for state in self.auto:
                # In paho's network thread: queue the acks, do not wait for them here.
                self.ack(device, body["c"], state, wait=False)
        if kind == "hb" and self.sync:
            for c, theirs in body.get("ev", []):
                with self._lock:
                    ours = self.known.get((device, c))
                if ours is not None and _rank(ours) > _rank(theirs):
                    self.ack(device, c, ours, wait=False)

    def ack(self, device: str, ref: int, state: str, wait: bool = True, **kw: Any) -> bytes:
        """Publishes a §4 ack; returns its payload (to replay it later)."""
        with self._lock:
            self._ack_counter += 1
            counter = self._ack_counter
            if _rank(state) > _rank(self.known.get((device, ref), "sending")):
                self.known[(device, ref)] = state
            drop = self.drop_acks
        topic, payload = okproto.encode_ack(self.keys[device], device, counter, ref, state, **kw)
        if not drop:
            self.publish(topic, payload, wait)
        return payload

    def publish(self, topic: str, payload: bytes, wait: bool = True) -> None:
        info = self._client.publish(topic, payload, qos=1)
        if wait:
            info.wait_for_publish(5)

    def wait(self, predicate: Callable[[list[Seen]], bool], timeout: float = 10.0) -> list[Seen]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.seen):
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [(s.kind, s.body.get("c")) for s in self.seen]
                    raise TimeoutError(f"responder: condition not met in {timeout} s; seen {kinds}")
                self._cond.wait(left)
            return list(self.seen)

    def events(self, kind: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.kind != "hb" and (kind is None or s.kind == kind)]


def _rank(state: str) -> int:
    """A device's view of an event, in the order states move (§4.2); -1 for anything else."""
    order = ("sending", "stored", "received", "acked")
    return order.index(state) if state in order else -1


@contextmanager
def responder(port: int, keys: dict[str, bytes], auto: tuple[str, ...] = ()) -> Iterator[Responder]:
    r = Responder(port, keys, auto)
    r.start()
    try:
        yield r
    finally:
        r.stop()


@contextmanager
def sim_button(
    flash_dir: Path,
    broker_port: int,
    device_id: str = "btn-0001",
    heapsize: str = "96K",
    micropython: str | None = None,
    firmware: Path | None = None,
    env: dict[str, str] | None = None,
    **settings: Any,
) -> Iterator[SimButton]:
    """A started simulated button; stopped (SIGKILL if need be) on the way out."""
    settings.setdefault("ack_timeout_s", 20)
    cfg = button_config(
        device_id,
        KEY_HEX,
        HOST,
        broker_port,
        free_port(),
        user=device_id,
        password="pw",
        **settings,
    )
    button = SimButton(
        device_id, flash_dir, cfg, heapsize=heapsize, micropython=micropython, firmware=firmware, env=env
    )
    button.write_config()
    button.start()
    try:
        yield button
    finally:
        button.stop(timeout=3)


def newest(status: dict[str, Any], kind: str = "alarm") -> dict[str, Any] | None:
    """The newest message of `kind` in a status' recent list."""
    for msg in reversed(status["recent"]):
        if msg["kind"] == kind:
            return dict(msg)
    return None


# -- scripts run on the unix port

VECTOR_RUNNER = r"""
import sys, json, binascii
import okproto

def payload(v):
    if "payload" in v:
        return v["payload"].encode()
    return binascii.unhexlify(v["payload_hex"])

with open(sys.argv[1]) as f:
    doc = json.load(f)
keys = {}
for name in doc["keys"]:
    keys[name] = binascii.unhexlify(doc["keys"][name])
for v in doc["vectors"]:
    out = {"id": v["id"]}
    op = v["op"]
    try:
        if op == "encode_up":
            t, p = okproto.encode_up(keys[v["key"]], v["device"], v["kind"], v["counter"], v["fields"])
            out["topic"] = t
            out["payload"] = p.decode()
        elif op == "encode_ack":
            t, p = okproto.encode_ack(keys[v["key"]], v["device"], v["counter"], v["ref"],
                                      v["state"], v.get("why"), v.get("by"))
            out["topic"] = t
            out["payload"] = p.decode()
        elif op == "encode_bc":
            t, p = okproto.encode_bc(keys[v["key"]], v["device"], v["counter"], v["bc"])
            out["topic"] = t
            out["payload"] = p.decode()
        elif op == "open_up":
            reg = v["registry"]
            def key_for(dev, reg=reg):
                return keys[reg[dev]] if dev in reg else None
            d, k, body = okproto.open_up(v["topic"], payload(v), key_for)
            out["ok"] = {"device": d, "kind": k, "body": body}
        elif op == "open_down":
            body = okproto.open_down(keys[v["key"]], v["device"], v["topic"], payload(v))
            out["ok"] = {"body": body}
        elif op == "check_id":
            out["ok"] = {"valid": okproto.valid_id(v["text"]), "reserved": okproto.reserved_id(v["text"])}
        elif op == "event_window":
            okproto.check_event_window(v["counter"], v["high"], v["age_ms"])
            out["ok"] = {"accepted": True}
        else:
            out["crash"] = "unknown op " + op
    except okproto.ProtocolError as e:
        out["error"] = e.reason
    except Exception as e:
        out["crash"] = repr(e)
    print(json.dumps(out))
"""

FUZZ_RUNNER = r"""
import sys, json, binascii
import okproto

key = binascii.unhexlify(sys.argv[2])
counts = {}
crashes = []
with open(sys.argv[1]) as f:
    for line in f:
        op, topic, hexed = line.rstrip("\n").split("\t")
        data = binascii.unhexlify(hexed)
        try:
            if op == "up":
                okproto.open_up(topic, data, lambda dev: key if dev == "btn-0001" else None)
            else:
                okproto.open_down(key, "btn-0001", topic, data)
            r = "ok"
        except okproto.ProtocolError as e:
            r = e.reason
        except Exception as e:
            r = "crash"
            if len(crashes) < 10:
                crashes.append(repr(e) + " " + hexed[:200])
        counts[r] = counts.get(r, 0) + 1
print(json.dumps({"counts": counts, "crashes": crashes}))
"""


def write_script(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(source)
    return path


# -- the 32-bit port (harness.port32), for the heap tests


def micropython32_or_fail() -> str:
    """The 32-bit unix port. Without it the heap tests fail where the source is there to build
    it, or on CI ($CI set); a local checkout without the source skips them, saying why."""
    found = port32.micropython32_binary()
    if found is not None:
        return str(found)
    _no_port32(port32.missing_micropython32())


def frozen32_or_fail(*, repl: bool = False) -> str:
    """The 32-bit unix port with the firmware frozen in (built on first use, about 25 s; `repl`:
    the build with the raw REPL that `onekey vboard --frozen` runs); fails or skips as
    `micropython32_or_fail` does when the source is not there."""
    if not (port32.MICROPYTHON32_SOURCE / "build-unix32.sh").is_file():
        _no_port32(port32.missing_micropython32())
    return str(port32.frozen_port32(repl=repl))


def _no_port32(reason: str) -> NoReturn:
    if os.environ.get("CI") or (port32.MICROPYTHON32_SOURCE / "build-unix32.sh").is_file():
        pytest.fail(reason)
    pytest.skip(reason)
