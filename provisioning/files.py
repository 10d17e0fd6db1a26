"""Writing files to a board: in chunks, to NAME.tmp, checked, then renamed over NAME.

A board that loses power or its cable mid-write keeps its old NAME (the rename is atomic on
LittleFS and on the unix port's POSIX file system), and a re-run starts that file again. A
file whose size and hash already match is not sent again, so re-runs after a failure are
quick.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from provisioning.board import Board
from provisioning.errors import ProvisionError, UploadError

# Raw bytes per command: 2 KB of data is about 2.7 KB of base64, which a board's heap takes
# easily; larger commands save round trips but need a larger contiguous block.
CHUNK = 2048


@dataclass(frozen=True)
class Upload:
    path: str
    size: int
    sent: int  # bytes of file data sent (0 when the board already had it)


def local_digest(data: bytes, kind: str) -> str:
    if kind == "sha256":
        return hashlib.sha256(data).hexdigest()
    if kind == "crc32":
        return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"
    return ""


def matches(board: Board, path: str, data: bytes) -> bool:
    """True if the board's `path` holds exactly `data`."""
    have = board.digest(path)
    if have is None:
        return False
    kind, size, digest = have
    if size != len(data):
        return False
    if kind == "size":
        # No hash on this board: compare the bytes themselves.
        return board.read_file(path) == data
    return digest == local_digest(data, kind)


def upload(
    board: Board,
    path: str,
    data: bytes,
    *,
    progress: Callable[[int], None] | None = None,
    skip_same: bool = True,
) -> Upload:
    """Writes `data` to `path` on the board atomically; `progress(n)` after each chunk."""
    if skip_same and matches(board, path, data):
        if progress:
            progress(len(data))
        return Upload(path, len(data), 0)
    tmp = path + ".tmp"
    repl = board.repl
    board.prelude()
    repl.exec(f"_ok_open({tmp!r})")
    try:
        for i in range(0, len(data), CHUNK):
            chunk = base64.b64encode(data[i : i + CHUNK]).decode()
            repl.exec(f"_ok_w('{chunk}')")
            if progress:
                progress(min(CHUNK, len(data) - i))
    finally:
        # Close even after an error on the board, so that the next try can reopen it; a lost
        # port makes this fail too, and the first error is the one that matters.
        try:
            repl.exec("_ok_close()")
        except ProvisionError:
            pass
    if not matches(board, tmp, data):
        board.remove(tmp)
        raise UploadError(
            f"{path} arrived damaged on the board (size or hash differ); run the same command "
            "again, and if it repeats try another USB cable"
        )
    board.rename(tmp, path)
    return Upload(path, len(data), len(data))
