"""Staff accounts and the app-level check on a real SQLite file: every route's least role,
login, sessions, CSRF, lockout, API tokens, disabled accounts, the audit log, the CLI."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from centre.access import ACCESS, PUBLIC
from centre.accounts import AccountConflict, Accounts, InvalidAccount
from centre.api import create_app
from centre.auth import COOKIE, Role, app_routes, route_methods, route_template
from centre.config import AuthConfig, CentreConfig, load_config
from centre.enrol import init_centre
from centre.store import Store, StoreError
from harness.fakegateway import FakeBroker
from onekey.cli import main as onekey_main
from tests.auth_support import act_as

PASSWORD = "correct horse battery"
# Light argon2 parameters keep the tests quick; the default parameters have their own test.
FAST = AuthConfig(argon2_time_cost=1, argon2_memory_kib=64, argon2_parallelism=1)
T0 = 1_800_000_000_000


@dataclass
class Centre:
    app: FastAPI
    cfg: CentreConfig
    transport: httpx.ASGITransport
    now: list[int]
    tokens: dict[Role, str]  # a token of each role's account
    ids: dict[str, int]

    def client(self, base: str = "http://centre", **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport, base_url=base, **kw)

    def as_role(self, role: Role) -> httpx.AsyncClient:
        return self.client(headers={"Authorization": f"Bearer {self.tokens[role]}"})


async def seed(cfg: CentreConfig) -> tuple[dict[Role, str], dict[str, int]]:
    tokens: dict[Role, str] = {}
    ids: dict[str, int] = {}
    async with Store(cfg.db_path) as store:
        acc = Accounts(store, cfg.auth)
        for name, role in (("admin", Role.ADMIN), ("bc", Role.BROADCASTER), ("op", Role.OPERATOR)):
            st = await acc.add("cli:test", name, name.title(), role, PASSWORD)
            ids[name] = st.id
            tokens[role] = (await acc.create_token("cli:test", st.id, "test")).secret
    return tokens, ids


@pytest.fixture
async def centre(tmp_path: Path) -> AsyncIterator[Centre]:
    path, _ = init_centre(tmp_path / "centre")
    cfg = dataclasses.replace(load_config(path), auth=FAST)
    tokens, ids = await seed(cfg)
    now = [T0]
    app = create_app(cfg, client_factory=FakeBroker().factory, clock=lambda: now[0])
    async with app.router.lifespan_context(app):
        yield Centre(app, cfg, httpx.ASGITransport(app=app), now, tokens, ids)


async def login(c: Centre, http: httpx.AsyncClient, user: str = "admin",
                password: str = PASSWORD) -> httpx.Response:
    return await http.post("/api/session", json={"username": user, "password": password})


def concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "999", template)


def audit_rows(cfg: CentreConfig) -> list[tuple[str, str, str]]:
    with sqlite3.connect(cfg.db_path) as db:
        return db.execute("SELECT action, actor, target FROM audit ORDER BY id").fetchall()


# -- every route


def test_the_access_table_and_the_apps_routes_are_the_same_set(tmp_path: Path) -> None:
    path, _ = init_centre(tmp_path / "centre")
    app = create_app(load_config(path), client_factory=FakeBroker().factory)
    routes = {(m, route_template(r)) for r in app_routes(app) for m in route_methods(r)}
    assert routes == set(ACCESS)


async def test_every_route_refuses_anonymous_and_roles_below_its_own(centre: Centre) -> None:
    checked = 0
    for route in app_routes(centre.app):
        template = route_template(route)
        assert template is not None
        for method in route_methods(route):
            need = ACCESS[(method, template)]
            url = concrete(template)
            for body in (None, b"{not json"):
                kw: dict[str, Any] = {} if body is None else {
                    "content": body, "headers": {"Content-Type": "application/json"}}
                async with centre.client() as anon:
                    r = await anon.request(method, url, **kw)
                if need is PUBLIC:
                    assert r.status_code not in (401, 403), (method, url, r.text)
                    continue
                assert r.status_code == 401, (method, url, body, r.status_code, r.text)
                for role in Role:
                    if role >= need:
                        continue
                    async with centre.as_role(role) as http:
                        r = await http.request(method, url, **kw)
                    assert r.status_code == 403, (method, url, role, r.status_code, r.text)
                    checked += 1
                if (method, template) == ("GET", "/api/stream"):
                    # An endless response, which httpx over ASGI would wait for: a logged-in
                    # operator reads it in tests/integration/test_console_page.py.
                    continue
                # the least role itself gets past the check (whatever the route then says)
                async with centre.as_role(need) as http:
                    r = await http.request(method, url, **kw)
                assert r.status_code not in (401, 403), (method, url, need, r.text)
    assert checked > 20


async def test_an_anonymous_malformed_body_is_refused_before_it_is_parsed(centre: Centre) -> None:
    async with centre.client() as anon:
        r = await anon.post("/api/broadcasts", content=b"{oops",
                            headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    async with centre.as_role(Role.BROADCASTER) as http:
        r = await http.post("/api/broadcasts", content=b"{oops",
                            headers={"Content-Type": "application/json"})
    assert r.status_code == 422


async def test_a_route_missing_from_the_access_table_is_refused_even_to_admins(
    centre: Centre,
) -> None:
    @centre.app.get("/unlisted")
    async def unlisted() -> dict[str, str]:
        return {"open": "yes"}

    async with centre.as_role(Role.ADMIN) as http:
        r = await http.get("/unlisted")
    assert r.status_code == 403 and "access table" in r.json()["detail"]


async def test_api_description_needs_a_login_and_the_default_docs_are_off(centre: Centre) -> None:
    async with centre.client() as anon:
        assert (await anon.get("/openapi.json")).status_code == 401
        assert (await anon.get("/redoc")).status_code == 404
        # /docs is the console's own reference page (no CDN), for staff only.
        assert (await anon.get("/docs")).status_code == 401
    async with centre.as_role(Role.OPERATOR) as http:
        r = await http.get("/openapi.json")
    assert r.status_code == 200 and "/api/session" in r.json()["paths"]


async def test_act_as_satisfies_the_check_with_its_role(centre: Centre) -> None:
    act_as(centre.app, Role.OPERATOR, "duty")
    async with centre.client() as http:
        assert (await http.get("/api/alarms")).status_code == 200
        assert (await http.get("/api/users")).status_code == 403


# -- login, sessions, CSRF


async def test_login_sets_a_strict_http_only_session_and_logout_ends_it(centre: Centre) -> None:
    async with centre.client() as http:
        r = await login(centre, http)
        assert r.status_code == 200
        body = r.json()
        assert body["user"] == {"id": centre.ids["admin"], "username": "admin",
                                "display_name": "Admin", "role": "admin"}
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        low = cookie.lower()
        assert "httponly" in low and "samesite=strict" in low and "path=/" in low
        assert "secure" not in low  # plain HTTP here
        secret = http.cookies[COOKIE]
        me = await http.get("/api/session")
        assert me.status_code == 200 and me.json() == body
        # the database holds no cookie value
        with sqlite3.connect(centre.cfg.db_path) as db:
            stored = [r[0] for r in db.execute("SELECT hash FROM staff_sessions")]
        assert secret not in stored and len(stored) == 1
        out = await http.delete("/api/session", headers={"X-CSRF-Token": body["csrf"]})
        assert out.status_code == 204
    # the old cookie, replayed after logout
    async with centre.client(cookies={COOKIE: secret}) as replay:
        assert (await replay.get("/api/session")).status_code == 401
    actions = [a for a, _, _ in audit_rows(centre.cfg)]
    assert actions[-2:] == ["login", "logout"]


async def test_the_cookie_is_secure_when_served_over_tls(centre: Centre) -> None:
    async with centre.client("https://centre") as http:
        r = await login(centre, http)
    assert "secure" in r.headers["set-cookie"].lower()


async def test_a_forged_cookie_is_refused(centre: Centre) -> None:
    async with centre.client(cookies={COOKIE: "A" * 43}) as http:
        assert (await http.get("/api/alarms")).status_code == 401


async def test_a_change_without_the_right_csrf_token_is_refused_and_changes_nothing(
    centre: Centre,
) -> None:
    new = {"username": "op2", "display_name": "Op Two", "role": "operator", "password": PASSWORD}
    async with centre.client() as http:
        csrf = (await login(centre, http)).json()["csrf"]
        assert (await http.post("/api/users", json=new)).status_code == 403
        r = await http.post("/api/users", json=new, headers={"X-CSRF-Token": "0" * 64})
        assert r.status_code == 403 and "CSRF" in r.json()["detail"]
        names = [u["username"] for u in (await http.get("/api/users")).json()]
        assert "op2" not in names
        r = await http.post("/api/users", json=new, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201
    # a second session's token does not fit the first
    async with centre.client() as a, centre.client() as b:
        await login(centre, a)
        other = (await login(centre, b)).json()["csrf"]
        r = await a.post(f"/api/users/{centre.ids['op']}/disable", headers={"X-CSRF-Token": other})
        assert r.status_code == 403


async def test_a_session_ends_after_idle_time_and_after_its_maximum_age(centre: Centre) -> None:
    idle_ms = int(FAST.session_idle_s * 1000)
    async with centre.client() as http:
        await login(centre, http)
        centre.now[0] += idle_ms - 1000
        assert (await http.get("/api/session")).status_code == 200
        centre.now[0] += idle_ms + 1000  # idle since the last use
        assert (await http.get("/api/session")).status_code == 401
    async with centre.client() as http:
        await login(centre, http)
        start = centre.now[0]
        while centre.now[0] - start < FAST.session_max_s * 1000 - idle_ms:
            centre.now[0] += idle_ms // 2  # used often enough never to be idle
            assert (await http.get("/api/session")).status_code == 200
        centre.now[0] = start + int(FAST.session_max_s * 1000) + 1
        assert (await http.get("/api/session")).status_code == 401


# -- lockout


async def test_an_account_locks_after_repeated_failures_and_unlocks_later(centre: Centre) -> None:
    async with centre.client() as http:
        for _ in range(FAST.account_failures):
            assert (await login(centre, http, "op", "wrong password!")).status_code == 401
        r = await login(centre, http, "op")  # the right password, but locked
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        # another account from the same address is not locked
        assert (await login(centre, http, "bc")).status_code == 200
        centre.now[0] += int(FAST.lockout_s * 1000) + 1
        assert (await login(centre, http, "op")).status_code == 200
    failed = [t for a, _, t in audit_rows(centre.cfg) if a == "login_failed"]
    assert len(failed) == FAST.account_failures + 1


async def test_an_address_is_blocked_after_repeated_failures_across_usernames(
    centre: Centre,
) -> None:
    async with centre.client() as http:
        for i in range(FAST.address_failures):
            assert (await login(centre, http, f"nobody{i}", "whatever1234")).status_code == 401
        r = await login(centre, http, "admin")
        assert r.status_code == 429 and "address" in r.json()["detail"]
        centre.now[0] += int(FAST.lockout_s * 1000) + 1
        assert (await login(centre, http, "admin")).status_code == 200
    # blocked attempts are logged, not audited: the audit log cannot be grown without bound
    failed = [a for a, _, _ in audit_rows(centre.cfg) if a == "login_failed"]
    assert len(failed) == FAST.address_failures


# -- tokens and disabled accounts


async def test_tokens_are_scoped_revocable_expire_and_need_no_csrf(centre: Centre) -> None:
    admin = centre.ids["admin"]
    async with centre.as_role(Role.ADMIN) as http:
        r = await http.post(f"/api/users/{admin}/tokens", json={"name": "feed", "role": "operator"})
        assert r.status_code == 201
        low = r.json()
        r = await http.post(f"/api/users/{centre.ids['op']}/tokens",
                            json={"name": "x", "role": "admin"})
        assert r.status_code == 422 and "higher" in r.json()["detail"]
        r = await http.post(f"/api/users/{admin}/tokens",
                            json={"name": "short", "expires_at": centre.now[0] + 60_000})
        short = r.json()["secret"]
        listed = (await http.get(f"/api/users/{admin}/tokens")).json()
        assert all("secret" not in t for t in listed) and len(listed) == 3
    async with centre.client(headers={"Authorization": f"Bearer {low['secret']}"}) as tok:
        assert (await tok.get("/api/alarms")).status_code == 200
        assert (await tok.get("/api/users")).status_code == 403
    async with centre.as_role(Role.ADMIN) as http:
        r = await http.delete(f"/api/users/{admin}/tokens/{low['id']}")
        assert r.status_code == 200 and r.json()["revoked_at"] is not None
    async with centre.client(headers={"Authorization": f"Bearer {low['secret']}"}) as tok:
        assert (await tok.get("/api/alarms")).status_code == 401
    async with centre.client(headers={"Authorization": f"Bearer {short}"}) as tok:
        assert (await tok.get("/api/alarms")).status_code == 200
        centre.now[0] += 60_001
        assert (await tok.get("/api/alarms")).status_code == 401
    with sqlite3.connect(centre.cfg.db_path) as db:
        stored = [r[0] for r in db.execute("SELECT hash FROM api_tokens")]
    assert low["secret"] not in stored
    actions = [a for a, _, _ in audit_rows(centre.cfg)]
    assert actions.count("token.create") >= 3 and "token.revoke" in actions


async def test_a_demoted_owner_limits_their_tokens(centre: Centre) -> None:
    async with centre.as_role(Role.ADMIN) as http:
        r = await http.put(f"/api/users/{centre.ids['bc']}/role", json={"role": "operator"})
        assert r.status_code == 200
    async with centre.as_role(Role.BROADCASTER) as http:  # bc's token, made as broadcaster
        assert (await http.post("/api/broadcasts/x/cancel", json={})).status_code == 403


async def test_disabling_an_account_stops_its_sessions_and_tokens_at_once(centre: Centre) -> None:
    async with centre.client() as session:
        await login(centre, session, "op")
        assert (await session.get("/api/alarms")).status_code == 200
        async with centre.as_role(Role.ADMIN) as admin:
            r = await admin.post(f"/api/users/{centre.ids['op']}/disable")
            assert r.status_code == 200 and r.json()["disabled"] is True
        assert (await session.get("/api/alarms")).status_code == 401
        async with centre.as_role(Role.OPERATOR) as tok:
            assert (await tok.get("/api/alarms")).status_code == 401
        r = await login(centre, session, "op")
        assert r.status_code == 401 and "disabled" in r.json()["detail"]
        async with centre.as_role(Role.ADMIN) as admin:
            await admin.post(f"/api/users/{centre.ids['op']}/enable")
        async with centre.as_role(Role.OPERATOR) as tok:
            assert (await tok.get("/api/alarms")).status_code == 200


async def test_a_new_password_ends_the_accounts_sessions(centre: Centre) -> None:
    async with centre.client() as session:
        await login(centre, session, "op")
        async with centre.as_role(Role.ADMIN) as admin:
            r = await admin.put(f"/api/users/{centre.ids['op']}/password",
                                json={"password": "a brand new one"})
            assert r.status_code == 200
        assert (await session.get("/api/alarms")).status_code == 401
        assert (await login(centre, session, "op")).status_code == 401
        assert (await login(centre, session, "op", "a brand new one")).status_code == 200


async def test_the_last_enabled_admin_cannot_be_disabled_or_demoted(centre: Centre) -> None:
    admin = centre.ids["admin"]
    async with centre.as_role(Role.ADMIN) as http:
        assert (await http.post(f"/api/users/{admin}/disable")).status_code == 409
        r = await http.put(f"/api/users/{admin}/role", json={"role": "operator"})
        assert r.status_code == 409


async def test_a_short_password_and_a_taken_username_are_refused(centre: Centre) -> None:
    async with centre.as_role(Role.ADMIN) as http:
        r = await http.post("/api/users", json={"username": "x", "display_name": "X",
                                                "role": "operator", "password": "short"})
        assert r.status_code == 422 and "10" in r.json()["detail"]
        r = await http.post("/api/users", json={"username": "op", "display_name": "X",
                                                "role": "operator", "password": PASSWORD})
        assert r.status_code == 409


# -- hashes and the audit log


async def test_passwords_are_argon2id_with_the_documented_parameters(tmp_path: Path) -> None:
    async with Store(tmp_path / "c.db") as store:
        await Accounts(store).add("cli:test", "admin", "Admin", Role.ADMIN, PASSWORD)
    with sqlite3.connect(tmp_path / "c.db") as db:
        (h,) = db.execute("SELECT password_hash FROM staff").fetchone()
    assert h.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PASSWORD not in h


async def test_the_audit_log_refuses_update_and_delete(centre: Centre) -> None:
    async with centre.client() as http:
        await login(centre, http)
    with sqlite3.connect(centre.cfg.db_path) as db:
        for sql in ("UPDATE audit SET actor = 'someone'", "DELETE FROM audit"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(sql)


async def test_a_change_and_its_audit_line_commit_together(tmp_path: Path) -> None:
    async with Store(tmp_path / "c.db") as store:
        acc = Accounts(store, FAST)
        await acc.add("cli:test", "admin", "Admin", Role.ADMIN, PASSWORD)
    with sqlite3.connect(tmp_path / "c.db") as db:
        db.execute("CREATE TRIGGER no_audit BEFORE INSERT ON audit "
                   "BEGIN SELECT RAISE(ABORT, 'audit refused'); END")
    async with Store(tmp_path / "c.db") as store:
        acc = Accounts(store, FAST)
        with pytest.raises(StoreError, match="audit refused"):
            await acc.add("cli:test", "op", "Op", Role.OPERATOR, PASSWORD)
        assert [s.username for s in await acc.list_staff()] == ["admin"]


async def test_admins_read_the_audit_log_newest_first_with_filters(centre: Centre) -> None:
    async with centre.client() as http:
        await login(centre, http, "op", "not the password")
        await login(centre, http, "op")
    async with centre.as_role(Role.ADMIN) as http:
        rows = (await http.get("/api/audit", params={"target": f"user:{centre.ids['op']}"})).json()
        assert [r["action"] for r in rows][:2] == ["login", "login_failed"]
        assert rows[0]["actor"] == "op" and rows[0]["address"]
        older = (await http.get("/api/audit", params={"before": rows[0]["id"], "limit": 1})).json()
        assert [r["id"] for r in older] == [rows[0]["id"] - 1]
        mine = (await http.get("/api/audit", params={"actor": "cli:test"})).json()
        assert mine and all(r["actor"] == "cli:test" for r in mine)


# -- accounts API errors are typed


async def test_accounts_errors_are_typed(tmp_path: Path) -> None:
    async with Store(tmp_path / "c.db") as store:
        acc = Accounts(store, FAST)
        with pytest.raises(InvalidAccount, match="username"):
            await acc.add("cli:test", "Bad Name", "X", Role.ADMIN, PASSWORD)
        st = await acc.add("cli:test", "admin", "Admin", Role.ADMIN, PASSWORD)
        with pytest.raises(AccountConflict, match="last enabled admin"):
            await acc.set_disabled("cli:test", st.id, True)


# -- the command line


def test_init_creates_the_first_admin_and_user_commands_manage_accounts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "centre"
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    assert onekey_main(["centre", "init", "--dir", str(d), "--admin", "boss",
                        "--admin-password-file", str(pw)]) == 0
    cfg = d / "centre.toml"
    assert "password set from file" in capsys.readouterr().out
    assert onekey_main(["centre", "user", "add", "--config", str(cfg), "duty",
                        "--role", "operator", "--display-name", "Duty Officer"]) == 0
    out = capsys.readouterr().out
    generated = re.search(r"password: (\S+)", out)
    assert generated and "shown once" in out
    assert onekey_main(["centre", "user", "list", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "username=boss role=admin state=enabled" in out
    assert "username=duty role=operator state=enabled" in out
    assert onekey_main(["centre", "user", "token", "create", "--config", str(cfg), "duty",
                        "--name", "cap-feed", "--expires-days", "30"]) == 0
    secret = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("okt_")]
    assert len(secret) == 1
    assert onekey_main(["centre", "user", "token", "list", "--config", str(cfg), "duty"]) == 0
    assert "name=cap-feed role=operator state=active" in capsys.readouterr().out
    assert onekey_main(["centre", "user", "token", "revoke", "--config", str(cfg), "duty",
                        "1"]) == 0
    assert onekey_main(["centre", "user", "disable", "--config", str(cfg), "duty"]) == 0
    assert onekey_main(["centre", "user", "passwd", "--config", str(cfg), "duty",
                        "--password-file", str(pw)]) == 0
    capsys.readouterr()
    # errors: one line, exit 2
    assert onekey_main(["centre", "user", "disable", "--config", str(cfg), "nobody"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["onekey: error: no account named 'nobody'; `onekey centre user list`"]
    assert onekey_main(["centre", "user", "disable", "--config", str(cfg), "boss"]) == 2
    assert "last enabled admin" in capsys.readouterr().err
    with sqlite3.connect(d / "centre.db") as db:
        actions = [r[0] for r in db.execute("SELECT action FROM audit ORDER BY id")]
        actors = {r[0] for r in db.execute("SELECT actor FROM audit")}
    assert actions == ["user.add", "user.add", "token.create", "token.revoke", "user.disable",
                       "user.passwd"]
    assert all(a.startswith("cli") for a in actors)


def test_init_without_a_password_file_prints_a_generated_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert onekey_main(["centre", "init", "--dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    m = re.search(r"admin account admin password: (\S+)", out)
    assert m and len(m.group(1)) >= 20


def test_auth_settings_are_read_from_the_config_and_checked(tmp_path: Path) -> None:
    from centre.config import ConfigError

    path, _ = init_centre(tmp_path / "c")
    assert load_config(path).auth == AuthConfig()
    base = path.read_text()
    path.write_text(base + "\n[auth]\naccount_failures = 3\nsession_idle_s = 600\n")
    auth = load_config(path).auth
    assert auth.account_failures == 3 and auth.session_idle_s == 600.0
    for bad, says in (("account_failures = 0", "account_failures"),
                      ("session_idle_s = 100000", "session_idle_s must not exceed"),
                      ("lockout = 5", "unknown field 'lockout'")):
        path.write_text(base + f"\n[auth]\n{bad}\n")
        with pytest.raises(ConfigError, match=says):
            load_config(path)


def test_cap_import_without_a_token_says_how_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ONEKEY_TOKEN", raising=False)
    xml = tmp_path / "a.xml"
    xml.write_text("<alert/>")
    argv = ["cap", "import", str(xml), "--by", "Li", "--api", "http://127.0.0.1:9"]
    assert onekey_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a staff API token" in err and "onekey centre user token create" in err
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert onekey_main([*argv, "--token-file", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err


async def test_mounts_and_websockets_are_checked_like_other_routes(
    centre: Centre, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from starlette.staticfiles import StaticFiles
    from starlette.websockets import WebSocket

    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("hello")
    centre.app.mount("/files", StaticFiles(directory=files))

    @centre.app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text("open")
        await socket.close()

    async with centre.as_role(Role.ADMIN) as http:  # not in the table: refused
        assert (await http.get("/files/a.txt")).status_code == 403
    monkeypatch.setitem(ACCESS, ("GET", "/files/{path:path}"), Role.OPERATOR)
    async with centre.client() as anon:
        assert (await anon.get("/files/a.txt")).status_code == 401
    async with centre.as_role(Role.OPERATOR) as http:
        r = await http.get("/files/a.txt")
        assert r.status_code == 200 and r.text == "hello"
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "raw_path": b"/ws", "root_path": "",
             "headers": [], "query_string": b"", "scheme": "ws", "server": ("centre", 80),
             "client": ("192.0.2.1", 5000), "subprotocols": [], "asgi": {"version": "3.0"}}
    await centre.app(scope, receive, send)
    assert [(m["type"], m.get("code")) for m in sent] == [("websocket.close", 1008)]


async def test_a_hash_made_with_other_parameters_is_replaced_at_login(tmp_path: Path) -> None:
    async with Store(tmp_path / "c.db") as store:
        await Accounts(store, FAST).add("cli:test", "op", "Op", Role.OPERATOR, PASSWORD)
        stronger = dataclasses.replace(FAST, argon2_time_cost=2)
        await Accounts(store, stronger).login("op", PASSWORD)
    with sqlite3.connect(tmp_path / "c.db") as db:
        (h,) = db.execute("SELECT password_hash FROM staff").fetchone()
    assert ",t=2," in h
