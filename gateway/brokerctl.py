"""The village broker's device credentials, as the gateway's admin API changes them.

Mosquitto reads user names and password hashes from its password file (written with
`mosquitto_passwd`) and re-reads it, with its ACL, on SIGHUP. How to send that signal depends
on how the broker runs, so the gateway configuration names it (`[admin] broker_reload`):

- `pid-file:/run/mosquitto/mosquitto.pid`: SIGHUP to the pid in that file;
- `command:systemctl reload mosquitto`: run a command (split like a shell, no shell);
- `none`: nothing (a broker that is reloaded some other way).

A removed user cannot connect again once the broker has reloaded, and Mosquitto 2 also drops
the connection it has at that moment.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import stat
from collections.abc import Sequence
from pathlib import Path

from device_fw import okproto
from gateway.config import check_reload_spec
from gateway.errors import GatewayError
from transport.brokers import MOSQUITTO_PASSWD
from transport.keys import private_file

_TIMEOUT_S = 30.0


class BrokerControlError(GatewayError):
    """The broker's password file could not be changed, or the broker not reloaded."""


class BrokerControl:
    """Changes go through one lock: `mosquitto_passwd` rewrites the whole file.

    Only device logins are changed here: a reserved name (protocol §1.1) or one of
    `service_users` (the gateway's own login) is refused, so that device administration can
    neither hand out nor remove a service's password."""

    def __init__(
        self, passwd: Path | None, reload: str = "none", *, service_users: Sequence[str] = ()
    ) -> None:
        self.passwd = passwd
        self.reload_spec = check_reload_spec(reload)
        self.service_users = tuple(service_users)
        self._lock = asyncio.Lock()

    def _check_device_login(self, name: str) -> None:
        if okproto.reserved_id(name) or name in self.service_users:
            raise BrokerControlError(
                f"{name!r} is a service login on the village broker (reserved names: "
                f"{', '.join(okproto.RESERVED_IDS)}, {okproto.SERVICE_PREFIX}...); device "
                "administration never sets or removes it"
            )

    def _file(self) -> Path:
        if self.passwd is None:
            raise BrokerControlError(
                "this gateway cannot issue broker credentials: set [admin] broker_passwd in its "
                "configuration to the village broker's password file"
            )
        # Mosquitto reads an empty file as "no users"; mosquitto_passwd needs it to exist, and
        # keeps the mode of the file it rewrites. A new file is 0600 whatever the umask; an
        # existing one keeps its owner and group bits (Mosquitto running as its own user may
        # read it through its group, docs/provisioning.md) but never stays readable by others.
        try:
            if not self.passwd.exists():
                private_file(self.passwd)
            elif (mode := stat.S_IMODE(self.passwd.stat().st_mode)) & 0o007:
                os.chmod(self.passwd, mode & 0o770)
        except OSError as exc:
            raise BrokerControlError(
                f"broker password file {self.passwd}: {exc}; it must exist and not be readable "
                "by others"
            ) from None
        return self.passwd

    async def _passwd(self, *args: str) -> tuple[int, str]:
        try:
            proc = await asyncio.create_subprocess_exec(
                MOSQUITTO_PASSWD, *args,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise BrokerControlError(f"cannot run {MOSQUITTO_PASSWD}: {exc}") from None
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), _TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise BrokerControlError(f"{MOSQUITTO_PASSWD} did not finish in {_TIMEOUT_S:g} s") from None
        return proc.returncode or 0, out.decode(errors="replace").strip()

    async def set_user(self, name: str, password: str) -> None:
        self._check_device_login(name)
        async with self._lock:
            path = self._file()
            rc, out = await self._passwd("-b", str(path), name, password)
            if rc != 0:
                raise BrokerControlError(f"mosquitto_passwd could not set user {name} in {path}: {out}")
            await self._reload()

    async def remove_user(self, name: str) -> bool:
        """Removes `name`; False if it was not there (revoking twice is not an error)."""
        self._check_device_login(name)
        async with self._lock:
            path = self._file()
            rc, out = await self._passwd("-D", str(path), name)
            if rc != 0 and "not found" not in out:
                raise BrokerControlError(f"mosquitto_passwd could not remove {name} from {path}: {out}")
            await self._reload()
            return rc == 0

    async def _reload(self) -> None:
        kind, _, arg = self.reload_spec.partition(":")
        if kind == "pid-file":
            _hangup_pid_file(Path(arg))
        elif kind == "command":
            try:
                proc = await asyncio.create_subprocess_exec(
                    *shlex.split(arg), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
                )
            except OSError as exc:
                raise BrokerControlError(f"broker reload command {arg!r} failed: {exc}") from None
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), _TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise BrokerControlError(f"broker reload command {arg!r} hung") from None
            if proc.returncode != 0:
                text = out.decode(errors="replace").strip()
                raise BrokerControlError(f"broker reload command {arg!r} failed: {text}")


def _hangup_pid_file(path: Path) -> None:
    try:
        pid = int(path.read_text().split()[0])
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError, IndexError) as exc:
        raise BrokerControlError(
            f"cannot reload the village broker through {path}: {exc}; is Mosquitto running, "
            "and does its pid_file setting name this file?"
        ) from None
