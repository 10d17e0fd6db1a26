"""Centre configuration, read from a TOML file.

Example (`onekey centre init` writes one)::

    [centre]
    db = "centre.db"                 # SQLite file; relative paths are relative to this file
    key = "centre.key"               # Ed25519 private key (0600) that signs acks
    client_id = "centre"             # MQTT client id of the persistent session
    gateway_timeout_s = 90           # a gateway silent this long is shown as offline
    downlink_resend_s = 15           # unconfirmed acks and broadcast copies go again (§6.6)

    [auth]                           # optional; these are the defaults (docs/centre.md)
    session_idle_s = 7200            # a session unused this long ends
    session_max_s = 43200            # a session ends this long after login, used or not
    account_failures = 5             # failed logins in a row that lock an account ...
    address_failures = 20            # ... failed logins from one address within lockout_s ...
    lockout_s = 900                  # ... lock it (or block the address) for this long
    argon2_time_cost = 3             # argon2id for new password hashes (RFC 9106's second
    argon2_memory_kib = 65536        # recommended option: 64 MiB, 3 passes, 4 lanes)
    argon2_parallelism = 4

    [escalation]                     # optional; these are the township's defaults, which
    enabled = true                   # admins override per township, village and household
    t1_s = 60                        # not acknowledged at the centre within T1: the chain starts
    t2_s = 60                        # each contact has T2 to confirm before the next is asked
    rounds = 3                       # the whole order is tried this often, then staff are alerted
    order = ["leader+grid", "family", "doctor"]

    [modem]                          # optional: the GSM/4G modem that sends the chain's SMS
    port = "/dev/ttyUSB2"            # without it no SMS leaves and the console shows the alert
    baudrate = 115200

    [http]
    host = "127.0.0.1"
    port = 8080

    [broker]
    host = "127.0.0.1"
    port = 8883
    ca = "ca.pem"                    # CA that signed the broker's certificate
    cert = "centre-cert.pem"         # client certificate, common name "centre"
    key = "centre-key.pem"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from centre import escalation_policy
from centre.frames import valid_id


class ConfigError(Exception):
    """The configuration file is missing, malformed or inconsistent; the message names both."""


@dataclass(frozen=True)
class AuthConfig:
    """Staff sessions, login lockout and password hashing (docs/centre.md, "Accounts")."""

    session_idle_s: float = 7200.0
    session_max_s: float = 43200.0
    account_failures: int = 5
    address_failures: int = 20
    lockout_s: float = 900.0
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4


@dataclass(frozen=True)
class CentreConfig:
    db_path: Path
    key_path: Path
    http_host: str
    http_port: int
    broker_host: str
    broker_port: int
    broker_ca: Path
    broker_cert: Path
    broker_key: Path
    client_id: str = "centre"
    gateway_timeout_s: float = 90.0
    # A downlink its gateway has not confirmed (§6.6) is published again this often.
    downlink_resend_s: float = 15.0
    # Reconnect backoff towards the centre broker: doubles from min to max.
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    auth: AuthConfig = AuthConfig()
    source: Path | None = None
    # The escalation chain's defaults (the township policy before admins change it).
    escalation: escalation_policy.Policy = field(default_factory=escalation_policy.Policy)
    # How often the chain looks at the alarms; an SMS the modem has not sent by then is
    # counted as perhaps sent (never sent again); an alarm first seen older than
    # max_start_age_s (a centre back after a long stop) gets no chain, staff handle it.
    escalation_period_s: float = 1.0
    escalation_send_timeout_s: float = 120.0
    escalation_max_start_age_s: float = 3600.0
    modem_port: str | None = None
    modem_baudrate: int = 115200


def _section(data: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    sec = data.get(name)
    if not isinstance(sec, dict):
        raise ConfigError(f"{path}: missing section [{name}]")
    return sec


def _str(sec: dict[str, Any], name: str, where: str, default: str | None = None) -> str:
    if name not in sec:
        if default is not None:
            return default
        raise ConfigError(f"{where}: missing field {name!r}")
    value = sec[name]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: field {name!r} must be a non-empty string")
    return value


def _port(sec: dict[str, Any], name: str, where: str) -> int:
    if name not in sec:
        raise ConfigError(f"{where}: missing field {name!r}")
    value = sec[name]
    if type(value) is not int or not 0 <= value <= 65535:
        raise ConfigError(f"{where}: field {name!r} must be an integer 0..65535")
    return value


def _seconds(sec: dict[str, Any], name: str, where: str, default: float) -> float:
    value = sec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}: field {name!r} must be a positive number of seconds")
    return float(value)


def _count(sec: dict[str, Any], name: str, where: str, default: int, least: int = 1) -> int:
    value = sec.get(name, default)
    if type(value) is not int or value < least:
        raise ConfigError(f"{where}: field {name!r} must be an integer >= {least}")
    return value


def _auth(data: dict[str, Any], path: Path) -> AuthConfig:
    sec = data.get("auth", {})
    where = f"{path} [auth]"
    if not isinstance(sec, dict):
        raise ConfigError(f"{where} must be a table")
    d = AuthConfig()
    known = set(d.__dataclass_fields__)
    unknown = sorted(set(sec) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}; known: {', '.join(sorted(known))}")
    auth = AuthConfig(
        session_idle_s=_seconds(sec, "session_idle_s", where, d.session_idle_s),
        session_max_s=_seconds(sec, "session_max_s", where, d.session_max_s),
        account_failures=_count(sec, "account_failures", where, d.account_failures),
        address_failures=_count(sec, "address_failures", where, d.address_failures),
        lockout_s=_seconds(sec, "lockout_s", where, d.lockout_s),
        argon2_time_cost=_count(sec, "argon2_time_cost", where, d.argon2_time_cost),
        argon2_memory_kib=_count(sec, "argon2_memory_kib", where, d.argon2_memory_kib, 8),
        argon2_parallelism=_count(sec, "argon2_parallelism", where, d.argon2_parallelism),
    )
    if auth.session_idle_s > auth.session_max_s:
        raise ConfigError(f"{where}: session_idle_s must not exceed session_max_s")
    if auth.argon2_memory_kib < 8 * auth.argon2_parallelism:
        raise ConfigError(f"{where}: argon2_memory_kib must be at least 8 x argon2_parallelism")
    return auth


def _escalation(data: dict[str, Any], path: Path) -> escalation_policy.Policy:
    sec = data.get("escalation", {})
    if not isinstance(sec, dict):
        raise ConfigError(f"{path}: [escalation] must be a table")
    known = set(escalation_policy.FIELDS) | {"period_s", "send_timeout_s", "max_start_age_s"}
    unknown = sorted(set(sec) - known)
    if unknown:
        raise ConfigError(f"{path} [escalation]: unknown field {unknown[0]!r}")
    try:
        override = escalation_policy.check_override(
            {k: v for k, v in sec.items() if k in escalation_policy.FIELDS}
        )
    except escalation_policy.PolicyError as exc:
        raise ConfigError(f"{path} [escalation]: {exc}") from None
    return escalation_policy.apply(escalation_policy.Policy(), override)


def _modem(data: dict[str, Any], path: Path) -> tuple[str | None, int]:
    sec = data.get("modem", {})
    if not isinstance(sec, dict):
        raise ConfigError(f"{path}: [modem] must be a table")
    where = f"{path} [modem]"
    port = _str(sec, "port", where) if "port" in sec else None
    baud = sec.get("baudrate", 115200)
    if type(baud) is not int or baud <= 0:
        raise ConfigError(f"{where}: field 'baudrate' must be a positive integer")
    return port, baud


def load_config(path: Path) -> CentreConfig:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read centre config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    base = path.parent.resolve()

    def rel(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else base / q

    centre = _section(data, "centre", path)
    where = f"{path} [centre]"
    client_id = _str(centre, "client_id", where, "centre")
    if not valid_id(client_id):
        raise ConfigError(f"{where}: field 'client_id' must be 1-32 of a-z, 0-9, '-'")
    http = _section(data, "http", path)
    where_h = f"{path} [http]"
    broker = _section(data, "broker", path)
    where_b = f"{path} [broker]"
    esc = data.get("escalation", {})
    where_e = f"{path} [escalation]"
    policy = _escalation(data, path)
    modem_port, modem_baudrate = _modem(data, path)
    return CentreConfig(
        db_path=rel(_str(centre, "db", where)),
        key_path=rel(_str(centre, "key", where)),
        client_id=client_id,
        gateway_timeout_s=_seconds(centre, "gateway_timeout_s", where, 90.0),
        downlink_resend_s=_seconds(centre, "downlink_resend_s", where, 15.0),
        reconnect_min_s=_seconds(broker, "reconnect_min_s", where_b, 0.5),
        reconnect_max_s=_seconds(broker, "reconnect_max_s", where_b, 30.0),
        http_host=_str(http, "host", where_h),
        http_port=_port(http, "port", where_h),
        broker_host=_str(broker, "host", where_b),
        broker_port=_port(broker, "port", where_b),
        broker_ca=rel(_str(broker, "ca", where_b)),
        broker_cert=rel(_str(broker, "cert", where_b)),
        broker_key=rel(_str(broker, "key", where_b)),
        auth=_auth(data, path),
        source=path,
        escalation=policy,
        escalation_period_s=_seconds(esc, "period_s", where_e, 1.0),
        escalation_send_timeout_s=_seconds(esc, "send_timeout_s", where_e, 120.0),
        escalation_max_start_age_s=_seconds(esc, "max_start_age_s", where_e, 3600.0),
        modem_port=modem_port,
        modem_baudrate=modem_baudrate,
    )


def _q(text: str | Path) -> str:
    """A TOML basic string."""
    s = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def render_config(
    *,
    db: str | Path = "centre.db",
    key: str | Path = "centre.key",
    http_host: str = "127.0.0.1",
    http_port: int = 8080,
    broker_host: str = "127.0.0.1",
    broker_port: int = 8883,
    ca: str | Path = "ca.pem",
    cert: str | Path = "centre-cert.pem",
    tls_key: str | Path = "centre-key.pem",
    client_id: str = "centre",
    gateway_timeout_s: float = 90.0,
) -> str:
    return f"""# onekey township centre; paths are relative to this file
[centre]
db = {_q(db)}
key = {_q(key)}
client_id = {_q(client_id)}
gateway_timeout_s = {float(gateway_timeout_s)}

[http]
host = {_q(http_host)}
port = {int(http_port)}

[broker]
host = {_q(broker_host)}
port = {int(broker_port)}
ca = {_q(ca)}
cert = {_q(cert)}
key = {_q(tls_key)}
"""
