"""The driver: one GSM/4G module on a serial port, kept usable by one supervising task.

The task opens the port (pyserial, read from the event loop with `add_reader`: no thread),
initialises the module, then serves incoming messages (`+CMTI`/`+CDSI` -> `AT+CMGR` -> decode
-> `AT+CMGD`) and re-checks the network every `poll_interval`. When the port vanishes it fails
what waits with ModemGone, closes, and tries to open the same path again every
`reopen_interval`; a module found again is initialised again and its stored messages are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import serial

from modem import pdu
from modem.at import Channel, Urc
from modem.errors import (
    CME_SIM,
    CMS_NO_NETWORK,
    CMS_SIM,
    CmsError,
    CommandError,
    ModemError,
    ModemGone,
    ModemTimeout,
    NoNetwork,
    SimMissing,
)

log = logging.getLogger("modem")

STARTING = "starting"
OK = "ok"
NO_NETWORK = "no_network"
SIM_MISSING = "sim_missing"
GONE = "gone"

# +CNMI=2,1,0,1,0: new messages stored and announced with +CMTI; status reports routed to us as
# +CDS (TS 27.005 3.4.1). Both forms of each are understood, for modules that store reports.
CNMI = "AT+CNMI=2,1,0,1,0"
MAX_TRACKED = 1024  # message references awaiting their delivery report
MAX_PARTIAL = 256  # incoming concatenated messages awaiting parts
PARTIAL_TTL_S = 24 * 3600
EVENTS_MAX = 1000
ABORT_SETTLE_S = 0.3  # after cancelling a half-entered message, before the first AT
_CMGS = re.compile(r"^\+CMGS: *(\d+)")
_INDEX = re.compile(r'^\+(?:CMTI|CDSI): *"?([A-Z]*)"?, *(\d+)')
_REG = re.compile(r"^\+C(?:E|G)?REG: *(?:\d+, *)?(\d+)")
_CSQ = re.compile(r"^\+CSQ: *(\d+), *(\d+)")
_CMGL = re.compile(r"^\+CMGL: *(\d+)")


@dataclass(frozen=True)
class SendResult:
    """A message handed to the network: one message reference per part, in order."""

    number: str
    refs: tuple[int, ...]
    parts: int


@dataclass(frozen=True)
class IncomingSms:
    sender: str
    text: str
    sent_at: dt.datetime | None  # the service centre's time stamp
    parts: int


@dataclass(frozen=True)
class DeliveryReport:
    """A status report for one part. `refs` are all the references of the message that part
    belongs to (empty when the report matches nothing this driver sent); `message_delivered`
    is true once every part of it has been reported delivered."""

    ref: int
    number: str
    status: int
    delivered: bool
    final: bool
    refs: tuple[int, ...]
    message_delivered: bool


@dataclass(frozen=True)
class StateChange:
    state: str
    detail: str


Event = IncomingSms | DeliveryReport | StateChange


@dataclass
class _Tracked:
    number: str
    refs: tuple[int, ...]
    delivered: set[int] = field(default_factory=set)


def same_number(a: str, b: str) -> bool:
    """Whether two phone numbers name the same line: networks give a sender or recipient in
    international (+86...) or national form, whichever way it was stored or sent."""
    da, db = re.sub(r"\D", "", a), re.sub(r"\D", "", b)
    if not da or not db:
        return False
    if len(da) == len(db):
        return da == db
    short, long_ = sorted((da, db), key=len)
    # National form: the international number less its country code (86 for China) and any 0
    # trunk prefix of the national one.
    return len(short.lstrip("0")) >= 7 and long_.endswith(short.lstrip("0"))


class Modem:
    """One module. The constructor does no I/O; `start()` starts the supervising task."""

    def __init__(
        self,
        port: str,
        baudrate: int = 115200,
        *,
        command_timeout: float = 5.0,
        send_timeout: float = 60.0,
        poll_interval: float = 30.0,
        reopen_interval: float = 1.0,
        validity_minutes: int | None = pdu.DEFAULT_VALIDITY_MIN,
        on_sms: Callable[[IncomingSms], None] | None = None,
        on_report: Callable[[DeliveryReport], None] | None = None,
        on_state: Callable[[StateChange], None] | None = None,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.command_timeout = command_timeout
        self.send_timeout = send_timeout
        self.poll_interval = poll_interval
        self.reopen_interval = reopen_interval
        self.validity_minutes = validity_minutes
        self._on_sms = on_sms
        self._on_report = on_report
        self._on_state = on_state
        self._state = STARTING
        self.detail = "not started"
        self.signal: int | None = None  # +CSQ rssi, 0-31 (99 unknown)
        self._serial: serial.Serial | None = None
        self._channel: Channel | None = None
        self._work: asyncio.Queue[tuple[str, str, int]] = asyncio.Queue()
        self._events: asyncio.Queue[Event] = asyncio.Queue(EVENTS_MAX)
        self.events_dropped = 0
        self._garbage_before = 0
        self._task: asyncio.Task[None] | None = None
        self._initialised = asyncio.Event()
        self._tracked: OrderedDict[int, _Tracked] = OrderedDict()
        self._partial: OrderedDict[tuple[str, int, int], tuple[float, dict[int, str]]] = OrderedDict()
        self._concat_ref = itertools.count(int(time.time()) & 0xFF)
        self._mem = ""

    # -- public

    @property
    def state(self) -> str:
        """ok | no_network | sim_missing | gone | starting, for the console."""
        return self._state

    @property
    def garbage(self) -> int:
        """Lines from the module that were neither a response nor a known notice."""
        return self._garbage_before + (self._channel.garbage if self._channel else 0)

    async def start(self, timeout: float | None = None) -> None:
        """Starts the supervising task and waits (up to `timeout`, default: the time one
        initialisation may take) for its first attempt: `state` then tells how it went."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"modem {self.port}")
        if timeout is None:
            timeout = self.command_timeout * 12
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._initialised.wait(), timeout)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._close_port()
        self._initialised.clear()

    async def events(self) -> AsyncIterator[Event]:
        """Incoming messages, delivery reports and state changes, in order (one consumer)."""
        while True:
            yield await self._events.get()

    async def send_sms(self, number: str, text: str) -> SendResult:
        """Sends `text` to `number` (international `+86...` or national digits), split into
        concatenated parts when long. Raises NoNetwork, SimMissing, ModemGone, ModemTimeout,
        CmsError (the module refused; `.code`, `.meaning`), or pdu.PduError (bad number, empty
        text). When a later part fails, the parts already sent may still arrive."""
        pdus = pdu.encode_submit(number, text, concat_ref=next(self._concat_ref) & 0xFF,
                                 validity_minutes=self.validity_minutes)
        if self._state == STARTING:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._initialised.wait(), self.command_timeout)
        self._raise_for_state()
        channel = self._channel
        assert channel is not None
        if self._state == NO_NETWORK and not await self._registered(channel):
            raise NoNetwork(f"modem on {self.port} is not registered on a network: {self.detail}")
        refs: list[int] = []
        for part in pdus:
            try:
                lines = await channel.send_pdu(part.tpdu_len, part.hex, prompt_timeout=self.command_timeout,
                                               timeout=self.send_timeout)
            except CmsError as exc:
                if exc.code in CMS_NO_NETWORK:
                    self._set_state(NO_NETWORK, str(exc))
                    raise NoNetwork(f"modem on {self.port} has no network service ({exc}): check the "
                                    "antenna and the operator's coverage") from None
                if exc.code in CMS_SIM:
                    self._set_state(SIM_MISSING, str(exc))
                    raise SimMissing(f"modem on {self.port}: {exc}; check the SIM card") from None
                raise
            m = _CMGS.match(lines[0]) if lines else None
            if m is None:
                raise ModemError(f"modem on {self.port} accepted a message but gave no reference ({lines!r})")
            refs.append(int(m.group(1)))
        result = SendResult(number=number, refs=tuple(refs), parts=len(pdus))
        tracked = _Tracked(number, result.refs)
        for ref in result.refs:
            self._tracked[ref] = tracked
            self._tracked.move_to_end(ref)
        while len(self._tracked) > MAX_TRACKED:
            self._tracked.popitem(last=False)
        log.info("event=modem_sent to=%s parts=%d refs=%s", number, len(pdus), ",".join(map(str, refs)))
        return result

    # -- state

    def _raise_for_state(self) -> None:
        if self._state == GONE or self._channel is None:
            raise ModemGone(f"modem on {self.port} is gone ({self.detail}): check its USB cable and power")
        if self._state == SIM_MISSING:
            raise SimMissing(f"modem on {self.port} has no usable SIM ({self.detail}): insert or unlock it")
        if self._state == STARTING:
            raise ModemError(f"modem on {self.port} is still starting: try again")

    def _set_state(self, state: str, detail: str) -> None:
        self.detail = detail
        if state == self._state:
            return
        self._state = state
        log.info("event=modem_state port=%s state=%s detail=%r", self.port, state, detail)
        self._emit(StateChange(state, detail))

    def _emit(self, ev: Event) -> None:
        if self._events.full():
            self._events.get_nowait()
            self.events_dropped += 1
        self._events.put_nowait(ev)
        if isinstance(ev, IncomingSms) and self._on_sms:
            self._on_sms(ev)
        elif isinstance(ev, DeliveryReport) and self._on_report:
            self._on_report(ev)
        elif isinstance(ev, StateChange) and self._on_state:
            self._on_state(ev)

    # -- the port

    def _open_port(self) -> Channel:
        try:
            ser = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=self.command_timeout)
        except (serial.SerialException, OSError) as exc:
            raise ModemGone(f"cannot open {self.port}: {exc}") from None
        self._serial = ser
        channel = Channel(self._write, self._urc)
        self._channel = channel
        asyncio.get_running_loop().add_reader(ser.fileno(), self._readable)
        return channel

    def _close_port(self) -> None:
        ser, self._serial = self._serial, None
        if self._channel is not None:
            self._garbage_before += self._channel.garbage
            self._channel.gone(ModemGone(f"modem on {self.port} closed"))
        self._channel = None
        if ser is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(ser.fileno())
            with contextlib.suppress(Exception):
                ser.close()

    def _write(self, data: bytes) -> None:
        ser = self._serial
        if ser is None:
            raise ModemGone(f"modem on {self.port} is not open")
        try:
            ser.write(data)
        except (serial.SerialException, OSError) as exc:
            raise ModemGone(f"writing to {self.port} failed: {exc}") from None

    def _readable(self) -> None:
        ser = self._serial
        if ser is None:
            return
        try:
            data = os.read(ser.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(f"reading {self.port} failed: {exc}")
            return
        if not data:  # readable yet empty: the device went away (USB serial unplugged)
            self._lost(f"{self.port} reported end of file")
            return
        if self._channel is not None:
            self._channel.feed(data)

    def _lost(self, why: str) -> None:
        ser = self._serial
        if ser is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(ser.fileno())
        if self._channel is not None:
            self._channel.gone(ModemGone(f"modem on {self.port} is gone: {why}"))
        self._set_state(GONE, why)
        self._work.put_nowait(("gone", "", 0))

    def _urc(self, urc: Urc) -> None:
        m = _INDEX.match(urc.line)
        if m:
            self._work.put_nowait(("read", m.group(1), int(m.group(2))))
        elif urc.line.startswith("+CDS:") and urc.pdu:
            self._decoded(urc.pdu)
        elif urc.line.startswith("+CMT:") and urc.pdu:
            self._decoded(urc.pdu)
        elif self._channel is not None:  # a notice without its storage index
            self._channel.garbage += 1
            log.warning("event=modem_garbage line=%r count=%d", urc.line[:80], self.garbage)

    # -- the supervising task

    async def _run(self) -> None:
        while True:
            try:
                channel = self._open_port()
            except ModemGone as exc:
                self._set_state(GONE, str(exc))
                self._initialised.set()
                await asyncio.sleep(self.reopen_interval)
                continue
            try:
                await self._initialise(channel)
                self._initialised.set()
                await self._serve(channel)
            except ModemError as exc:
                # Unplugged, or a port that opens but a module that does not answer (or refuses
                # what the driver needs): as good as gone. Try again from the start.
                self._set_state(GONE, str(exc))
            except Exception as exc:  # the task's own supervisor: log, start over
                log.exception("event=modem_driver_error port=%s", self.port)
                self._set_state(GONE, f"driver error: {exc!r}")
            finally:
                self._close_port()
            self._initialised.set()
            await asyncio.sleep(self.reopen_interval)
            while not self._work.empty():
                self._work.get_nowait()

    async def _cmd(self, channel: Channel, command: str, prefix: str | None = None,
                   pdu_lines: bool = False) -> list[str]:
        return await channel.command(command, prefix=prefix, pdu_lines=pdu_lines,
                                     timeout=self.command_timeout)

    async def _initialise(self, channel: Channel) -> None:
        # A program killed between `AT+CMGS` and Ctrl-Z leaves the module waiting for the PDU,
        # and it would read our AT commands as PDU text: cancel that first.
        channel.abort_input()
        await asyncio.sleep(ABORT_SETTLE_S)  # its OK or ERROR must not answer our first AT
        # A module just plugged in may be booting: a few tries of plain AT first.
        for attempt in range(3):
            try:
                await self._cmd(channel, "AT")
                break
            except ModemTimeout:
                if attempt == 2:
                    raise
        await self._cmd(channel, "ATE0")
        await self._cmd(channel, "AT+CMEE=1")
        if not await self._sim_ready(channel):
            return
        await self._cmd(channel, "AT+CMGF=0")
        try:
            await self._cmd(channel, CNMI)
        except CommandError as exc:
            raise ModemError(f"modem on {self.port} refused {CNMI}: incoming messages would not be "
                             "seen; is it a GSM module?") from exc
        await self._check_network(channel)
        await self._read_stored(channel)

    async def _sim_ready(self, channel: Channel) -> bool:
        try:
            lines = await self._cmd(channel, "AT+CPIN?", "+CPIN:")
        except CommandError as exc:
            if exc.code in CME_SIM or exc.code is None:
                self._set_state(SIM_MISSING, f"SIM not ready: {exc}")
                return False
            raise
        status = lines[0].split(":", 1)[1].strip() if lines else "?"
        if status != "READY":
            self._set_state(SIM_MISSING, f"SIM asks for {status}: unlock it or use a SIM without a PIN")
            return False
        return True

    async def _registered(self, channel: Channel) -> bool:
        registered = False
        stats = []
        for command in ("AT+CREG?", "AT+CEREG?"):
            try:
                lines = await self._cmd(channel, command, command[2:-1] + ":")
            except CommandError:
                continue  # a 2G-only module has no +CEREG
            m = _REG.match(lines[0]) if lines else None
            if m:
                stats.append(f"{command[3:-1]} {m.group(1)}")
                registered = registered or m.group(1) in ("1", "5")
        with contextlib.suppress(CommandError):
            lines = await self._cmd(channel, "AT+CSQ", "+CSQ:")
            m = _CSQ.match(lines[0]) if lines else None
            if m:
                self.signal = int(m.group(1))
        if registered:
            self._set_state(OK, f"registered ({', '.join(stats)}), signal {self.signal}")
        else:
            self._set_state(NO_NETWORK, f"not registered ({', '.join(stats) or 'no answer'}), signal "
                                        f"{self.signal}: check the antenna and the operator's coverage")
        return registered

    async def _check_network(self, channel: Channel) -> None:
        await self._registered(channel)

    async def _serve(self, channel: Channel) -> None:
        while True:
            try:
                kind, mem, index = await asyncio.wait_for(self._work.get(), self.poll_interval)
            except TimeoutError:
                if self._state in (NO_NETWORK, SIM_MISSING):
                    await self._initialise(channel)
                else:
                    await self._check_network(channel)
                continue
            if kind == "gone":
                raise ModemGone(self.detail)
            await self._read_one(channel, mem, index)

    async def _select_mem(self, channel: Channel, mem: str) -> None:
        if mem and mem != self._mem:
            await self._cmd(channel, f'AT+CPMS="{mem}"', "+CPMS:")
            self._mem = mem

    async def _read_one(self, channel: Channel, mem: str, index: int) -> None:
        try:
            await self._select_mem(channel, mem)
            lines = await self._cmd(channel, f"AT+CMGR={index}", "+CMGR:", pdu_lines=True)
        except (CmsError, CommandError) as exc:
            log.warning("event=modem_read_failed index=%d error=%r", index, str(exc))
            return
        if len(lines) >= 2:
            self._decoded(lines[1])
        with contextlib.suppress(CmsError, CommandError):
            await self._cmd(channel, f"AT+CMGD={index}")

    async def _read_stored(self, channel: Channel) -> None:
        """Messages that arrived while nobody listened (or before a reconnect)."""
        try:
            lines = await self._cmd(channel, "AT+CMGL=4", "+CMGL:", pdu_lines=True)
        except (CmsError, CommandError) as exc:
            log.warning("event=modem_list_failed error=%r", str(exc))
            return
        indexes = []
        for i, head in enumerate(lines):
            body = lines[i + 1] if i + 1 < len(lines) else ""
            m = _CMGL.match(head)
            if m:
                indexes.append(int(m.group(1)))
                if body and not body.startswith("+"):
                    self._decoded(body)
        for index in indexes:
            with contextlib.suppress(CmsError, CommandError):
                await self._cmd(channel, f"AT+CMGD={index}")

    # -- messages

    def _decoded(self, pdu_hex: str) -> None:
        try:
            msg = pdu.decode(pdu_hex)
        except pdu.PduError as exc:
            if self._channel is not None:
                self._channel.garbage += 1
            log.warning("event=modem_bad_pdu error=%r pdu=%s", str(exc), pdu_hex[:80])
            return
        if isinstance(msg, pdu.StatusReport):
            self._report(msg)
        elif isinstance(msg, pdu.Deliver):
            self._incoming(msg)

    def _report(self, sr: pdu.StatusReport) -> None:
        tracked = self._tracked.get(sr.mr)
        if tracked is not None and not same_number(tracked.number, sr.recipient):
            tracked = None  # a reference reused by the module after wrapping at 255
        message_delivered = False
        refs: tuple[int, ...] = ()
        if tracked is not None:
            refs = tracked.refs
            if sr.delivered:
                tracked.delivered.add(sr.mr)
            message_delivered = tracked.delivered == set(tracked.refs)
            if sr.final:
                self._tracked.pop(sr.mr, None)
        log.info("event=modem_report ref=%d to=%s status=%d matched=%s", sr.mr, sr.recipient, sr.status,
                 tracked is not None)
        self._emit(DeliveryReport(ref=sr.mr, number=sr.recipient, status=sr.status, delivered=sr.delivered,
                                  final=sr.final, refs=refs, message_delivered=message_delivered))

    def _incoming(self, d: pdu.Deliver) -> None:
        if d.concat is None or d.concat.total <= 1:
            self._emit(IncomingSms(d.sender, d.text, d.timestamp, 1))
            return
        key = (d.sender, d.concat.ref, d.concat.total)
        now = time.monotonic()
        for k in [k for k, (t, _) in self._partial.items() if now - t > PARTIAL_TTL_S]:
            del self._partial[k]
        _, parts = self._partial.setdefault(key, (now, {}))
        parts[d.concat.seq] = d.text
        if len(parts) < d.concat.total:
            while len(self._partial) > MAX_PARTIAL:
                self._partial.popitem(last=False)
            return
        del self._partial[key]
        text = "".join(parts[i] for i in sorted(parts))
        self._emit(IncomingSms(d.sender, text, d.timestamp, d.concat.total))
