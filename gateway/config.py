"""Gateway configuration, read from a TOML file.

Example (`onekey gateway init` writes one)::

    [gateway]
    id = "gw-demo"
    village = "v-demo"
    state_dir = "/var/lib/onekey/gateway"      # SQLite, keys, metrics
    centre_public_key = "<64 hex digits>"      # pinned at enrolment

    [village_broker]
    host = "127.0.0.1"
    port = 1883
    user = "gateway"
    password_file = "village-broker.pass"       # relative to state_dir

    [centre_broker]
    host = "centre.example.org"
    port = 8883
    ca = "centre-ca.pem"
    cert = "gateway-cert.pem"
    key = "gateway-key.pem"

    [admin]                                     # optional; the values shown are the defaults
    listen = "127.0.0.1"                        # the admin API (provisioning) listens here
    port = 8081
    token_file = "admin.token"                  # bearer token, 0600; created at first start
    broker_passwd = "/etc/mosquitto/passwd"     # the village broker's password file (no default)
    broker_reload = "none"                      # or "pid-file:/run/mosquitto/mosquitto.pid",
                                                #    "command:systemctl reload mosquitto"
    device_broker_host = "192.168.4.1"          # what boards dial (default: [village_broker] host)
    device_broker_port = 1883

    [supervision]                               # optional; the values shown are the defaults
    mains_period_s = 20                         # a mains device's heartbeat period
    mains_missed = 3                            # lost after 3 missed: 60 s at the gateway
    mains_margin_s = 0
    battery_period_s = 3600                     # a battery button's check-in period
    battery_missed = 2                          # lost after 2 missed check-ins + the margin
    battery_margin_s = 300
    low_battery_pct = 20                        # low battery at or below this reading
    battery_ok_pct = 30                         # cleared only above this one
    will_grace_s = 10.0                         # a mains device's last will: lost this long after
    check_s = 1.0                               # how often deadlines are checked

    [modem]                                     # optional: the second path (docs/gateway.md)
    port = "/dev/serial/by-id/usb-SimTech..."   # the module's AT port
    centre_number = "+8613800000000"            # the centre's modem (protocol §10)
    link_down_s = 30.0                          # SMS once the centre link is down this long
    receipt_deadline_s = 20.0                   # ... or an alarm not `received` this long
    max_age_s = 3600.0                          # never SMS an alarm older than this
    local_alert = true                          # speakers near the household play an alert
    local_alert_group = "crossroads"            # speakers used when the household's group has none
"""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from device_fw import okproto
from gateway.errors import ConfigError


@dataclass(frozen=True)
class VillageBrokerConfig:
    host: str
    port: int
    user: str
    password: str


@dataclass(frozen=True)
class CentreBrokerConfig:
    host: str
    port: int
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class AdminConfig:
    """The admin API that provisioning talks to (gateway/admin.py)."""

    listen: str
    port: int
    token_file: Path
    # The village broker's password file, where device credentials go; None: the admin API
    # can list and revoke registry entries but cannot issue broker credentials.
    broker_passwd: Path | None
    broker_reload: str
    device_broker_host: str
    device_broker_port: int
    enabled: bool = True


@dataclass(frozen=True)
class SupervisionConfig:
    """Device supervision (docs/gateway.md, Supervision). A device's own period, recorded at
    provisioning, overrides its profile's `*_period_s`."""

    mains_period_s: int = 20
    mains_missed: int = 3
    mains_margin_s: int = 0
    battery_period_s: int = 3600
    battery_missed: int = 2
    battery_margin_s: int = 300
    low_battery_pct: int = 20
    battery_ok_pct: int = 30
    will_grace_s: float = 10.0
    check_s: float = 1.0


@dataclass(frozen=True)
class ModemConfig:
    """The second path (docs/gateway.md, "When the uplink fails"): a GSM/4G module for SMS,
    and the local alert on the village's speakers."""

    port: str
    centre_number: str
    link_down_s: float = 30.0
    receipt_deadline_s: float = 20.0
    max_age_s: float = 3600.0
    local_alert: bool = True
    local_alert_group: str = "crossroads"
    # The driver's timings (modem.Modem); shorter in tests.
    poll_interval_s: float = 30.0
    reopen_interval_s: float = 1.0
    command_timeout_s: float = 5.0


@dataclass(frozen=True)
class GatewayConfig:
    gateway_id: str
    village: str
    state_dir: Path
    centre_public_key: str
    village_broker: VillageBrokerConfig
    centre_broker: CentreBrokerConfig
    # How many events may be in flight to the centre before the first is confirmed.
    forward_window: int = 256
    # Re-send an event the centre has not confirmed after this many seconds.
    resend_after_s: float = 10.0
    heartbeat_s: float = 30.0
    admin: AdminConfig | None = None
    supervision: SupervisionConfig = SupervisionConfig()
    modem: ModemConfig | None = None  # None: no second path

    @property
    def db_path(self) -> Path:
        return self.state_dir / "gateway.db"

    @property
    def key_path(self) -> Path:
        return self.state_dir / "gateway.key"

    @property
    def metrics_path(self) -> Path:
        return self.state_dir / "metrics.json"


def check_reload_spec(spec: str) -> str:
    """Returns `spec` if it is one of the forms above; raises ValueError otherwise."""
    if spec == "none":
        return spec
    kind, _, arg = spec.partition(":")
    if kind == "pid-file" and arg:
        return spec
    if kind == "command" and shlex.split(arg):
        return spec
    raise ValueError(
        f"broker_reload {spec!r} must be 'none', 'pid-file:/path/to/mosquitto.pid' or "
        "'command:systemctl reload mosquitto'"
    )


def _section(data: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    sec = data.get(name)
    if not isinstance(sec, dict):
        raise ConfigError(f"{path}: missing section [{name}]")
    return sec


def _field(sec: dict[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in sec:
        raise ConfigError(f"{where}: missing field {name!r}")
    value = sec[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{where}: field {name!r} must be {kind.__name__}")
    return value


def load_config(path: Path) -> GatewayConfig:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read gateway config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    gw = _section(data, "gateway", path)
    where = f"{path} [gateway]"
    gateway_id = _field(gw, "id", str, where)
    if not okproto.valid_id(gateway_id):
        raise ConfigError(f"{where}: id {gateway_id!r} must be 1-32 of a-z, 0-9, '-'")
    state_dir = Path(_field(gw, "state_dir", str, where))
    if not state_dir.is_absolute():
        state_dir = (path.parent / state_dir).resolve()

    def rel(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else state_dir / q

    vb = _section(data, "village_broker", path)
    where_v = f"{path} [village_broker]"
    pw_file = rel(_field(vb, "password_file", str, where_v))
    try:
        password = pw_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{where_v}: cannot read password_file {pw_file}: {exc.strerror}") from None
    cb = _section(data, "centre_broker", path)
    where_c = f"{path} [centre_broker]"
    fwd = data.get("forward", {})
    village_host = _field(vb, "host", str, where_v)
    village_port = _field(vb, "port", int, where_v)
    return GatewayConfig(
        gateway_id=gateway_id,
        village=_field(gw, "village", str, where),
        state_dir=state_dir,
        centre_public_key=_field(gw, "centre_public_key", str, where),
        village_broker=VillageBrokerConfig(
            host=village_host,
            port=village_port,
            user=_field(vb, "user", str, where_v),
            password=password,
        ),
        centre_broker=CentreBrokerConfig(
            host=_field(cb, "host", str, where_c),
            port=_field(cb, "port", int, where_c),
            ca=rel(_field(cb, "ca", str, where_c)),
            cert=rel(_field(cb, "cert", str, where_c)),
            key=rel(_field(cb, "key", str, where_c)),
        ),
        forward_window=int(fwd.get("window", 256)),
        resend_after_s=float(fwd.get("resend_after_s", 10.0)),
        heartbeat_s=float(fwd.get("heartbeat_s", 30.0)),
        admin=_admin(data.get("admin", {}), f"{path} [admin]", rel, village_host, village_port),
        supervision=_supervision(data.get("supervision", {}), f"{path} [supervision]"),
        modem=_modem(data.get("modem"), f"{path} [modem]"),
    )


def _modem(sec: Any, where: str) -> ModemConfig | None:
    if sec is None:
        return None
    if not isinstance(sec, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(sec) - {f.name for f in fields(ModemConfig)}
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")

    def seconds(name: str, default: float) -> float:
        if name not in sec:
            return default
        v = sec[name]
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            raise ConfigError(f"{where}: {name} must be a number of seconds above 0")
        return float(v)

    number = _field(sec, "centre_number", str, where)
    digits = number[1:] if number.startswith("+") else number
    if not digits.isdigit() or not 3 <= len(digits) <= 20:
        raise ConfigError(f"{where}: centre_number {number!r} must be the centre modem's number, "
                          "digits with an optional + (+8613800000000)")
    group = _field(sec, "local_alert_group", str, where) if "local_alert_group" in sec else "crossroads"
    return ModemConfig(
        port=_field(sec, "port", str, where),
        centre_number=number,
        link_down_s=seconds("link_down_s", 30.0),
        receipt_deadline_s=seconds("receipt_deadline_s", 20.0),
        max_age_s=seconds("max_age_s", 3600.0),
        local_alert=_field(sec, "local_alert", bool, where) if "local_alert" in sec else True,
        local_alert_group=group,
        poll_interval_s=seconds("poll_interval_s", 30.0),
        reopen_interval_s=seconds("reopen_interval_s", 1.0),
        command_timeout_s=seconds("command_timeout_s", 5.0),
    )


def _supervision(sec: Any, where: str) -> SupervisionConfig:
    if not isinstance(sec, dict):
        raise ConfigError(f"{where} must be a table")
    default = SupervisionConfig()
    values: dict[str, Any] = {}
    for name, value in vars(default).items():
        if name not in sec:
            continue
        v = sec[name]
        if isinstance(value, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(value, float):
            if type(v) is not float or v <= 0:
                raise ConfigError(f"{where}: {name} must be a number above 0, not {v!r}")
        else:
            lowest = 0 if name.endswith("_margin_s") else 1
            if type(v) is not int or v < lowest:
                raise ConfigError(f"{where}: {name} must be an integer of at least {lowest}, not {v!r}")
        values[name] = v
    unknown = sorted(set(sec) - set(vars(default)))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    cfg = SupervisionConfig(**values)
    if not cfg.low_battery_pct < cfg.battery_ok_pct <= 100:
        raise ConfigError(
            f"{where}: low_battery_pct ({cfg.low_battery_pct}) must be below battery_ok_pct "
            f"({cfg.battery_ok_pct}), which is at most 100: the gap is the hysteresis"
        )
    return cfg


def _admin(
    sec: Any, where: str, rel: Callable[[str], Path], village_host: str, village_port: int
) -> AdminConfig:
    if not isinstance(sec, dict):
        raise ConfigError(f"{where} must be a table")

    def opt(name: str, kind: type, default: Any) -> Any:
        return _field(sec, name, kind, where) if name in sec else default

    passwd = opt("broker_passwd", str, "")
    reload = opt("broker_reload", str, "none")
    try:
        check_reload_spec(reload)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return AdminConfig(
        listen=opt("listen", str, "127.0.0.1"),
        port=opt("port", int, 8081),
        token_file=rel(opt("token_file", str, "admin.token")),
        broker_passwd=rel(passwd) if passwd else None,
        broker_reload=reload,
        device_broker_host=opt("device_broker_host", str, village_host),
        device_broker_port=opt("device_broker_port", int, village_port),
        enabled=opt("enabled", bool, True),
    )


def render_config(
    *,
    gateway_id: str,
    village: str,
    state_dir: Path,
    centre_public_key: str,
    village_host: str,
    village_port: int,
    centre_host: str,
    centre_port: int,
    user: str = "gateway",
    admin_listen: str = "127.0.0.1",
    admin_port: int = 8081,
    broker_passwd: Path | None = None,
    broker_reload: str = "none",
    device_broker_host: str | None = None,
) -> str:
    passwd_line = f'broker_passwd = "{broker_passwd}"\n' if broker_passwd else ""
    device_host = device_broker_host or village_host
    return f"""[gateway]
id = "{gateway_id}"
village = "{village}"
state_dir = "{state_dir}"
centre_public_key = "{centre_public_key}"

[village_broker]
host = "{village_host}"
port = {village_port}
user = "{user}"
password_file = "village-broker.pass"

[centre_broker]
host = "{centre_host}"
port = {centre_port}
ca = "centre-ca.pem"
cert = "gateway-cert.pem"
key = "gateway-key.pem"

[forward]
window = 256
resend_after_s = 10.0
heartbeat_s = 30.0

[admin]
listen = "{admin_listen}"
port = {admin_port}
token_file = "admin.token"
{passwd_line}broker_reload = "{broker_reload}"
device_broker_host = "{device_host}"
device_broker_port = {village_port}
"""
