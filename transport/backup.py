"""Backup and restore of the gateway's and the centre's SQLite databases (docs/operations.md).

A backup is taken with SQLite's online backup API while the service runs: the copy is one
consistent snapshot (a read transaction in WAL mode, which never blocks the service's
writers), written to a `.part` file, checked with `PRAGMA integrity_check`, then renamed
into place as KIND-YYYYmmddTHHMMSS.ffffffZ.db (UTC, so names sort by time). The newest
`keep` copies are kept. Copies are 0600 in a 0700 directory: they hold device keys.

A restore refuses while the service holds the database (`transport.servicelock`), checks
that the file is a sound database of the right kind (its tables), keeps the current database
aside (itself a consistent copy, its WAL folded in), removes the old -wal and -shm files (a
stale WAL applied to another database would corrupt it) and puts the copy in place.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from transport import servicelock
from transport.keys import SQLITE_SIDE_FILES, private_db, private_dir

log = logging.getLogger("onekey.transport.backup")

DEFAULT_KEEP = 7


class BackupError(Exception):
    """A backup or restore cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class DbKind:
    """What a database of one service looks like, and how that service is stopped."""

    name: str  # "gateway" or "centre": the copies' file name prefix
    tables: frozenset[str]  # tables a database of this kind has
    stop_hint: str  # how a technician stops the service


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    duration_s: float
    removed: tuple[Path, ...]


@dataclass(frozen=True)
class RestoreResult:
    db: Path
    aside: Path | None
    duration_s: float


def _utc_stamp(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S.%fZ")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _connect(path: Path, mode: str = "rw") -> sqlite3.Connection:
    # A URI with mode=rw or ro: never create a database where none was.
    try:
        uri = f"{path.resolve().as_uri()}?mode={mode}"
        return sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {path}: {exc}") from None


def check_database(path: Path, kind: DbKind) -> None:
    """Raises BackupError unless `path` is a sound SQLite database of `kind`."""
    if not path.is_file():
        raise BackupError(f"{path} does not exist or is not a file")
    conn = _connect(path, "ro")
    try:
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"cannot read {path} as an SQLite database: {exc}") from None
    finally:
        conn.close()
    if result != ["ok"]:
        raise BackupError(f"{path} fails SQLite's integrity check: {'; '.join(result[:5])}")
    missing = kind.tables - tables
    if missing:
        raise BackupError(
            f"{path} is not a {kind.name} database: it lacks the tables {', '.join(sorted(missing))}"
        )


def _copy(src_path: Path, dst_path: Path) -> None:
    """A consistent copy of `src_path` into a new 0600 file `dst_path`, in rollback-journal
    mode (a copy is one self-contained file; the service turns WAL on again when it opens it)."""
    private_db(dst_path)
    src = _connect(src_path)
    try:
        dst = sqlite3.connect(dst_path, isolation_level=None)
        try:
            # All pages in one step: one read transaction, so one snapshot; a copy in several
            # steps would restart whenever the running service commits.
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy {src_path} to {dst_path}: {exc}") from None
    finally:
        src.close()
    fd = os.open(dst_path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copies(backup_dir: Path, kind: DbKind) -> list[Path]:
    """The finished copies of `kind` in `backup_dir`, oldest first."""
    if not backup_dir.is_dir():
        return []
    return sorted(backup_dir.glob(f"{kind.name}-*Z.db"))


def backup(
    db: Path,
    backup_dir: Path,
    kind: DbKind,
    *,
    keep: int = DEFAULT_KEEP,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackupResult:
    """Copy `db` into `backup_dir` while its service may be running; keep the newest `keep`."""
    if keep < 1:
        raise BackupError(f"keep must be at least 1, not {keep}")
    if not db.is_file():
        raise BackupError(f"no database at {db}: check the configuration's state directory")
    t0 = time.perf_counter()
    private_dir(backup_dir, tighten=True)
    final = backup_dir / f"{kind.name}-{_utc_stamp(clock())}.db"
    part = final.with_name(final.name + ".part")
    try:
        _copy(db, part)
        check_database(part, kind)
        os.replace(part, final)
        _fsync_dir(backup_dir)
    finally:
        part.unlink(missing_ok=True)
    duration = time.perf_counter() - t0
    removed = []
    for old in copies(backup_dir, kind)[:-keep]:
        old.unlink(missing_ok=True)
        removed.append(old)
    size = final.stat().st_size
    log.info(
        "event=backup kind=%s db=%s copy=%s bytes=%d duration_ms=%.0f integrity=ok keep=%d "
        "removed=%d", kind.name, db, final, size, duration * 1000, keep, len(removed),
    )
    return BackupResult(final, size, duration, tuple(removed))


def restore(
    db: Path,
    source: Path,
    kind: DbKind,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RestoreResult:
    """Replace `db` with the copy `source`; the service must be stopped."""
    t0 = time.perf_counter()
    lock = servicelock.ServiceLock(db)
    try:
        lock.acquire()
    except servicelock.ServiceLockedError as exc:
        pid = f" (pid {exc.pid})" if exc.pid else ""
        raise BackupError(
            f"the {kind.name}{pid} is running on {db}: stop it first ({kind.stop_hint}), "
            "then run the restore again"
        ) from None
    try:
        check_database(source, kind)
        aside: Path | None = None
        if db.exists():
            aside = db.with_name(f"{db.name}.before-restore-{_utc_stamp(clock())}")
            _copy(db, aside)  # folds in whatever the old WAL still held
        part = db.with_name(db.name + ".restore.part")
        part.unlink(missing_ok=True)
        try:
            _copy(source, part)
            check_database(part, kind)
            # The old database's side files must go before the new file takes its name.
            for suffix in SQLITE_SIDE_FILES:
                db.with_name(db.name + suffix).unlink(missing_ok=True)
            os.replace(part, db)
            _fsync_dir(db.parent)
        finally:
            part.unlink(missing_ok=True)
    finally:
        lock.release()
    duration = time.perf_counter() - t0
    log.info(
        "event=restore kind=%s db=%s source=%s aside=%s bytes=%d duration_ms=%.0f integrity=ok",
        kind.name, db, source, aside or "-", db.stat().st_size, duration * 1000,
    )
    return RestoreResult(db, aside, duration)


# -- the command line: `onekey gateway|centre backup|restore`


def add_commands(
    sub: Any,
    service: str,
    kind: DbKind,
    locate: Callable[[Path], tuple[Path, Path]],
    default_dir: str,
) -> None:
    """The `backup` and `restore` subcommands of `service` (gateway or centre). `locate` reads
    the service's configuration file and gives (its database, its default backup directory);
    `default_dir` says where that is, for --help."""

    def run_backup(args: argparse.Namespace) -> int:
        db, default = locate(args.config)
        result = backup(db, args.dir if args.dir is not None else default, kind, keep=args.keep)
        print(f"backup {result.path} bytes={result.size} duration_s={result.duration_s:.3f} "
              f"removed={len(result.removed)}")
        return 0

    def run_restore(args: argparse.Namespace) -> int:
        db, _ = locate(args.config)
        result = restore(db, args.file, kind)
        aside = f"; the database it replaced is kept at {result.aside}" if result.aside else ""
        print(f"restored {result.db} from {args.file}{aside}")
        return 0

    bk = sub.add_parser(
        "backup", help=f"copy the {service}'s database while it runs, keeping the newest copies"
    )
    bk.add_argument("--config", type=Path, required=True)
    bk.add_argument("--dir", type=Path, default=None, help=f"backup directory (default: {default_dir})")
    bk.add_argument("--keep", type=int, default=DEFAULT_KEEP,
                    help=f"how many copies to keep (default {DEFAULT_KEEP})")
    bk.set_defaults(func=run_backup)
    rs = sub.add_parser(
        "restore", help=f"replace the {service}'s database with a backup (the {service} must be stopped)"
    )
    rs.add_argument("--config", type=Path, required=True)
    rs.add_argument("file", type=Path, help=f"a copy made by `onekey {service} backup`")
    rs.set_defaults(func=run_restore)
