"""SMS PDUs (3GPP TS 23.040 with the alphabets of TS 23.038), pure code: no I/O.

What the driver needs and nothing more:

- `encode_submit(number, text)`: SMS-SUBMIT PDUs for `AT+CMGS` in PDU mode. GSM 7-bit when
  every character is in the default alphabet (or its extension table), else UCS2 (Chinese).
  Text over one message (160 GSM septets / 70 UCS2 characters) is split into concatenated parts
  carrying a user data header with an 8-bit reference (IEI 0x00): 153 septets / 67 characters
  each, never splitting an escape pair or a UTF-16 surrogate pair.
- `decode(hex)`: SMS-DELIVER (incoming, including concatenation headers with 8- or 16-bit
  references), SMS-STATUS-REPORT (delivery reports) and SMS-SUBMIT (the virtual modem reads what
  the driver sends). The PDU starts with the SMSC address, as `AT+CMGR`, `AT+CMGL`, `+CDS` and
  `AT+CMGS` carry it.

Every malformed input raises `PduError`, never anything else (the modem's lines may be garbage).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXT = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E,
            "|": 0x40, "€": 0x65}
_BASIC_INDEX = {c: i for i, c in enumerate(GSM7_BASIC) if c != "\x1b"}
_EXT_CHAR = {v: k for k, v in GSM7_EXT.items()}
ESC = 0x1B

DCS_GSM7 = 0x00
DCS_8BIT = 0x04
DCS_UCS2 = 0x08

GSM7_SINGLE = 160
GSM7_PART = 153  # 160 septets less the 6-octet header and its fill bit (7 septets)
UCS2_SINGLE = 70  # UTF-16 code units
UCS2_PART = 67
MAX_PARTS = 255
DEFAULT_VALIDITY_MIN = 60


class PduError(ValueError):
    """A PDU that cannot be built or read; the message says which field."""


@dataclass(frozen=True)
class Concat:
    ref: int
    total: int
    seq: int


@dataclass(frozen=True)
class SubmitPdu:
    """One part ready for `AT+CMGS=<tpdu_len>`; `hex` includes the (empty) SMSC field."""

    hex: str
    tpdu_len: int
    concat: Concat | None


@dataclass(frozen=True)
class Deliver:
    sender: str
    text: str
    timestamp: dt.datetime | None
    concat: Concat | None
    smsc: str


@dataclass(frozen=True)
class Submit:
    number: str
    text: str
    mr: int
    status_report: bool
    concat: Concat | None


@dataclass(frozen=True)
class StatusReport:
    mr: int
    recipient: str
    status: int  # TP-ST: 0x00-0x1F delivered, 0x20-0x3F still trying, 0x40+ failed
    sc_timestamp: dt.datetime | None
    discharge: dt.datetime | None

    @property
    def delivered(self) -> bool:
        return self.status < 0x20

    @property
    def final(self) -> bool:
        """The centre will not try again: delivered or permanently failed."""
        return self.status < 0x20 or self.status >= 0x40


# -- alphabets


def gsm7_septets(text: str) -> list[int] | None:
    """The septets of `text` in the default alphabet, or None if a character is not in it."""
    out: list[int] = []
    for ch in text:
        i = _BASIC_INDEX.get(ch)
        if i is not None:
            out.append(i)
            continue
        e = GSM7_EXT.get(ch)
        if e is None:
            return None
        out += [ESC, e]
    return out


def gsm7_text(septets: list[int]) -> str:
    out: list[str] = []
    it = iter(septets)
    for s in it:
        if s == ESC:
            nxt = next(it, None)
            if nxt is None:
                break
            # An unknown extension shows the basic character (TS 23.038 6.2.1.1).
            out.append(_EXT_CHAR.get(nxt, GSM7_BASIC[nxt] if nxt != ESC else " "))
        else:
            out.append(GSM7_BASIC[s])
    return "".join(out)


def pack7(septets: list[int], fill_bits: int = 0) -> bytes:
    acc = 0
    nbits = fill_bits
    out = bytearray()
    for s in septets:
        acc |= (s & 0x7F) << nbits
        nbits += 7
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits > 0:
        out.append(acc & 0xFF)
    return bytes(out)


def unpack7(data: bytes, count: int, start_bit: int = 0) -> list[int]:
    if start_bit + 7 * count > len(data) * 8:
        raise PduError(f"user data holds {len(data)} octets, too few for {count} septets")
    value = int.from_bytes(data, "little")
    return [(value >> (start_bit + 7 * i)) & 0x7F for i in range(count)]


# -- splitting


def split_text(text: str) -> tuple[int, list[str]]:
    """(data coding scheme, parts): one part if it fits one message."""
    septets = gsm7_septets(text)
    if septets is not None:
        if len(septets) <= GSM7_SINGLE:
            return DCS_GSM7, [text]
        parts: list[str] = []
        cur: list[str] = []
        used = 0
        for ch in text:
            n = 2 if ch in GSM7_EXT else 1
            if used + n > GSM7_PART:
                parts.append("".join(cur))
                cur, used = [], 0
            cur.append(ch)
            used += n
        parts.append("".join(cur))
        return DCS_GSM7, parts
    units = len(text.encode("utf-16-be")) // 2
    if units <= UCS2_SINGLE:
        return DCS_UCS2, [text]
    parts = []
    cur = []
    used = 0
    for ch in text:
        n = 2 if ord(ch) > 0xFFFF else 1
        if used + n > UCS2_PART:
            parts.append("".join(cur))
            cur, used = [], 0
        cur.append(ch)
        used += n
    parts.append("".join(cur))
    return DCS_UCS2, parts


# -- fields


def _semi_octets(digits: str) -> bytes:
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex("".join(digits[i + 1] + digits[i] for i in range(0, len(digits), 2)))


def encode_address(number: str) -> bytes:
    """TP-DA: international (+) or unknown type, ISDN numbering plan."""
    n = number.strip().replace(" ", "").replace("-", "")
    toa = 0x81
    if n.startswith("+"):
        toa, n = 0x91, n[1:]
    if not n or not n.isdigit() or len(n) > 20:
        raise PduError(f"phone number {number!r} is not 1-20 digits with an optional leading +")
    return bytes([len(n), toa]) + _semi_octets(n)


_BCD = "0123456789*#abc"


def _digits(data: bytes, count: int) -> str:
    out = []
    for b in data:
        for nib in (b & 0x0F, b >> 4):
            if nib == 0x0F:
                continue
            out.append(_BCD[nib])
    return "".join(out)[:count]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise PduError(f"PDU ends inside {what} (octet {self.pos}, {len(self.data)} octets)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out


def _read_address(r: _Reader, what: str) -> str:
    ndigits = r.byte(what)
    toa = r.byte(what)
    raw = r.take((ndigits + 1) // 2, what)
    if toa & 0x70 == 0x50:  # alphanumeric (a sender name), GSM 7-bit packed
        return gsm7_text(unpack7(raw, ndigits * 4 // 7))
    digits = _digits(raw, ndigits)
    return ("+" + digits) if toa & 0x70 == 0x10 else digits


def _read_smsc(r: _Reader) -> str:
    n = r.byte("SMSC length")
    if n == 0:
        return ""
    toa = r.byte("SMSC type")
    digits = _digits(r.take(n - 1, "SMSC address"), 2 * (n - 1))
    return ("+" + digits) if toa & 0x70 == 0x10 else digits


def _read_timestamp(r: _Reader, what: str) -> dt.datetime | None:
    raw = r.take(7, what)
    sw = [((b & 0x0F) * 10 + (b >> 4)) for b in raw[:6]]
    tzb = raw[6]
    quarters = (tzb & 0x07) * 10 + (tzb >> 4)
    if tzb & 0x08:
        quarters = -quarters
    try:
        return dt.datetime(sw[0] + (1900 if sw[0] >= 90 else 2000), sw[1], sw[2], sw[3], sw[4], sw[5],
                           tzinfo=dt.timezone(dt.timedelta(minutes=15 * quarters)))
    except ValueError:
        return None  # a module with a bad clock: the message still counts


def encode_timestamp(when: dt.datetime) -> bytes:
    off = when.utcoffset() or dt.timedelta(0)
    quarters = int(off.total_seconds() // 900)
    fields = [when.year % 100, when.month, when.day, when.hour, when.minute, when.second]
    out = bytearray(((v % 10) << 4) | (v // 10) for v in fields)
    q = abs(quarters)
    out.append(((q % 10) << 4) | (q // 10) | (0x08 if quarters < 0 else 0))
    return bytes(out)


def _concat_of(udh: bytes) -> Concat | None:
    i = 0
    while i + 2 <= len(udh):
        iei, n = udh[i], udh[i + 1]
        body = udh[i + 2 : i + 2 + n]
        if len(body) != n:
            raise PduError("user data header element runs past its header")
        if iei == 0x00 and n == 3:
            return Concat(body[0], body[1], body[2])
        if iei == 0x08 and n == 4:
            return Concat((body[0] << 8) | body[1], body[2], body[3])
        i += 2 + n
    return None


def _dcs_alphabet(dcs: int) -> int:
    group = dcs >> 4
    if group <= 0x07:  # general data coding (compressed is not supported by modules either)
        if dcs & 0x20:
            raise PduError(f"data coding 0x{dcs:02X}: compressed text is not supported")
        return dcs & 0x0C
    if group == 0x0F:
        return DCS_8BIT if dcs & 0x04 else DCS_GSM7
    if group in (0x0C, 0x0D):
        return DCS_GSM7
    if group == 0x0E:
        return DCS_UCS2
    return DCS_GSM7


def _read_user_data(r: _Reader, udhi: bool, dcs: int) -> tuple[str, Concat | None]:
    udl = r.byte("user data length")
    data = r.rest()
    alphabet = _dcs_alphabet(dcs)
    udh = b""
    concat = None
    if udhi:
        if not data:
            raise PduError("user data header flagged but no user data")
        udh = data[: 1 + data[0]]
        if len(udh) != 1 + data[0]:
            raise PduError("user data header longer than the user data")
        concat = _concat_of(udh[1:])
    if alphabet == DCS_GSM7:
        head_bits = len(udh) * 8
        fill = (7 - head_bits % 7) % 7
        head_septets = (head_bits + fill) // 7
        count = udl - head_septets
        if count < 0:
            raise PduError(f"user data length {udl} is shorter than its header")
        septets = unpack7(data, count, head_bits + fill)
        return gsm7_text(septets), concat
    body = data[len(udh) : udl]
    if len(body) != udl - len(udh):
        raise PduError(f"user data length {udl} but {len(data)} octets follow")
    if alphabet == DCS_UCS2:
        if len(body) % 2:
            body = body[:-1]
        return body.decode("utf-16-be", errors="replace"), concat
    return body.hex().upper(), concat  # 8-bit data: shown as hex, never as text


# -- public


def encode_submit(
    number: str,
    text: str,
    *,
    concat_ref: int = 0,
    status_report: bool = True,
    validity_minutes: int | None = DEFAULT_VALIDITY_MIN,
) -> list[SubmitPdu]:
    """SMS-SUBMIT PDUs for `text` to `number`; `concat_ref` (0-255) tags the parts of one
    message. TP-MR is 0: the module assigns the reference and answers it in `+CMGS: <mr>`."""
    if not text:
        raise PduError("an SMS needs some text")
    dcs, parts = split_text(text)
    if len(parts) > MAX_PARTS:
        raise PduError(f"text needs {len(parts)} parts, more than the {MAX_PARTS} a message can have")
    da = encode_address(number)
    vp = b""
    first = 0x01  # SMS-SUBMIT
    if validity_minutes is not None:
        first |= 0x10  # relative validity period
        vp = bytes([_relative_validity(validity_minutes)])
    if status_report:
        first |= 0x20
    out: list[SubmitPdu] = []
    total = len(parts)
    for seq, part in enumerate(parts, start=1):
        concat = Concat(concat_ref & 0xFF, total, seq) if total > 1 else None
        udh = bytes([5, 0x00, 3, concat_ref & 0xFF, total, seq]) if concat else b""
        if dcs == DCS_GSM7:
            septets = gsm7_septets(part) or []
            head_bits = len(udh) * 8
            fill = (7 - head_bits % 7) % 7
            udl = (head_bits + fill) // 7 + len(septets)
            packed = pack7(septets, fill)
            ud = udh + packed
        else:
            body = part.encode("utf-16-be")
            ud = udh + body
            udl = len(ud)
        fo = first | (0x40 if udh else 0)
        tpdu = bytes([fo, 0x00]) + da + bytes([0x00, dcs]) + vp + bytes([udl]) + ud
        out.append(SubmitPdu(hex=("00" + tpdu.hex()).upper(), tpdu_len=len(tpdu), concat=concat))
    return out


def _relative_validity(minutes: int) -> int:
    """TP-VP relative format (TS 23.040 9.2.3.12.1), rounded up to the next step."""
    if minutes <= 12 * 60:
        return max(0, -(-minutes // 5) - 1)
    if minutes <= 24 * 60:
        return min(167, 143 + -(-(minutes - 720) // 30))
    days = -(-minutes // 1440)
    if days <= 30:
        return 166 + days
    return min(255, 192 + -(-days // 7))


def decode(hex_pdu: str) -> Deliver | StatusReport | Submit:
    """A PDU as a module prints it (hex, starting with the SMSC address)."""
    try:
        data = bytes.fromhex(hex_pdu.strip())
    except ValueError:
        raise PduError("PDU is not hexadecimal") from None
    r = _Reader(data)
    smsc = _read_smsc(r)
    fo = r.byte("first octet")
    mti = fo & 0x03
    udhi = bool(fo & 0x40)
    if mti == 0x00:
        sender = _read_address(r, "originating address")
        r.byte("protocol identifier")
        dcs = r.byte("data coding scheme")
        ts = _read_timestamp(r, "service centre time stamp")
        text, concat = _read_user_data(r, udhi, dcs)
        return Deliver(sender=sender, text=text, timestamp=ts, concat=concat, smsc=smsc)
    if mti == 0x02:
        mr = r.byte("message reference")
        recipient = _read_address(r, "recipient address")
        scts = _read_timestamp(r, "service centre time stamp")
        discharge = _read_timestamp(r, "discharge time")
        status = r.byte("status")
        return StatusReport(mr=mr, recipient=recipient, status=status, sc_timestamp=scts,
                            discharge=discharge)
    if mti == 0x01:
        mr = r.byte("message reference")
        number = _read_address(r, "destination address")
        r.byte("protocol identifier")
        dcs = r.byte("data coding scheme")
        vpf = (fo >> 3) & 0x03
        if vpf == 0x02:
            r.take(1, "validity period")
        elif vpf in (0x01, 0x03):
            r.take(7, "validity period")
        text, concat = _read_user_data(r, udhi, dcs)
        return Submit(number=number, text=text, mr=mr, status_report=bool(fo & 0x20), concat=concat)
    raise PduError(f"message type {mti} (first octet 0x{fo:02X}) is not DELIVER, SUBMIT or STATUS-REPORT")


def encode_deliver(
    sender: str, text: str, when: dt.datetime, *, concat: Concat | None = None, dcs: int | None = None
) -> str:
    """An SMS-DELIVER PDU (hex, with an empty SMSC field) for one part: what a network hands a
    module. The virtual modem builds incoming messages with it."""
    if dcs is None:
        dcs = DCS_GSM7 if gsm7_septets(text) is not None else DCS_UCS2
    udh = bytes([5, 0x00, 3, concat.ref, concat.total, concat.seq]) if concat else b""
    if dcs == DCS_GSM7:
        septets = gsm7_septets(text)
        if septets is None:
            raise PduError("text is not in the GSM 7-bit alphabet")
        head_bits = len(udh) * 8
        fill = (7 - head_bits % 7) % 7
        udl = (head_bits + fill) // 7 + len(septets)
        ud = udh + pack7(septets, fill)
    else:
        ud = udh + text.encode("utf-16-be")
        udl = len(ud)
    fo = 0x04 | (0x40 if udh else 0)  # SMS-DELIVER, no more messages to send
    tpdu = bytes([fo]) + encode_address(sender) + bytes([0x00, dcs]) + encode_timestamp(when)
    return ("00" + (tpdu + bytes([udl]) + ud).hex()).upper()


def encode_status_report(
    mr: int, recipient: str, status: int, scts: dt.datetime, discharge: dt.datetime
) -> str:
    """An SMS-STATUS-REPORT PDU (hex, empty SMSC field) for message reference `mr`."""
    tpdu = bytes([0x06, mr & 0xFF]) + encode_address(recipient) + encode_timestamp(scts)
    tpdu += encode_timestamp(discharge) + bytes([status & 0xFF])
    return ("00" + tpdu.hex()).upper()


def tpdu_length(hex_pdu: str) -> int:
    """The length `+CMGS=`, `+CMGR:` and `+CDS:` give: octets after the SMSC field."""
    data = bytes.fromhex(hex_pdu)
    return len(data) - 1 - data[0]
