# Flash state of a device: the message counter (docs/protocol.md §5.1) and the outbox.
#
# Every write that must survive a power cut is atomic: write NAME.tmp, then os.rename it over
# NAME (LittleFS and POSIX both replace the target). Files live in the working directory,
# which on the ESP32 is the root of its flash file system.
import os

try:
    from micropython import const
except ImportError:  # CPython

    def const(x: int) -> int:  # type: ignore[misc]
        return x


try:
    from time import ticks_ms
except ImportError:  # CPython
    from time import monotonic  # type: ignore[attr-defined]

    def ticks_ms() -> int:  # type: ignore[misc]
        return int(monotonic() * 1000)


_BLOCK = const(16)
OUTBOX_CAP = const(32)

# Message states in the order they may move (§4.2). "failed" is "sending" past its ack
# timeout: same rank, so a late "stored" still moves it on.
SENDING = "sending"
FAILED = "failed"
STORED = "stored"
RECEIVED = "received"
ACKED = "acked"
REJECTED = "rejected"
_RANK = {SENDING: 0, FAILED: 0, STORED: 1, RECEIVED: 2, ACKED: 3, REJECTED: 4}
_BY_RANK = (SENDING, STORED, RECEIVED, ACKED, REJECTED)


def rank(state: str) -> int:
    return _RANK.get(state, -1)


def is_final(kind: str, state: str) -> bool:
    # An alarm is done when staff acknowledged it; a test or a cancel when the centre has it.
    if state == ACKED or state == REJECTED:
        return True
    return state == RECEIVED and kind != "alarm"


def _exists(path: str) -> bool:
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def _read_int(path: str) -> int:
    # -1 when the file is missing or unreadable.
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return -1


class Counter:
    # One counter for all uplink messages, never reused (§5.1): values are taken from a block
    # whose end is written to flash before the block's first value is used; after a reboot
    # counting resumes at the reserved end.
    def __init__(self, path: str = "ctr", block: int = _BLOCK) -> None:
        self.path = path
        self.block = block
        self.next = 1
        self.end = 1
        self.last = 0
        self.lost = False  # the counter file was unreadable and had to be rebuilt

    def load(self, floor: int = 1) -> None:
        # floor: one above the highest counter known elsewhere (the outbox).
        end = _read_int(self.path)
        # A crash between writing the .tmp and the rename leaves a larger, never used, value.
        end = max(end, _read_int(self.path + ".tmp"))
        if end < 0 and _exists(self.path):
            self.lost = True
        start = max(end, floor, 1)
        self.next = start
        self.end = start

    def take(self) -> int:
        if self.next >= self.end:
            end = self.next + self.block
            write_atomic(self.path, ("%d\n" % end).encode())
            self.end = end
        c = self.next
        self.next += 1
        self.last = c
        return c


class Entry:
    # One alarm, cancel or test. The bytes sent are on flash; RAM keeps only this record.
    def __init__(self, c: int, kind: str, state: str, raised_ms: int | None = None) -> None:
        self.c = c
        self.kind = kind
        self.state = state
        self.raised_ms = raised_ms  # device uptime when raised; None if loaded after a reboot
        self.t0 = ticks_ms()  # start of the ack timeout
        self.tx = -1  # ticks of the last send on the current connection, -1 not yet
        self.ref = 0  # for a cancel: the alarm's counter


class Outbox:
    # One file per entry in `dirname`: "<counter>.<rank>" holding TOPIC "\n" PAYLOAD, the exact
    # bytes sent. The rank suffix is the last state the gateway confirmed; it moves forward by
    # rename. Final entries are removed.
    def __init__(self, dirname: str = "ob", cap: int = OUTBOX_CAP) -> None:
        self.dir = dirname
        self.cap = cap
        self.entries: list[Entry] = []  # in counter order
        self.drops = 0

    def _path(self, e: Entry) -> str:
        return "%s/%d.%d" % (self.dir, e.c, rank(e.state))

    def load(self) -> int:
        # Reads the directory; returns one above the highest counter found (or 1).
        try:
            names = os.listdir(self.dir)
        except OSError:
            os.mkdir(self.dir)
            names = []
        top = 0
        found = []
        for name in names:
            path = self.dir + "/" + name
            parts = name.split(".")
            if len(parts) != 2 or parts[1] == "tmp":
                _remove(path)
                continue
            try:
                c = int(parts[0])
                r = int(parts[1])
                state = _BY_RANK[r]
                with open(path, "rb") as f:
                    kind = f.read(80).split(b"\n", 1)[0].split(b"/")[-1].decode()
            except (ValueError, IndexError, OSError):
                _remove(path)
                continue
            found.append(Entry(c, kind, state))
            top = max(top, c)
        found.sort(key=lambda e: e.c)
        self.entries = found
        return top + 1

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, c: int) -> Entry | None:
        for e in self.entries:
            if e.c == c:
                return e
        return None

    def _victim(self) -> Entry:
        # Drop what the gateway already has, else the oldest test, else the oldest entry.
        for e in self.entries:
            if rank(e.state) >= 1:
                return e
        for e in self.entries:
            if e.kind == "test":
                return e
        return self.entries[0]

    def add(self, e: Entry, topic: str, payload: bytes) -> Entry | None:
        # Writes the entry to flash before it is sent; returns a dropped entry, if any.
        dropped = None
        if len(self.entries) >= self.cap:
            dropped = self._victim()
            _remove(self._path(dropped))
            self.entries.remove(dropped)
            self.drops += 1
        with open(self._path(e) + ".tmp", "wb") as f:
            f.write(topic.encode())
            f.write(b"\n")
            f.write(payload)
        os.rename(self._path(e) + ".tmp", self._path(e))
        self.entries.append(e)
        return dropped

    def read(self, e: Entry, buf: bytearray) -> tuple[int, int]:
        # Reads the entry into buf; returns (topic_len, total_len). TOPIC is buf[:topic_len],
        # PAYLOAD buf[topic_len + 1:total_len].
        with open(self._path(e), "rb") as f:
            n = f.readinto(buf)
        mv = memoryview(buf)
        for i in range(min(n, 128)):
            if mv[i] == 10:
                return i, n
        raise OSError("outbox entry %d has no topic line" % e.c)

    def advance(self, e: Entry, state: str) -> bool:
        # Moves e forward to `state`; False (and nothing changes) if that is not forward.
        if rank(state) <= rank(e.state):
            return False
        old = self._path(e)
        if e in self.entries:
            if is_final(e.kind, state):
                _remove(old)
                self.entries.remove(e)
            else:
                e.state = state
                os.rename(old, self._path(e))
        e.state = state
        return True

    def unsent(self) -> list[Entry]:
        return [e for e in self.entries if rank(e.state) == 0]
