"""The lock a running gateway or centre holds on its database, so restore can refuse to run.

`DB.lock` beside the database is locked with flock(2) for as long as the service runs and
holds its pid. The kernel drops the lock when the process ends however it ends (a crash or
SIGKILL too), so a stale lock file never blocks anything; only a live holder does.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from transport.keys import private_file


class ServiceLockedError(Exception):
    """Another process (a running service, or a restore) holds the database's lock."""

    def __init__(self, db: Path, pid: int | None) -> None:
        self.db = db
        self.pid = pid
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"{who} holds {lock_path(db)}: it is using {db}")


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


def _holder(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class ServiceLock:
    """The lock of one database. Constructing does nothing; `acquire()` takes it or raises
    ServiceLockedError at once; `release()` (or the end of a `with` block) lets it go."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self._fd: int | None = None

    def acquire(self) -> None:
        path = private_file(lock_path(self.db))
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ServiceLockedError(self.db, _holder(path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> ServiceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
