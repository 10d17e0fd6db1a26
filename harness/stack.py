"""A whole onekey system on loopback: the demo, the integration tests and the benchmarks use it.

Real parts only: two Mosquitto brokers (the centre one with TLS and client certificates from
a CA made here), the centre and the gateway as separate processes, buttons running the
firmware in the MicroPython unix port. Constructing does nothing; `setup()` writes keys,
certificates and configuration; `start()` starts the processes; `stop()` stops them all.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from centre.auth import Role
from centre.enrol import add_staff, enrol_gateway, init_centre
from gateway import registry
from gateway.config import render_config
from gateway.metrics import read_metrics
from transport import pki
from transport.brokers import CentreBroker, VillageBroker
from transport.keys import generate_private_key, private_dir, public_hex, write_secret
from transport.procs import ManagedProcess, ProcessError, free_port, port_taken

if TYPE_CHECKING:
    from harness.simdevice import SimButton
    from harness.simspeaker import SimSpeaker

log = logging.getLogger("onekey.harness.stack")

HOST = "127.0.0.1"


class StackError(Exception):
    """A part of the local system did not come up; the message says which and where its log is."""


class LocalStack:
    def __init__(
        self,
        root: Path,
        *,
        gateway_id: str = "gw-demo",
        village: str = "v-demo",
        http_port: int | None = None,
        forward_window: int = 256,
        resend_after_s: float = 10.0,
        village_listen: str = HOST,
        device_broker_host: str | None = None,
        supervision: dict[str, int | float] | None = None,
        gateway_dir: Path | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        # The gateway's [supervision] settings (gateway/config.py); None: its defaults.
        self.supervision = supervision
        # Real boards (hil_tests with --port) reach the village broker over the LAN: it then
        # listens on village_listen (e.g. 0.0.0.0) and boards dial device_broker_host.
        self.village_listen = village_listen
        self.device_broker_host = device_broker_host
        self.gateway_id = gateway_id
        self.village = village
        self.http_port = http_port
        self.forward_window = forward_window
        self.resend_after_s = resend_after_s
        self.pki_dir = self.root / "pki"
        # The gateway's state directory (its configuration, keys, SQLite store); a test may put
        # it on a filesystem of its own, e.g. a small tmpfs that it fills.
        self.gateway_dir = Path(gateway_dir).resolve() if gateway_dir else self.root / "gateway"
        self.centre_dir = self.root / "centre"
        self.devices_dir = self.root / "devices"
        self.gateway_config = self.gateway_dir / "gateway.toml"
        self.centre_config = self.centre_dir / "centre.toml"
        self.village_broker: VillageBroker | None = None
        self.centre_broker: CentreBroker | None = None
        self.centre_proc: ManagedProcess | None = None
        self.gateway_proc: ManagedProcess | None = None
        self.buttons: dict[str, SimButton] = {}
        self.speakers: dict[str, SimSpeaker] = {}
        self.centre_tls: pki.CertFiles | None = None
        # The gateway's admin API (provisioning); it changes the village broker's password
        # file and reloads the broker through the pid file written by start_brokers().
        self.admin_port: int | None = None
        self.admin_token_file = self.gateway_dir / "admin.token"
        self.village_pid_file = self.root / "village-broker.pid"
        # The centre's API needs a login: `api()` sends this admin API token (made by setup()).
        self.centre_token_file = self.centre_dir / "api.token"
        self._centre_token: str | None = None

    # -- set-up

    def setup(self) -> None:
        # Keys, passwords, device configurations and databases live under it: 0700.
        private_dir(self.root, tighten=True)
        private_dir(self.gateway_dir, tighten=True)
        self.http_port = self.http_port or free_port()
        ca = pki.create_ca(self.pki_dir, name="onekey demo CA")
        server = pki.issue_server(ca, self.pki_dir, "centre-broker")
        centre_tls = pki.issue_client(ca, self.pki_dir, "centre")
        self.centre_tls = centre_tls
        gw_tls = pki.issue_client(ca, self.pki_dir, self.gateway_id)

        self.village_broker = VillageBroker(
            self.root / "village-broker", free_port(), self.village_listen
        )
        self.centre_broker = CentreBroker(self.root / "centre-broker", free_port(), server)

        _cfg_path, centre_pub = init_centre(
            self.centre_dir,
            http_host=HOST,
            http_port=self.http_port,
            broker_host=HOST,
            broker_port=self.centre_broker.port,
            ca=centre_tls.ca,
            cert=centre_tls.cert,
            tls_key=centre_tls.key,
        )
        token = add_staff(
            self.centre_config, "stack-admin", "Local stack", Role.ADMIN,
            secrets.token_urlsafe(24), token_name="local stack",
        )
        assert token is not None
        write_secret(self.centre_token_file, token.encode())
        self._centre_token = token
        key = generate_private_key(self.gateway_dir / "gateway.key")
        enrol_gateway(
            self.centre_config, self.gateway_id, public_hex(key), name=self.village,
            villages=[self.village],
        )

        self.admin_port = self.admin_port or free_port()
        password = secrets.token_urlsafe(24)
        write_secret(self.gateway_dir / "village-broker.pass", password.encode())
        self.village_broker.add_user("gateway", password)
        text = render_config(
            gateway_id=self.gateway_id,
            village=self.village,
            state_dir=self.gateway_dir,
            centre_public_key=centre_pub,
            village_host=HOST,
            village_port=self.village_broker.port,
            centre_host=HOST,
            centre_port=self.centre_broker.port,
            admin_port=self.admin_port,
            broker_passwd=self.village_broker.password_path,
            broker_reload=f"pid-file:{self.village_pid_file}",
            device_broker_host=self.device_broker_host,
        )
        text = text.replace('"centre-ca.pem"', f'"{gw_tls.ca}"')
        text = text.replace('"gateway-cert.pem"', f'"{gw_tls.cert}"')
        text = text.replace('"gateway-key.pem"', f'"{gw_tls.key}"')
        text = text.replace("window = 256", f"window = {self.forward_window}")
        text = text.replace("resend_after_s = 10.0", f"resend_after_s = {self.resend_after_s}")
        if self.supervision:
            text += "\n[supervision]\n" + "".join(
                f"{k} = {v!r}\n" for k, v in self.supervision.items()
            )
        self.gateway_config.write_text(text)
        registry.open_admin(self.gateway_dir / "gateway.db").close()

    # -- processes

    def start(self) -> None:
        # A taken web port fails here, before any process starts, not after the brokers.
        self.check_http_port()
        self.start_brokers()
        self.start_centre()
        self.start_gateway()

    def start_brokers(self) -> None:
        assert self.village_broker and self.centre_broker, "setup() first"
        self.village_broker.start()
        self.village_pid_file.write_text(f"{self.village_broker.pid}\n")
        self.centre_broker.start()

    def _onekey(self, name: str, *args: str) -> ManagedProcess:
        return ManagedProcess(
            [sys.executable, "-m", "onekey.cli", *args],
            self.root / f"{name}.log",
            name=name,
        )

    def check_http_port(self) -> None:
        """Raises StackError, naming the port and what to do, if the centre's web port is taken
        (the centre would fail to bind it; something else would answer in its place)."""
        assert self.http_port is not None, "setup() first"
        if port_taken(HOST, self.http_port):
            raise StackError(
                f"the centre's web port {HOST}:{self.http_port} is already in use by another "
                f"program; stop that program (see: ss -ltnp 'sport = :{self.http_port}') or "
                "choose another port (onekey demo --http-port PORT)"
            )

    def start_centre(self, timeout: float = 20.0) -> None:
        self.check_http_port()
        self.centre_proc = self._onekey("centre", "centre", "run", "--config", str(self.centre_config))
        self.centre_proc.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.centre_proc.running:
                raise StackError(self.centre_proc.exit_message("centre"))
            try:
                self.api("GET", "/healthz")
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        raise StackError(f"centre did not answer on port {self.http_port}; see {self.root}/centre.log")

    def start_gateway(self, timeout: float = 20.0, *, wait_centre: bool = True) -> None:
        self.gateway_proc = self._onekey(
            "gateway", "gateway", "run", "--config", str(self.gateway_config)
        )
        self.gateway_proc.start()
        self.wait_gateway_links(timeout, centre=wait_centre)

    def wait_gateway_links(self, timeout: float = 20.0, *, centre: bool = True) -> None:
        assert self.gateway_proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.gateway_proc.running:
                raise StackError(self.gateway_proc.exit_message("gateway"))
            gauges = self.gateway_metrics().get("gauges", {})
            if gauges.get("village_link") == "up" and (
                not centre or gauges.get("centre_link") == "up"
            ):
                return
            time.sleep(0.05)
        raise StackError(f"gateway links not up after {timeout:.0f}s; see {self.root}/gateway.log")

    @property
    def admin_url(self) -> str:
        return f"http://{HOST}:{self.admin_port}"

    def wait_admin(self, timeout: float = 20.0) -> None:
        """Returns once the gateway's admin API accepts connections (it starts after the
        alarm path)."""
        assert self.gateway_proc is not None and self.admin_port is not None
        try:
            self.gateway_proc.wait_port(HOST, self.admin_port, timeout)
        except (TimeoutError, ProcessError) as exc:
            raise StackError(f"gateway admin API: {exc}; see {self.root}/gateway.log") from None

    def wait_devices_connected(self, timeout: float = 20.0) -> None:
        """Returns once every started button and speaker reports its MQTT link up."""
        from provisioning.simcontrol import SimDeviceError

        deadline = time.monotonic() + timeout
        devices: list[SimButton | SimSpeaker] = [*self.buttons.values(), *self.speakers.values()]
        for dev in devices:
            if not dev.running:
                continue
            try:
                dev.wait_for(lambda st: bool(st.get("connected")),
                             max(0.1, deadline - time.monotonic()))
            except (TimeoutError, SimDeviceError) as exc:
                raise StackError(
                    f"{dev.device_id} did not connect to the village broker: {exc}; "
                    f"see {dev.log_path}"
                ) from None

    def gateway_metrics(self) -> dict[str, Any]:
        try:
            return read_metrics(self.gateway_dir / "metrics.json")
        except (OSError, ValueError):
            return {}

    def stop(self) -> None:
        for button in self.buttons.values():
            button.stop()
        for speaker in self.speakers.values():
            speaker.stop()
        for proc in (self.gateway_proc, self.centre_proc):
            if proc is not None:
                proc.stop()
        for broker in (self.centre_broker, self.village_broker):
            if broker is not None:
                broker.stop()

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- devices

    def register_device(
        self,
        device_id: str,
        household: str,
        role: str = "button",
        *,
        reload: bool = True,
        groups: Sequence[str] = (),
        village: str | None = None,
        power: str = "mains",
        period_s: int = 0,
    ) -> tuple[bytes, str]:
        """Registry entry at the gateway and broker credentials; returns (key, password).
        With reload=False the caller reloads the village broker once after a batch. `power`
        and `period_s` as provisioning records them (docs/gateway.md, Supervision)."""
        assert self.village_broker is not None
        conn = registry.open_admin(self.gateway_dir / "gateway.db")
        try:
            dev = registry.add_device(
                conn,
                device_id,
                role=role,
                village=village or self.village,
                household=household,
                groups=groups,
                power=power,
                period_s=period_s,
            )
        finally:
            conn.close()
        password = secrets.token_urlsafe(18)
        self.village_broker.add_user(device_id, password)
        if reload and self.village_broker.running:
            self.village_broker.reload()
        return dev.key, password

    def add_button(self, device_id: str, household: str, **settings: Any) -> SimButton:
        from harness.simdevice import SimButton  # needs the MicroPython extra

        assert self.village_broker is not None
        power = str(settings.get("power", "mains"))
        # The period the gateway supervises it by: its check-in or heartbeat period, if set.
        period = settings.get("checkin_s" if power == "battery" else "hb_interval_s", 0)
        key, password = self.register_device(
            device_id, household, power=power, period_s=int(period)
        )
        config: dict[str, Any] = {
            "id": device_id,
            "role": "button",
            "key": key.hex(),
            "hal": "sim",
            "sim_port": free_port(),
            "mqtt": {
                "host": HOST,
                "port": self.village_broker.port,
                "user": device_id,
                "password": password,
            },
            "wifi": {"ssid": "demo", "psk": "demo"},
        }
        config.update(settings)
        button = SimButton(device_id, self.devices_dir / device_id, config)
        button.write_config()
        self.buttons[device_id] = button
        return button

    def add_speaker(
        self,
        device_id: str,
        household: str,
        *,
        groups: Sequence[str] = (),
        village: str | None = None,
        reload: bool = True,
        **settings: Any,
    ) -> SimSpeaker:
        """A speaker running the real firmware, registered and configured (not started)."""
        from harness.simspeaker import SimSpeaker  # needs the MicroPython extra

        assert self.village_broker is not None
        key, password = self.register_device(
            device_id, household, role="speaker", groups=groups, village=village, reload=reload,
            period_s=int(settings.get("hb_interval_s", 0)),
        )
        speaker = SimSpeaker(
            self.devices_dir / device_id,
            device_id,
            key,
            HOST,
            self.village_broker.port,
            password,
            village or self.village,
            **settings,
        )
        speaker.write_config()
        self.speakers[device_id] = speaker
        return speaker

    # -- centre API

    @property
    def centre_token(self) -> str:
        """The admin API token setup() made (read back from its file for a set-up stack)."""
        if self._centre_token is None:
            self._centre_token = self.centre_token_file.read_text().strip()
        return self._centre_token

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.centre_token}"}
        if data:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(
            f"http://{HOST}:{self.http_port}{path}", data=data, method=method, headers=headers
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read() or b"null")
