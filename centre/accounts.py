"""Staff accounts: passwords, sessions, API tokens and login lockout, in the centre's database.

- Passwords: argon2id (argon2-cffi), parameters from `[auth]` in the config (default RFC 9106's
  second recommended option: 64 MiB, 3 passes, 4 lanes). A hash made with other parameters is
  replaced at the next good login. Passwords are 10 to 1024 characters.
- Sessions: the cookie holds a random secret (256 bits); the database holds only its SHA-256, so
  a copy of the database cannot be replayed as a cookie. A session ends `session_idle_s` after
  its last use (recorded at most once a minute, so a read does not cost a disk write) or
  `session_max_s` after login, whichever comes first; logging out deletes it. The CSRF token is an
  HMAC of the cookie's secret, so it is bound to that session and needs no storage.
- API tokens: `okt_` + a random secret (256 bits), shown once, stored as SHA-256. A token has a
  role no higher than its owner's; when used it acts with the lower of its own role and its
  owner's current role. Expiry optional; revocation is immediate.
- A disabled account's sessions and tokens stop working at the next request: every check reads
  the account. Disabling also deletes its sessions; a new password deletes them too.
- Lockout: `account_failures` failed logins in a row lock the account for `lockout_s`;
  `address_failures` failed logins from one client address within `lockout_s` block that address
  for the rest of the window. Failed logins are audited (`login_failed`) except those refused
  because the address is already blocked (logged only: an attacker cannot grow the audit log
  without bound).

Every change writes an audit line (`centre.audit.record`) in the same transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiosqlite
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from centre import audit
from centre.auth import Principal, Role, csrf_for
from centre.config import AuthConfig
from centre.store import Store, fetch_all, fetch_one, now_ms

log = logging.getLogger("onekey.centre.accounts")

USERNAME = r"^[a-z0-9][a-z0-9._-]{0,31}$"
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
MAX_DISPLAY = 64
MAX_TOKEN_NAME = 64
TOKEN_PREFIX = "okt_"
# A session's or token's last use is written at most this often (ms).
TOUCH_MS = 60_000
MAX_AUDIT = 1000


class AccountError(Exception):
    """An account operation was refused; the message says why and what to do."""


class BadCredentials(AccountError):
    """Wrong username or password (the same message for both)."""


class LockedOut(AccountError):
    """Too many failed logins for this account or from this address."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnknownAccount(AccountError):
    """No account or token has that id or name."""


class AccountConflict(AccountError):
    """The change conflicts with what is stored (a taken username, the last admin)."""


class InvalidAccount(AccountError):
    """A username, display name, password, role or token name is not acceptable."""


@dataclass(frozen=True)
class Staff:
    id: int
    username: str
    display_name: str
    role: Role
    disabled: bool
    locked_until: int
    created_at: int

    def principal(self, via: str = "session") -> Principal:
        return Principal(self.id, self.username, self.display_name, self.role,
                         "token" if via == "token" else "session")

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "display_name": self.display_name,
                "role": self.role.label}


@dataclass(frozen=True)
class TokenInfo:
    id: int
    staff_id: int
    name: str
    role: Role
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    last_used: int | None


@dataclass(frozen=True)
class NewToken:
    info: TokenInfo
    secret: str  # shown once; only its hash is stored


@dataclass(frozen=True)
class Login:
    staff: Staff
    secret: str  # the session cookie's value
    csrf: str


_STAFF_COLS = "id, username, display_name, role, disabled, locked_until, created_at"
_TOKEN_COLS = "id, staff_id, name, role, created_at, expires_at, revoked_at, last_used"


def _staff(row: Any) -> Staff:
    return Staff(row[0], row[1], row[2], Role.parse(row[3]), bool(row[4]), row[5], row[6])


def _token(row: Any) -> TokenInfo:
    return TokenInfo(row[0], row[1], row[2], Role.parse(row[3]), row[4], row[5], row[6], row[7])


def digest(secret: str) -> str:
    """What is stored for a session cookie or an API token: SHA-256 of its secret (the secret
    is 256 random bits, so a fast hash suffices; a slow one would cost every request)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def check_username(username: str) -> str:
    if not re.fullmatch(USERNAME, username):
        raise InvalidAccount(
            f"username {username[:40]!r} must be 1-32 of a-z, 0-9, '.', '_', '-' "
            "starting with a letter or digit"
        )
    return username


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidAccount(
            f"a password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters "
            f"(this one has {len(password)})"
        )
    return password


def check_display(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= MAX_DISPLAY or any(ord(c) < 32 for c in name):
        raise InvalidAccount(f"a display name must be 1 to {MAX_DISPLAY} printable characters")
    return name


def hasher_for(cfg: AuthConfig) -> PasswordHasher:
    return PasswordHasher(
        time_cost=cfg.argon2_time_cost,
        memory_cost=cfg.argon2_memory_kib,
        parallelism=cfg.argon2_parallelism,
    )


class Accounts:
    """Accounts, sessions and tokens on an open `Store` (its lock, its transactions)."""

    def __init__(
        self, store: Store, cfg: AuthConfig | None = None, clock: Callable[[], int] = now_ms
    ) -> None:
        self.store = store
        self.cfg = cfg or AuthConfig()
        self.clock = clock
        self.hasher = hasher_for(self.cfg)
        self._dummy: str | None = None  # verified against for unknown users: same time taken

    # -- accounts

    async def add(
        self,
        actor: Principal | str,
        username: str,
        display_name: str,
        role: Role,
        password: str,
        address: str = "",
    ) -> Staff:
        check_username(username)
        display_name = check_display(display_name)
        pw_hash = await asyncio.to_thread(self.hasher.hash, check_password(password))
        now = self.clock()
        async with self.store.transaction() as db:
            if await fetch_one(db, "SELECT 1 FROM staff WHERE username = ?", (username,)):
                raise AccountConflict(f"an account named {username!r} already exists")
            cur = await db.execute(
                "INSERT INTO staff (username, display_name, role, password_hash, created_at)"
                " VALUES (?,?,?,?,?)",
                (username, display_name, role.label, pw_hash, now),
            )
            staff_id = cur.lastrowid
            assert staff_id is not None
            await audit.record(db, now, actor, "user.add", f"user:{staff_id}",
                               {"username": username, "role": role.label}, address)
            return await self._get(db, staff_id)

    async def list_staff(self) -> list[Staff]:
        async with self.store.transaction(write=False) as db:
            rows = await fetch_all(db, f"SELECT {_STAFF_COLS} FROM staff ORDER BY id", ())
        return [_staff(r) for r in rows]

    async def get(self, staff_id: int) -> Staff:
        async with self.store.transaction(write=False) as db:
            return await self._get(db, staff_id)

    async def by_username(self, username: str) -> Staff:
        async with self.store.transaction(write=False) as db:
            row = await fetch_one(
                db, f"SELECT {_STAFF_COLS} FROM staff WHERE username = ?", (username,)
            )
        if row is None:
            raise UnknownAccount(f"no account named {username!r}; `onekey centre user list`")
        return _staff(row)

    async def _get(self, db: aiosqlite.Connection, staff_id: int) -> Staff:
        row = await fetch_one(db, f"SELECT {_STAFF_COLS} FROM staff WHERE id = ?", (staff_id,))
        if row is None:
            raise UnknownAccount(f"no account with id {staff_id}")
        return _staff(row)

    async def _keeps_an_admin(self, db: aiosqlite.Connection, staff_id: int) -> None:
        """Refuse a change that would leave no enabled admin (nobody could manage accounts)."""
        row = await fetch_one(
            db,
            "SELECT COUNT(*) FROM staff WHERE role = 'admin' AND disabled = 0 AND id != ?",
            (staff_id,),
        )
        if int(row[0]) == 0:
            raise AccountConflict("this is the last enabled admin; add or enable another first")

    async def set_disabled(
        self, actor: Principal | str, staff_id: int, disabled: bool, address: str = ""
    ) -> Staff:
        now = self.clock()
        async with self.store.transaction() as db:
            st = await self._get(db, staff_id)
            if disabled and st.role is Role.ADMIN and not st.disabled:
                await self._keeps_an_admin(db, staff_id)
            await db.execute(
                "UPDATE staff SET disabled = ?, failures = 0, locked_until = 0 WHERE id = ?",
                (int(disabled), staff_id),
            )
            if disabled:
                await db.execute("DELETE FROM staff_sessions WHERE staff_id = ?", (staff_id,))
            await audit.record(db, now, actor, "user.disable" if disabled else "user.enable",
                               f"user:{staff_id}", {"username": st.username}, address)
            return await self._get(db, staff_id)

    async def set_password(
        self, actor: Principal | str, staff_id: int, password: str, address: str = ""
    ) -> Staff:
        pw_hash = await asyncio.to_thread(self.hasher.hash, check_password(password))
        now = self.clock()
        async with self.store.transaction() as db:
            st = await self._get(db, staff_id)
            await db.execute(
                "UPDATE staff SET password_hash = ?, failures = 0, locked_until = 0 WHERE id = ?",
                (pw_hash, staff_id),
            )
            # Whoever knew the old password is logged out everywhere.
            await db.execute("DELETE FROM staff_sessions WHERE staff_id = ?", (staff_id,))
            await audit.record(db, now, actor, "user.passwd", f"user:{staff_id}",
                               {"username": st.username}, address)
            return await self._get(db, staff_id)

    async def set_role(
        self, actor: Principal | str, staff_id: int, role: Role, address: str = ""
    ) -> Staff:
        now = self.clock()
        async with self.store.transaction() as db:
            st = await self._get(db, staff_id)
            if st.role is Role.ADMIN and role is not Role.ADMIN and not st.disabled:
                await self._keeps_an_admin(db, staff_id)
            await db.execute("UPDATE staff SET role = ? WHERE id = ?", (role.label, staff_id))
            await audit.record(db, now, actor, "user.role", f"user:{staff_id}",
                               {"username": st.username, "from": st.role.label,
                                "to": role.label}, address)
            return await self._get(db, staff_id)

    # -- login, sessions

    def _lock_ms(self) -> int:
        return int(self.cfg.lockout_s * 1000)

    async def _verify(self, pw_hash: str | None, password: str) -> bool:
        if pw_hash is None:
            if self._dummy is None:
                self._dummy = await asyncio.to_thread(self.hasher.hash, secrets.token_hex(16))
            pw_hash = self._dummy
            real = False
        else:
            real = True
        try:
            await asyncio.to_thread(self.hasher.verify, pw_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return real

    async def login(self, username: str, password: str, address: str = "") -> Login:
        now = self.clock()
        lock_ms = self._lock_ms()
        name = username[:64]
        async with self.store.transaction(write=False) as db:
            row = await fetch_one(
                db,
                "SELECT COUNT(*), MIN(at) FROM login_failures WHERE address = ? AND at > ?",
                (address, now - lock_ms),
            )
            if int(row[0]) >= self.cfg.address_failures:
                wait = max(1, (int(row[1]) + lock_ms - now) // 1000)
                log.warning(f"event=login_blocked address={address} username={name!r}")
                raise LockedOut(
                    f"too many failed logins from this address; try again in {wait} s", wait
                )
            srow = await fetch_one(
                db, f"SELECT {_STAFF_COLS}, password_hash FROM staff WHERE username = ?", (name,)
            )
        st = _staff(srow) if srow is not None else None
        pw_hash = srow[7] if srow is not None else None
        locked = st is not None and st.locked_until > now
        ok = await self._verify(pw_hash, password[:MAX_PASSWORD]) and not locked
        if not ok or st is None or st.disabled:
            reason = ("unknown user" if st is None else "locked" if locked
                      else "wrong password" if not ok else "disabled")
            await self._failed(name, st, reason, address, now)
            if locked and st is not None:
                wait = max(1, (st.locked_until - now) // 1000)
                raise LockedOut(
                    f"this account is locked after {self.cfg.account_failures} failed logins; "
                    f"try again in {wait} s or ask an admin to set a new password", wait)
            if reason == "disabled":
                raise BadCredentials("this account is disabled; ask an admin")
            raise BadCredentials("wrong username or password")
        secret = secrets.token_urlsafe(32)
        async with self.store.transaction() as db:
            await db.execute(
                "UPDATE staff SET failures = 0, locked_until = 0 WHERE id = ?", (st.id,)
            )
            await db.execute(
                "DELETE FROM staff_sessions WHERE staff_id = ? AND (last_seen < ? OR created_at < ?)",
                (st.id, now - int(self.cfg.session_idle_s * 1000),
                 now - int(self.cfg.session_max_s * 1000)),
            )
            await db.execute(
                "INSERT INTO staff_sessions (hash, staff_id, created_at, last_seen, address)"
                " VALUES (?,?,?,?,?)",
                (digest(secret), st.id, now, now, address),
            )
            await audit.record(db, now, st.principal(), "login", f"user:{st.id}", {}, address)
        assert pw_hash is not None
        if self.hasher.check_needs_rehash(pw_hash):
            new_hash = await asyncio.to_thread(self.hasher.hash, password)
            async with self.store.transaction() as db:
                await db.execute("UPDATE staff SET password_hash = ? WHERE id = ? AND password_hash = ?",
                                 (new_hash, st.id, pw_hash))
        return Login(st, secret, csrf_for(secret))

    async def _failed(
        self, name: str, st: Staff | None, reason: str, address: str, now: int
    ) -> None:
        lock_ms = self._lock_ms()
        detail: dict[str, Any] = {"username": name, "reason": reason}
        async with self.store.transaction() as db:
            await db.execute("DELETE FROM login_failures WHERE at <= ?", (now - lock_ms,))
            await db.execute(
                "INSERT INTO login_failures (at, address, username) VALUES (?,?,?)",
                (now, address, name),
            )
            if st is not None and reason == "wrong password":
                row = await fetch_one(db, "SELECT failures FROM staff WHERE id = ?", (st.id,))
                failures = int(row[0]) + 1
                if failures >= self.cfg.account_failures:
                    await db.execute(
                        "UPDATE staff SET failures = 0, locked_until = ? WHERE id = ?",
                        (now + lock_ms, st.id),
                    )
                    detail["locked_until"] = now + lock_ms
                else:
                    await db.execute(
                        "UPDATE staff SET failures = ? WHERE id = ?", (failures, st.id)
                    )
            await audit.record(db, now, name, "login_failed",
                               f"user:{st.id}" if st else f"username:{name}", detail, address)
        log.info(f"event=login_failed username={name!r} reason={reason!r} address={address}")

    async def session(self, secret: str) -> Principal | None:
        """The principal of a session cookie, or None (unknown, expired, account disabled)."""
        now = self.clock()
        h = digest(secret)
        async with self.store.transaction(write=False) as db:
            row = await fetch_one(
                db,
                "SELECT s.created_at, s.last_seen, st.id, st.username, st.display_name, st.role,"
                " st.disabled FROM staff_sessions s JOIN staff st ON st.id = s.staff_id"
                " WHERE s.hash = ?",
                (h,),
            )
        if row is None or row[6]:
            return None
        created, last = int(row[0]), int(row[1])
        if (now - last > self.cfg.session_idle_s * 1000
                or now - created > self.cfg.session_max_s * 1000):
            async with self.store.transaction() as db:
                await db.execute("DELETE FROM staff_sessions WHERE hash = ?", (h,))
            return None
        if now - last >= TOUCH_MS:
            async with self.store.transaction() as db:
                await db.execute("UPDATE staff_sessions SET last_seen = ? WHERE hash = ?", (now, h))
        return Principal(row[2], row[3], row[4], Role.parse(row[5]), "session")

    async def logout(self, secret: str, who: Principal, address: str = "") -> None:
        now = self.clock()
        async with self.store.transaction() as db:
            await db.execute("DELETE FROM staff_sessions WHERE hash = ?", (digest(secret),))
            await audit.record(db, now, who, "logout", f"user:{who.staff_id}", {}, address)

    # -- API tokens

    async def token(self, secret: str) -> Principal | None:
        """The principal of an API token, or None (unknown, expired, revoked, owner disabled)."""
        if not secret.startswith(TOKEN_PREFIX):
            return None
        now = self.clock()
        async with self.store.transaction(write=False) as db:
            row = await fetch_one(
                db,
                "SELECT t.id, t.role, t.expires_at, t.revoked_at, t.last_used, st.id, st.username,"
                " st.display_name, st.role, st.disabled FROM api_tokens t"
                " JOIN staff st ON st.id = t.staff_id WHERE t.hash = ?",
                (digest(secret),),
            )
        if row is None or row[3] is not None or row[9] or (row[2] is not None and row[2] <= now):
            return None
        if row[4] is None or now - int(row[4]) >= TOUCH_MS:
            async with self.store.transaction() as db:
                await db.execute("UPDATE api_tokens SET last_used = ? WHERE id = ?", (now, row[0]))
        role = min(Role.parse(row[1]), Role.parse(row[8]))
        return Principal(row[5], row[6], row[7], role, "token")

    async def create_token(
        self,
        actor: Principal | str,
        staff_id: int,
        name: str,
        role: Role | None = None,
        expires_at: int | None = None,
        address: str = "",
    ) -> NewToken:
        name = name.strip()
        if not 1 <= len(name) <= MAX_TOKEN_NAME or any(ord(c) < 32 for c in name):
            raise InvalidAccount(f"a token name must be 1 to {MAX_TOKEN_NAME} printable characters")
        now = self.clock()
        if expires_at is not None and expires_at <= now:
            raise InvalidAccount("a token's expiry must be in the future")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with self.store.transaction() as db:
            st = await self._get(db, staff_id)
            role = role or st.role
            if role > st.role:
                raise InvalidAccount(
                    f"a token's role ({role.label}) cannot be higher than its owner's "
                    f"({st.role.label})"
                )
            if st.disabled:
                raise AccountConflict(f"account {st.username!r} is disabled; enable it first")
            cur = await db.execute(
                "INSERT INTO api_tokens (hash, staff_id, name, role, created_at, expires_at)"
                " VALUES (?,?,?,?,?,?)",
                (digest(secret), staff_id, name, role.label, now, expires_at),
            )
            token_id = cur.lastrowid
            assert token_id is not None
            await audit.record(db, now, actor, "token.create", f"user:{staff_id}",
                               {"token": token_id, "name": name, "role": role.label,
                                "expires_at": expires_at}, address)
            row = await fetch_one(db, f"SELECT {_TOKEN_COLS} FROM api_tokens WHERE id = ?",
                                  (token_id,))
        return NewToken(_token(row), secret)

    async def tokens(self, staff_id: int) -> list[TokenInfo]:
        async with self.store.transaction(write=False) as db:
            await self._get(db, staff_id)
            rows = await fetch_all(
                db, f"SELECT {_TOKEN_COLS} FROM api_tokens WHERE staff_id = ? ORDER BY id",
                (staff_id,),
            )
        return [_token(r) for r in rows]

    async def revoke_token(
        self, actor: Principal | str, staff_id: int, token_id: int, address: str = ""
    ) -> TokenInfo:
        now = self.clock()
        async with self.store.transaction() as db:
            row = await fetch_one(
                db, f"SELECT {_TOKEN_COLS} FROM api_tokens WHERE id = ? AND staff_id = ?",
                (token_id, staff_id),
            )
            if row is None:
                raise UnknownAccount(f"account {staff_id} has no token {token_id}")
            if row[6] is None:
                await db.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ?",
                                 (now, token_id))
                await audit.record(db, now, actor, "token.revoke", f"user:{staff_id}",
                                   {"token": token_id, "name": row[2]}, address)
            row = await fetch_one(db, f"SELECT {_TOKEN_COLS} FROM api_tokens WHERE id = ?",
                                  (token_id,))
        return _token(row)

    # -- the audit log

    async def audit_log(
        self,
        limit: int = 100,
        before: int | None = None,
        target: str | None = None,
        actor: str | None = None,
    ) -> list[audit.AuditEntry]:
        where: list[str] = []
        args: list[Any] = []
        if before is not None:
            where.append("id < ?")
            args.append(before)
        if target is not None:
            where.append("target = ?")
            args.append(target)
        if actor is not None:
            where.append("actor = ?")
            args.append(actor)
        sql = f"SELECT {audit.COLUMNS} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        async with self.store.transaction(write=False) as db:
            rows = await fetch_all(db, sql, (*args, max(1, min(limit, MAX_AUDIT))))
        return [audit.entry(r) for r in rows]
