"""Backup and restore of a gateway database with 100,000 events (transport.backup).

The database has the gateway's own schema (gateway.store, gateway.bcstore) in WAL mode, with
500 devices and N events spread over them. Measured in the same run, each several times:
  file copy  shutil.copyfile of the database file (checkpointed first), and the same followed
             by fsync of the copy: the anchor, what the bytes alone cost on this disk
  backup     `transport.backup.backup`: online backup API copy, fsync, integrity check,
             rename, retention (what `onekey gateway backup` does)
  restore    `transport.backup.restore`: checks the copy, keeps the current database aside,
             puts the copy in place (what `onekey gateway restore` does)
Usage: python bench/backup.py [--events 100000] [--runs 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.bcstore import BC_SCHEMA
from gateway.cli import GATEWAY_DB
from gateway.store import SCHEMA
from transport import backup

DEVICES = 500


def make_db(path: Path, n_events: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    conn.executescript(BC_SCHEMA)
    now = int(time.time() * 1000)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO devices (id, key_hex, role, village, household, created_at) "
        "VALUES (?, ?, 'button', 'v-bench', ?, ?)",
        [(f"btn-{i:04d}", "ab" * 32, f"h-{i:04d}", now) for i in range(DEVICES)],
    )
    conn.executemany(
        "INSERT INTO events (device, counter, kind, ref, village, household, gw_ts, dev_ts, "
        "dev_up, state, acked_by, updated_at) "
        "VALUES (?, ?, 'alarm', NULL, 'v-bench', ?, ?, ?, ?, 'Wang', ?, ?)",
        (
            (f"btn-{i % DEVICES:04d}", i // DEVICES + 1, f"h-{i % DEVICES:04d}",
             now - i, (now - i) // 1000, 1234, "acked", now)
            for i in range(n_events)
        ),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def copy_and_fsync(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def timed(fn: object) -> float:
    assert callable(fn)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where to work (default: a temp dir)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="onekey-bench-backup-", dir=args.dir))
    try:
        db = work / "gateway.db"
        t_make = timed(lambda: make_db(db, args.events))
        size = db.stat().st_size
        print(f"database: {args.events} events, {DEVICES} devices, {size / 1e6:.1f} MB "
              f"(built in {t_make:.1f} s) in {work}")
        copies: list[float] = []
        synced: list[float] = []
        backups: list[float] = []
        restores: list[float] = []
        last: Path | None = None
        for _ in range(args.runs):
            copies.append(timed(lambda: shutil.copyfile(db, work / "raw-copy.db")))
            synced.append(timed(lambda: copy_and_fsync(db, work / "raw-copy-fsync.db")))
            result = backup.backup(db, work / "backups", GATEWAY_DB, keep=args.runs)
            backups.append(result.duration_s)
            last = result.path
            assert last is not None
            restores.append(backup.restore(db, last, GATEWAY_DB).duration_s)
            for aside in work.glob("gateway.db.before-restore-*"):
                aside.unlink()
        conn = sqlite3.connect(db)
        (n,) = conn.execute("SELECT count(*) FROM events").fetchone()
        conn.close()
        assert n == args.events, f"restored database has {n} events, not {args.events}"
        for name, values in (
            ("file copy", copies), ("copy+fsync", synced), ("backup", backups),
            ("restore", restores),
        ):
            print(f"{name:<10} median {statistics.median(values):.3f} s  "
                  f"(runs: {', '.join(f'{v:.3f}' for v in values)})")
        ratio = statistics.median(backups) / statistics.median(synced)
        print(f"backup / (file copy + fsync): {ratio:.1f}x; restored database checked: {n} events")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
