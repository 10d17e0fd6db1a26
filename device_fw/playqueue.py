# The speaker's broadcast queue (docs/protocol.md §8.2.2) and the reports it owes (§8.3), as
# pure logic.
#
# No I/O and no clock: the caller passes broadcast bodies that have passed the §8.2.1 checks
# (MAC, device, counter) with its clock `now` (Unix ms). Reports collect in `out` as
# (id, state, why) tuples until the link has sent them. The same file runs under MicroPython
# and CPython, so the unit tests drive it directly.
#
# Rules:
# - The queue is ordered by priority (0 first), then arrival; arrival is the gateway's counter
#   `c`, which a speaker accepts only strictly increasing, so it is the order of receipt.
# - Priority 0 stops a playing broadcast of priority 1 or 2: that one is reported `preempted`
#   and goes back into the queue with its own arrival, so it plays again from its start after
#   the urgent one (unless it has expired by then). A priority 0 broadcast does not stop
#   another priority 0 one: it plays next.
# - A broadcast whose `exp` has passed is dropped and reported `expired`, at receipt or while it
#   waits; one that has started plays to the end of its current repeat.
# - Cancel (`ref`) removes the referenced broadcast from the queue, or stops it while it plays,
#   and reports it `cancelled`; an Update does the same, then is queued like an Alert. A Cancel
#   for an id not seen yet is remembered, so that the broadcast never plays if it comes late.
#   The Cancel itself is reported `received`.
# - A copy of an id the speaker knows is not queued again: its state is reported again.
# - Bounds: past `cap` waiting broadcasts the least urgent, newest one is dropped and reported
#   `failed` (why `queue_full`); the last `keep` final states are remembered; past `max_out`
#   reports (the link has been down a while) the oldest one that a newer report for the same
#   broadcast supersedes is dropped, else the oldest.
# Compact on purpose: every function costs RAM on a small device.

RECEIVED = "received"
PLAYING = "playing"
PLAYED = "played"
FAILED = "failed"
EXPIRED = "expired"
CANCELLED = "cancelled"
PREEMPTED = "preempted"


class Bc:
    # One broadcast, from a checked §8.2 body. Its text stays with the caller (on flash); RAM
    # keeps what ordering and playing need.
    def __init__(self, body: dict) -> None:
        self.id = body["id"]
        self.c = body["c"]
        self.pri = body["pri"]
        self.exp = body["exp"]
        self.rep = body.get("rep", 1)
        self.clip = body.get("clip") or None
        self.state = RECEIVED


class PlayQueue:
    def __init__(self, cap: int = 8, keep: int = 16, max_out: int = 24) -> None:
        self.cap = cap
        self.keep = keep
        self.max_out = max_out
        self.queue: list[Bc] = []  # waiting, in play order
        self.current: Bc | None = None  # the one playing
        self.done: list[tuple[str, str]] = []  # (id, final state), oldest first
        self.finished: list[Bc] = []  # broadcasts that ended since the caller last looked
        self.out: list[tuple] = []  # reports not yet sent, oldest first
        self.changed = False  # `done` changed since the caller last saved it
        self.drops = 0  # broadcasts dropped for room
        self.out_drops = 0  # reports dropped for room

    def state(self, bc_id: str) -> str | None:
        # The latest state of an id, or None if this speaker has never seen it.
        for bc in self.queue + [self.current]:
            if bc is not None and bc.id == bc_id:
                return bc.state
        for i, s in self.done:
            if i == bc_id:
                return s
        return None

    def _report(self, bc_id: str, state: str, why: str | None = None) -> None:
        out = self.out
        if len(out) >= self.max_out:
            victim = 0
            for i in range(len(out) - 1):
                if any(r[0] == out[i][0] for r in out[i + 1 :]):
                    victim = i
                    break
            out.pop(victim)
            self.out_drops += 1
        out.append((bc_id, state, why))

    def _final(self, bc_id: str, state: str, why: str | None = None, bc: Bc | None = None) -> None:
        # A final state: reported, and remembered so that a later copy is recognised.
        if len(self.done) >= self.keep:
            self.done.pop(0)
        self.done.append((bc_id, state))
        self.changed = True
        self._report(bc_id, state, why)
        if bc is not None:
            bc.state = state
            self.finished.append(bc)

    def insert(self, bc: Bc) -> bool:
        # Places bc by (priority, arrival); False if it was the one dropped for room.
        q = self.queue
        i = len(q)
        while i > 0 and (q[i - 1].pri, q[i - 1].c) > (bc.pri, bc.c):
            i -= 1
        q.insert(i, bc)
        if len(q) <= self.cap:
            return True
        victim = q.pop()
        self.drops += 1
        self._final(victim.id, FAILED, "queue_full", victim)
        return victim is not bc

    def _cancel(self, ref: str) -> None:
        cur = self.current
        if cur is not None and cur.id == ref:
            self.current = None  # the player sees this and stops the sound
            self._final(ref, CANCELLED, None, cur)
            return
        for bc in self.queue:
            if bc.id == ref:
                self.queue.remove(bc)
                self._final(ref, CANCELLED, None, bc)
                return
        if self.state(ref) is None:
            self._final(ref, CANCELLED)  # not here yet: a late copy never plays

    def offer(self, body: dict, now: int) -> Bc | None:
        # One checked broadcast body; returns its Bc if it was queued.
        bc_id = body["id"]
        known = self.state(bc_id)
        if known is not None:
            self._report(bc_id, known, "duplicate")
            return None
        if body["exp"] <= now:
            self._final(bc_id, EXPIRED)
            return None
        mt = body["mt"]
        if mt == "Cancel":
            self._final(bc_id, RECEIVED)  # nothing to play; a copy reports this again
        else:
            self._report(bc_id, RECEIVED)
        if mt != "Alert":
            self._cancel(body["ref"])
        if mt == "Cancel":
            return None
        bc = Bc(body)
        if not self.insert(bc):
            return None
        cur = self.current
        if bc.pri == 0 and cur is not None and cur.pri > 0:
            self.current = None  # the player sees this and stops the sound
            cur.state = PREEMPTED
            self._report(cur.id, PREEMPTED)
            if cur.exp <= now:
                self._final(cur.id, EXPIRED, None, cur)
            else:
                self.insert(cur)
        return bc

    def expire(self, now: int) -> None:
        # Drops waiting broadcasts whose expiry has passed.
        for bc in [b for b in self.queue if b.exp <= now]:
            self.queue.remove(bc)
            self._final(bc.id, EXPIRED, None, bc)

    def next(self, now: int) -> Bc | None:
        # The broadcast to play now (it becomes `current`), after dropping expired ones.
        self.expire(now)
        if self.current is not None or not self.queue:
            return None
        bc = self.queue.pop(0)
        bc.state = PLAYING
        self.current = bc
        self._report(bc.id, PLAYING)
        return bc

    def finish(self, bc: Bc, state: str, why: str | None = None) -> None:
        # The player is done with bc (PLAYED or FAILED). Nothing happens if bc was stopped
        # meanwhile (cancelled or preempted): that has been reported.
        if bc is self.current:
            self.current = None
            self._final(bc.id, state, why, bc)
