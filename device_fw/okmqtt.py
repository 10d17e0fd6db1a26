# A minimal MQTT 3.1.1 client on MicroPython's asyncio streams, for one device link.
#
# What the firmware needs and no more: CONNECT (user, password, persistent session, last
# will), PUBLISH QoS 0/1 with PUBACK, SUBSCRIBE, incoming QoS 0/1 PUBLISH, PINGREQ. No tasks
# are started before connect(). Buffers are allocated once; packets are built in place.
#
# Incoming messages go to a bounded inbox (the oldest is dropped and counted when full). A
# QoS 1 message is PUBACKed only when the application calls done(pid) after it has acted on
# it, so a message that was never acted on is delivered again after a reconnect.
#
# Alternatively the application passes a `handler(topic, payload)`: each message is then handed
# over at once, as memoryviews into the receive buffer (valid only during the call), and
# PUBACKed when the handler returns. A speaker does this: a broadcast frame is up to 3.4 KB, so
# it is checked in place instead of being copied into a queue, and messages are taken in the
# order they arrive, never dropped (a speaker accepts broadcast counters only increasing, so a
# dropped and redelivered frame would count as a replay).
#
# A PUBLISH larger than the receive buffer cannot be taken: it is read and discarded, counted in
# `oversized`, and PUBACKed all the same (QoS 1), in its place among the other messages. Left
# unacknowledged it would stay in flight in the persistent session, come back on every
# reconnect, and with enough of them fill the broker's in-flight window for this client, so
# that nothing after them would ever be delivered.
#
# Every write is bounded in time (write_timeout_ms): a broker that stops reading (hung, or a
# link that died without a reset) fills the socket's send buffer, and a write would otherwise
# wait for ever, with the keepalive check never reached. A write that times out ends the link
# (OSError), and the owner reconnects.
#
# The broker's name is resolved once (getaddrinfo blocks the whole event loop while it waits
# for DNS, seconds on a poor link) and its IPv4 address kept; it is resolved again only after a
# connect to that address has failed, in case the broker has moved.
import asyncio
from socket import getaddrinfo
from time import ticks_diff, ticks_ms

from micropython import const

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)
_SUBACK = const(0x90)
_PINGRESP = const(0xD0)
_RX_SIZE = const(640)  # a downlink frame (513) plus its topic and header
_TX_SIZE = const(640)
_INBOX = const(8)
_WRITE_TIMEOUT_MS = const(10000)
_PINGREQ = b"\xc0\x00"
_AF_INET = const(2)  # the same on lwIP (ESP32) and Linux
_SOCK_STREAM = const(1)


class MQTTError(Exception):
    # The broker refused us, or broke the protocol. `code` is the CONNACK return code, if any.
    def __init__(self, msg: str, code: int = 0) -> None:
        super().__init__(msg)
        self.code = code


class Client:
    def __init__(
        self,
        client_id: str,
        host: str,
        port: int,
        user: str | None = None,
        password: str | None = None,
        keepalive_s: int = 30,
        will_topic: str | None = None,
        will_msg: bytes = b"",
        rx_buf: bytearray | None = None,
        handler=None,
        write_timeout_ms: int = _WRITE_TIMEOUT_MS,
    ) -> None:
        self.client_id = client_id.encode()
        self.host = host
        self.port = port
        self._ip: str | None = None  # the host's address as last resolved; None: resolve
        self.user = user.encode() if user else None
        self.password = password.encode() if password else None
        self.keepalive_s = keepalive_s
        self.write_timeout_ms = write_timeout_ms
        self.will_topic = will_topic.encode() if will_topic else None
        self.will_msg = will_msg
        # rx_buf: a receive buffer the caller allocated (a large one is best allocated early,
        # while the heap still has a free block that size); else _RX_SIZE bytes.
        self._rx = rx_buf if rx_buf is not None else bytearray(_RX_SIZE)
        self._rx_size = len(self._rx)
        self._rxv = memoryview(self._rx)
        self._tx = bytearray(_TX_SIZE)
        self._txv = memoryview(self._tx)
        self._small = bytearray(4)
        self._lock = asyncio.Lock()
        self._evt = asyncio.Event()  # PUBACK or SUBACK arrived, or the link died
        self._r: asyncio.StreamReader | None = None
        self._w: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self._pid = 0
        self._puback = 0
        self._suback = 0
        self._suback_rc = 0
        self.inbox: list[tuple[int, bytes, bytes]] = []  # (pid or 0, topic, payload)
        self.inbox_drops = 0
        self.handler = handler  # handler(topic, payload) -> None, or None for the inbox
        self.oversized = 0  # PUBLISH packets too large for the buffer: dropped (and PUBACKed)
        self._drop_pid = 0  # the packet id of the last one dropped (0: QoS 0)
        self.wake = asyncio.Event()  # set when a message arrives or the link dies
        self.up = False
        self.last_rx = ticks_ms()
        self.last_tx = ticks_ms()

    # -- packet building

    def _varlen(self, i: int, n: int) -> int:
        while True:
            b = n & 0x7F
            n >>= 7
            self._tx[i] = b | 0x80 if n else b
            i += 1
            if not n:
                return i

    def _put(self, i: int, data: bytes | memoryview) -> int:
        n = len(data)
        self._txv[i : i + n] = data
        return i + n

    def _put_str(self, i: int, data: bytes | memoryview) -> int:
        n = len(data)
        self._tx[i] = n >> 8
        self._tx[i + 1] = n & 0xFF
        return self._put(i + 2, data)

    def _next_pid(self) -> int:
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def _send(self, data: bytes | bytearray | memoryview) -> None:
        w = self._w
        if w is None:
            raise OSError("not connected")
        async with self._lock:
            w.write(data)
            try:
                await asyncio.wait_for_ms(w.drain(), self.write_timeout_ms)
            except asyncio.TimeoutError:
                self.up = False  # the stream is left with a partial packet: unusable
                self._evt.set()
                self.wake.set()
                raise OSError("write timed out: the broker takes nothing") from None
        self.last_tx = ticks_ms()

    # -- reading

    async def _readn(self, n: int) -> None:
        # Reads exactly n bytes into the start of the receive buffer.
        r = self._r
        if r is None:
            raise OSError("not connected")
        got = 0
        while got < n:
            k = await r.readinto(self._rxv[got:n])
            if k is None:
                continue
            if k == 0:
                raise EOFError("broker closed the connection")
            got += k

    async def _read_packet(self) -> tuple[int, int]:
        # Returns (first byte, body length); the body is in the receive buffer, or was
        # discarded (length -1) when it does not fit.
        await self._readn(1)
        b0 = self._rx[0]
        n = 0
        shift = 0
        while True:
            await self._readn(1)
            b = self._rx[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError("bad remaining length")
        if n <= self._rx_size:
            await self._readn(n)
            return b0, n
        # Too large: read a buffer's worth first (a PUBLISH's topic and packet id are at its
        # start), then discard the rest.
        k = min(n, self._rx_size)
        await self._readn(k)
        pid = 0
        rx = self._rx
        if b0 & 0xF0 == _PUBLISH and (b0 >> 1) & 3 == 1:
            i = 2 + (rx[0] << 8 | rx[1])
            if i + 2 <= k:
                pid = rx[i] << 8 | rx[i + 1]
        print("mqtt: dropped a packet of %d bytes, larger than the %d-byte buffer" % (n, self._rx_size))
        n -= k
        while n > 0:
            k = min(n, self._rx_size)
            await self._readn(k)
            n -= k
        if b0 & 0xF0 == _PUBLISH:
            self.oversized += 1
        self._drop_pid = pid
        return b0, -1

    # -- connection

    async def connect(self, timeout_ms: int = 10000) -> bool:
        # Opens the link; returns the broker's session-present flag. Raises OSError,
        # EOFError, MQTTError or asyncio.TimeoutError.
        await self.close()
        n = 10 + 2 + len(self.client_id)
        flags = 0  # clean session off (§2.2)
        if self.will_topic:
            n += 2 + len(self.will_topic) + 2 + len(self.will_msg)
            flags |= 0x04 | 0x08  # will, QoS 1, not retained
        if self.user:
            n += 2 + len(self.user)
            flags |= 0x80
        if self.password:
            n += 2 + len(self.password)
            flags |= 0x40
        if n + 5 > _TX_SIZE:
            raise MQTTError("CONNECT does not fit the buffer")
        self._tx[0] = _CONNECT
        i = self._varlen(1, n)
        i = self._put_str(i, b"MQTT")
        self._tx[i] = 4  # protocol level 3.1.1
        self._tx[i + 1] = flags
        self._tx[i + 2] = self.keepalive_s >> 8
        self._tx[i + 3] = self.keepalive_s & 0xFF
        i = self._put_str(i + 4, self.client_id)
        if self.will_topic:
            i = self._put_str(i, self.will_topic)
            i = self._put_str(i, self.will_msg)
        if self.user:
            i = self._put_str(i, self.user)
        if self.password:
            i = self._put_str(i, self.password)
        ip = self._ip
        if ip is None:
            # The broker's IPv4 address as text; OSError when the name does not resolve.
            sa = getaddrinfo(self.host, self.port, _AF_INET, _SOCK_STREAM)[0][-1]
            if isinstance(sa, tuple):
                ip = sa[0]  # the ESP32 (lwIP): ("192.168.4.1", 1883)
            else:
                ip = "%d.%d.%d.%d" % (sa[4], sa[5], sa[6], sa[7])  # unix port: a sockaddr_in
        # Kept only once the broker has answered: an address that takes no connection or gives
        # no answer is resolved again before the next attempt. (MicroPython's open_connection
        # returns before the TCP handshake has completed: a refused connection shows on the
        # first write or read.)
        self._ip = None
        self._r, self._w = await asyncio.wait_for_ms(asyncio.open_connection(ip, self.port), timeout_ms)
        await self._send(self._txv[:i])
        b0: int
        blen: int
        b0, blen = await asyncio.wait_for_ms(self._read_packet(), timeout_ms)
        self._ip = ip
        if b0 != _CONNACK or blen != 2:
            raise MQTTError("expected CONNACK")
        if self._rx[1]:
            raise MQTTError("broker refused the connection, code %d" % self._rx[1], self._rx[1])
        session = bool(self._rx[0] & 1)
        self.up = True
        self.last_rx = ticks_ms()
        self.inbox = []
        self._evt = asyncio.Event()
        self._task = asyncio.create_task(self._reader())
        return session

    async def disconnect(self) -> None:
        # A clean end (DISCONNECT): the broker drops the last will. A battery button says
        # goodbye before it sleeps; its silence until the next check-in is expected.
        if self.up:
            try:
                await self._send(b"\xe0\x00")
            except OSError:
                pass
        await self.close()

    async def close(self) -> None:
        # Drops the link without DISCONNECT, so the broker publishes the last will.
        self.up = False
        t, self._task = self._task, None
        if t is not None:
            t.cancel()
        w, self._w, self._r = self._w, None, None
        if w is not None:
            try:
                w.close()
                await w.wait_closed()
            except OSError:
                pass

    # -- operations

    async def _wait_ack(self, kind: int, pid: int, timeout_ms: int) -> None:
        t0 = ticks_ms()
        while True:
            if (self._puback if kind == _PUBACK else self._suback) == pid:
                return
            if not self.up:
                raise OSError("link lost")
            left = timeout_ms - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                raise MQTTError("no acknowledgement from the broker")
            self._evt.clear()
            try:
                await asyncio.wait_for_ms(self._evt.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def publish(
        self,
        topic: bytes | memoryview,
        payload: bytes | memoryview,
        qos: int = 0,
        timeout_ms: int = 5000,
    ) -> None:
        # QoS 1 returns once the broker has the message (PUBACK), else raises.
        n = 2 + len(topic) + len(payload) + (2 if qos else 0)
        if n + 5 > _TX_SIZE:
            raise MQTTError("message does not fit the buffer")
        self._tx[0] = _PUBLISH | (qos << 1)
        i = self._varlen(1, n)
        i = self._put_str(i, topic)
        pid = 0
        if qos:
            pid = self._next_pid()
            self._tx[i] = pid >> 8
            self._tx[i + 1] = pid & 0xFF
            i += 2
        i = self._put(i, payload)
        await self._send(self._txv[:i])
        if qos:
            await self._wait_ack(_PUBACK, pid, timeout_ms)

    async def subscribe(self, topic: bytes, qos: int = 1, timeout_ms: int = 5000) -> None:
        pid = self._next_pid()
        self._tx[0] = _SUBSCRIBE
        i = self._varlen(1, 2 + 2 + len(topic) + 1)
        self._tx[i] = pid >> 8
        self._tx[i + 1] = pid & 0xFF
        i = self._put_str(i + 2, topic)
        self._tx[i] = qos
        await self._send(self._txv[: i + 1])
        await self._wait_ack(_SUBACK, pid, timeout_ms)
        if self._suback_rc & 0x80:
            raise MQTTError("subscription refused")

    async def ping(self) -> None:
        await self._send(_PINGREQ)

    async def done(self, pid: int) -> None:
        # PUBACK for an incoming QoS 1 message the application has acted on.
        if pid and self.up:
            s = self._small
            s[0] = _PUBACK
            s[1] = 2
            s[2] = pid >> 8
            s[3] = pid & 0xFF
            await self._send(s)

    def idle_ms(self) -> int:
        # Milliseconds since the broker last sent anything.
        return ticks_diff(ticks_ms(), self.last_rx)

    async def _reader(self) -> None:
        try:
            while True:
                b0, n = await self._read_packet()
                self.last_rx = ticks_ms()
                kind = b0 & 0xF0
                rx = self._rx
                if n < 0:
                    pid = self._drop_pid
                    if pid and self.handler is not None:
                        await self.done(pid)
                    elif pid:
                        self._queue(pid, b"", b"")  # an empty topic: nothing to act on
                    continue
                if kind == _PUBLISH:
                    pid = self._on_publish(b0, n)
                    if pid and self.handler is not None:
                        await self.done(pid)
                elif kind == _PUBACK and n >= 2:
                    self._puback = rx[0] << 8 | rx[1]
                    self._evt.set()
                elif kind == _SUBACK and n >= 3:
                    self._suback_rc = rx[2]
                    self._suback = rx[0] << 8 | rx[1]
                    self._evt.set()
                elif kind != _PINGRESP:
                    pass  # nothing else is expected by a QoS 0/1 client
        except (OSError, EOFError, MQTTError):
            pass
        finally:
            self.up = False
            self._evt.set()
            self.wake.set()

    def _on_publish(self, b0: int, n: int) -> int:
        # Returns the packet id the handler has dealt with (0: none, or left to the inbox).
        rx = self._rx
        qos = (b0 >> 1) & 3
        tlen = rx[0] << 8 | rx[1]
        i = 2 + tlen
        pid = 0
        if qos:
            if i + 2 > n:
                return 0
            pid = rx[i] << 8 | rx[i + 1]
            i += 2
        if i > n or qos > 1:
            return 0
        if self.handler is not None:
            self.handler(self._rxv[2 : 2 + tlen], self._rxv[i:n])
            return pid
        self._queue(pid, bytes(self._rxv[2 : 2 + tlen]), bytes(self._rxv[i:n]))
        return 0

    def _queue(self, pid: int, topic: bytes, payload: bytes) -> None:
        # Into the inbox; the application PUBACKs each entry with done(pid) in this order.
        if len(self.inbox) >= _INBOX:
            self.inbox.pop(0)
            self.inbox_drops += 1
        self.inbox.append((pid, topic, payload))
        self.wake.set()
