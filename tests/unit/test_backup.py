"""Backups and restores of a service database (transport.backup) on small files in tmp_path."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from centre.cli import CENTRE_DB
from gateway.cli import GATEWAY_DB
from transport import backup
from transport.servicelock import ServiceLock, ServiceLockedError


def make_gateway_db(path: Path, events: range) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT);"
        "CREATE TABLE devices (id TEXT PRIMARY KEY);"
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, device TEXT);"
    )
    conn.executemany("INSERT INTO events VALUES (?, 'btn')", [(i,) for i in events])
    conn.commit()
    conn.close()


def event_seqs(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")]
    finally:
        conn.close()


def ticking_clock() -> Callable[[], datetime]:
    t = iter(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i) for i in range(10_000))
    return lambda: next(t)


@pytest.fixture
def zero_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_backup_copies_are_0600_in_a_0700_directory_whatever_the_umask(
    tmp_path: Path, zero_umask: None
) -> None:
    db = tmp_path / "gateway.db"
    make_gateway_db(db, range(1, 4))
    result = backup.backup(db, tmp_path / "backups", GATEWAY_DB)
    assert (tmp_path / "backups").stat().st_mode & 0o777 == 0o700
    assert result.path.stat().st_mode & 0o777 == 0o600
    assert result.path.name.startswith("gateway-") and result.path.name.endswith("Z.db")
    assert result.size == result.path.stat().st_size > 0
    assert event_seqs(result.path) == [1, 2, 3]
    assert list((tmp_path / "backups").iterdir()) == [result.path]  # no .part left behind


def test_backup_keeps_only_the_newest_copies(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    make_gateway_db(db, range(1, 2))
    clock = ticking_clock()
    made = [backup.backup(db, tmp_path / "b", GATEWAY_DB, keep=3, clock=clock).path for _ in range(5)]
    assert backup.copies(tmp_path / "b", GATEWAY_DB) == made[-3:]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [p.name for p in made[-3:]]


def test_backup_of_a_missing_database_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(backup.BackupError, match=r"no database at .*gateway\.db"):
        backup.backup(tmp_path / "gateway.db", tmp_path / "b", GATEWAY_DB)
    assert not (tmp_path / "gateway.db").exists()


def test_restore_refuses_while_the_service_holds_the_database(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    make_gateway_db(db, range(1, 3))
    copy = backup.backup(db, tmp_path / "b", GATEWAY_DB).path
    with ServiceLock(db), pytest.raises(backup.BackupError) as err:
        backup.restore(db, copy, GATEWAY_DB)
    assert f"pid {os.getpid()}" in str(err.value) and "stop it first" in str(err.value)
    assert "onekey gateway run" in str(err.value)


def test_a_running_service_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    with ServiceLock(db), pytest.raises(ServiceLockedError):
        ServiceLock(db).acquire()
    ServiceLock(db).acquire()  # free again once the first holder let go


@pytest.mark.parametrize("wrong", ["text", "centre", "corrupt"])
def test_restore_refuses_a_file_that_is_not_a_sound_gateway_database(
    tmp_path: Path, wrong: str
) -> None:
    db = tmp_path / "gateway.db"
    make_gateway_db(db, range(1, 3))
    bad = tmp_path / "bad.db"
    if wrong == "text":
        bad.write_text("not a database\n" * 100)
        match = "cannot read .* as an SQLite database"
    elif wrong == "centre":
        conn = sqlite3.connect(bad)
        conn.executescript("CREATE TABLE gateways (id TEXT); CREATE TABLE alarms (id TEXT);")
        conn.close()
        match = "is not a gateway database: it lacks the tables devices, events, meta"
    else:
        make_gateway_db(bad, range(1, 2000))
        data = bytearray(bad.read_bytes())
        for page in range(1, len(data) // 4096):
            data[page * 4096] = 0x07  # no valid b-tree page type
        bad.write_bytes(bytes(data))
        match = "integrity check|SQLite database"
    with pytest.raises(backup.BackupError, match=match):
        backup.restore(db, bad, GATEWAY_DB)
    assert event_seqs(db) == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.db", "gateway.db", "gateway.db.lock"]


def test_a_centre_copy_is_refused_as_a_gateway_database_and_the_other_way(tmp_path: Path) -> None:
    gw = tmp_path / "gateway.db"
    make_gateway_db(gw, range(1, 2))
    with pytest.raises(backup.BackupError, match="not a centre database"):
        backup.check_database(gw, CENTRE_DB)


def test_restore_keeps_the_current_database_aside_with_its_wal_and_drops_the_stale_wal(
    tmp_path: Path,
) -> None:
    # A gateway that crashed leaves committed rows in gateway.db-wal, not yet in gateway.db.
    live = tmp_path / "live"
    live.mkdir()
    make_gateway_db(live / "gateway.db", range(1, 3))
    conn = sqlite3.connect(live / "gateway.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("INSERT INTO events VALUES (99, 'btn')")
    conn.commit()
    crashed = tmp_path / "state"
    crashed.mkdir()
    for name in ("gateway.db", "gateway.db-wal"):
        shutil.copy(live / name, crashed / name)
    conn.close()
    db = crashed / "gateway.db"
    assert (crashed / "gateway.db-wal").stat().st_size > 0
    source = tmp_path / "copy.db"
    make_gateway_db(source, range(10, 13))

    result = backup.restore(db, source, GATEWAY_DB, clock=ticking_clock())

    assert event_seqs(db) == [10, 11, 12]
    assert not (crashed / "gateway.db-wal").exists()
    assert result.aside is not None and result.aside.stat().st_mode & 0o777 == 0o600
    assert event_seqs(result.aside) == [1, 2, 99]  # the old WAL's commit is kept aside
    assert db.stat().st_mode & 0o777 == 0o600
