# The speaker's sound output: a driver for two serial Chinese text-to-speech modules, and clips
# as tone sequences on the audio output. Tts.play() plays a broadcast's clip and text `rep`
# times and stops at once when told.
#
# The modules and their frames (`tts_module` in config.json picks one; all lengths big-endian):
#   XFS5152CE (iFlytek; the default), no checksum:
#     FD  LEN_HI LEN_LO  CMD  [ENC  TEXT...]
#     LEN counts every byte after itself: CMD, ENC and TEXT. ENC 0x03 = Unicode, the text
#     UTF-16 little-endian; up to 4 KB of data in a frame.
#   SYN6288 (Beijing Yutone), one XOR checksum byte at the end:
#     FD  LEN_HI LEN_LO  CMD  [PAR  TEXT...]  XOR
#     LEN counts CMD, PAR, TEXT and XOR; XOR is the exclusive or of every byte before it, FD
#     included. PAR: bits 7-3 background music (0: none, as sent here), bits 2-0 the encoding
#     (3 = Unicode, the text UTF-16 big-endian); at most 200 bytes of text in a frame.
#   Both: CMD 0x01 synthesise, 0x02 stop, 0x21 status query (0x03 pause and 0x04 resume are
#   not used).
# One-byte replies (both): 0x41 frame accepted, 0x45 frame refused, 0x4E busy, 0x4F idle (also
# sent by some modules when they finish speaking), 0x4A ready after power-up.
#
# Frame building and text chunking are plain functions (the unit tests check them against
# byte vectors under CPython). `Tts` talks to the module through a UART-like object passed
# in (write(buf), read() -> bytes or None, any() -> int): machine.UART on the ESP32, the
# simulated module in hal_sim. Long texts go out in chunks, so that a stop never waits behind
# a whole 500-character frame (at 9600 baud a 1 KB frame alone takes a second to send) and the
# SYN6288's limit (200 bytes of text) is respected.
import asyncio

try:
    from micropython import const
except ImportError:  # CPython, where the unit tests check the frames

    def const(x: int) -> int:  # type: ignore[misc]
        return x


try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython
    from time import monotonic  # type: ignore[attr-defined]

    def ticks_ms() -> int:  # type: ignore[misc,no-redef]
        return int(monotonic() * 1000)

    def ticks_diff(a: int, b: int) -> int:  # type: ignore[misc,no-redef]
        return a - b


XFS5152 = const(0)
SYN6288 = const(1)
MODULES = ("xfs5152", "syn6288")  # config.json's tts_module, indexed by the numbers above

HEAD = 0xFD
CMD_SYNTH = 0x01
CMD_STOP = 0x02
CMD_STATUS = 0x21
ENC_UNICODE = 0x03

ACK = 0x41
REFUSED = 0x45
BUSY = 0x4E
IDLE = 0x4F
READY = 0x4A

MAX_TEXT_BYTES = 4000  # the XFS5152CE takes 4 KB of data per frame
MAX_TEXT_BYTES_SYN6288 = 200
DEFAULT_CHUNK_BYTES = 200

_POLL_MS = const(50)  # status query period while speaking; also how fast a stop takes effect
_ACK_MS = const(500)  # a module answers a frame within a few ms; allow for a slow UART
_SILENT_MS = const(2000)  # no answer to status queries for this long: the module is gone
_MS_PER_CHAR_MAX = const(600)  # slower than any speech rate: a busy module past this is stuck
_STEP_MS = const(50)  # a clip checks for a stop this often
_BREAKS = "，。！？；：、,.!?;: \n"

# Clips: (Hz, ms) tone sequences for the audio output; 0 Hz is silence.
CLIPS = {
    "siren": ((650, 300), (950, 300)) * 4,
    "chime": ((880, 250), (0, 50), (698, 250), (0, 50), (523, 500)),
}


class TtsError(Exception):
    pass


def _xor(buf, n: int) -> int:
    x = 0
    for i in range(n):
        x ^= buf[i]
    return x


def command_frame(cmd: int, module: int = XFS5152) -> bytes:
    # A frame without data: stop, pause, resume or status query.
    if module == SYN6288:
        return bytes((HEAD, 0, 2, cmd, HEAD ^ 2 ^ cmd))
    return bytes((HEAD, 0, 1, cmd))


STOP_FRAME = command_frame(CMD_STOP)
STATUS_FRAME = command_frame(CMD_STATUS)


def max_text_bytes(module: int) -> int:
    return MAX_TEXT_BYTES_SYN6288 if module == SYN6288 else MAX_TEXT_BYTES


def synth_frame(text: str, module: int = XFS5152) -> bytes:
    # Synthesise `text` (Unicode BMP), two bytes per character: little-endian for the
    # XFS5152CE, big-endian and a checksum for the SYN6288. Anything outside the BMP becomes
    # "?" (the protocol never sends it, §8.1).
    n = len(text)
    syn = module == SYN6288
    if 2 * n > max_text_bytes(module):
        raise ValueError("text of %d characters does not fit one frame" % n)
    size = 2 + 2 * n + (1 if syn else 0)
    out = bytearray(3 + size)
    out[0] = HEAD
    out[1] = size >> 8
    out[2] = size & 0xFF
    out[3] = CMD_SYNTH
    out[4] = ENC_UNICODE  # SYN6288: background music 0 in bits 7-3
    lo = 1 if syn else 0  # where each character's low byte goes
    i = 5
    for ch in text:
        o = ord(ch)
        if o > 0xFFFF:
            o = 0x3F
        out[i + lo] = o & 0xFF
        out[i + 1 - lo] = o >> 8
        i += 2
    if syn:
        out[i] = _xor(out, i)
    return bytes(out)


def chunks(text: str, max_chars: int) -> list[tuple[int, int]]:
    # Splits text into (start, end) character ranges of at most max_chars, cutting after the
    # last punctuation mark or space in the second half of a window when there is one, so the
    # module's intonation breaks where the sentence does.
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    n = len(text)
    out = []
    i = 0
    while i < n:
        end = min(n, i + max_chars)
        if end < n:
            cut = -1
            j = i
            # One slice per window: indexing a MicroPython str is not O(1) for non-ASCII.
            for ch in text[i:end]:
                j += 1
                if ch in _BREAKS and j - i > max_chars // 2:
                    cut = j
            if cut > 0:
                end = cut
        out.append((i, end))
        i = end
    return out


class Tts:
    # uart: the module's serial port; tone(hz): the audio output for clips (0 is silence).
    # module: XFS5152 or SYN6288, whose frames it speaks.
    def __init__(self, uart, tone, chunk_bytes: int = DEFAULT_CHUNK_BYTES, module: int = XFS5152) -> None:
        top = max_text_bytes(module)
        if not 2 <= chunk_bytes <= top:
            raise ValueError("chunk_bytes must be 2..%d for the %s" % (top, MODULES[module]))
        self.uart = uart
        self.tone = tone
        self.chunk_chars = chunk_bytes // 2
        self.module = module
        self._stop = command_frame(CMD_STOP, module)
        self._status = command_frame(CMD_STATUS, module)

    def _reply(self) -> int:
        # The newest byte the module has sent, -1 if none; older ones are stale answers.
        last = -1
        while self.uart.any():
            data = self.uart.read()
            if data:
                last = data[-1]
        return last

    async def _send(self, frame: bytes) -> None:
        # Sends one synthesis frame and waits for the module to accept it.
        self._reply()  # drop stale answers
        self.uart.write(frame)
        t0 = ticks_ms()
        while True:
            b = self._reply()
            if b == ACK or b == BUSY:
                return
            if b == REFUSED:
                raise TtsError(
                    "the TTS module refused a frame (0x45): is it a %s? config.json's tts_module "
                    "names the module (xfs5152 or syn6288)" % MODULES[self.module]
                )
            if ticks_diff(ticks_ms(), t0) > _ACK_MS:
                raise TtsError(
                    "no answer from the TTS module within %d ms: check its power, the UART wiring "
                    "(module TX to the tts_rx pin, RX to tts_tx) and tts_baud" % _ACK_MS
                )
            await asyncio.sleep_ms(10)

    async def _until_idle(self, stop, limit_ms: int) -> bool:
        # Polls the module's status until it is idle (True) or stop() says to stop (False;
        # the module is told to stop).
        t0 = heard = ticks_ms()
        while True:
            if stop():
                self.uart.write(self._stop)
                return False
            self.uart.write(self._status)
            await asyncio.sleep_ms(_POLL_MS)
            b = self._reply()
            now = ticks_ms()
            if b == IDLE or b == READY:
                return True
            if b >= 0:
                heard = now
            elif ticks_diff(now, heard) > _SILENT_MS:
                raise TtsError("the TTS module stopped answering status queries")
            if ticks_diff(now, t0) > limit_ms:
                self.uart.write(self._stop)
                raise TtsError("the TTS module is still busy after %d ms" % limit_ms)

    async def say(self, text: str, stop) -> bool:
        # Speaks text, chunk by chunk. True when all of it was spoken, False when stop()
        # turned true. Raises TtsError.
        for a, b in chunks(text, self.chunk_chars):
            if stop():
                return False
            await self._send(synth_frame(text[a:b], self.module))
            if not await self._until_idle(stop, (b - a) * _MS_PER_CHAR_MAX + 3000):
                return False
        return True

    async def clip(self, name: str, stop) -> bool:
        # Plays a clip (an unknown one is skipped); False if stop() turned true meanwhile.
        for hz, ms in CLIPS.get(name, ()):
            self.tone(hz)
            while ms > 0:
                if stop():
                    return False
                d = min(ms, _STEP_MS)
                await asyncio.sleep_ms(d)
                ms -= d
        return True

    async def play(self, clip: str | None, text: str, rep: int, stop, expired) -> bool:
        # A broadcast's sound: clip then text, rep times; no repeat starts once expired() is
        # true. False when stop() turned true (the sound has stopped). Raises TtsError.
        try:
            for i in range(rep):
                if i and expired():
                    break
                if clip and not await self.clip(clip, stop):
                    return False
                self.tone(0)
                if text and not await self.say(text, stop):
                    return False
        finally:
            self.tone(0)
        return True
