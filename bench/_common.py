"""Shared bits of the benchmarks: percentiles, fsync baseline, progress."""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def fsync_commits_per_second(directory: Path, n: int = 500) -> float:
    """Raw SQLite commits per second, one row each, with the gateway's pragmas (WAL, FULL)."""
    path = directory / "fsync-baseline.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (a INTEGER)")
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (?)", (i,))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def progress(label: str, done: int, total: int) -> None:
    if sys.stderr.isatty() or os.environ.get("ONEKEY_PROGRESS"):
        width = 30
        filled = int(width * done / max(total, 1))
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    elif done == total or done % max(1, total // 10) == 0:
        print(f"{label}: {done}/{total}", file=sys.stderr, flush=True)
