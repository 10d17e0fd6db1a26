# The simulated TTS module behind a simulated speaker's "UART" (hal_sim.SimHal.tts_uart): an
# XFS5152CE or a SYN6288 (tts.py has their frames) that takes real time to speak and logs every
# frame to tts.log in the working directory. Imported only by a speaker.
from binascii import hexlify
from time import ticks_add, ticks_diff, ticks_ms

TTS_LOG = "tts.log"


class SimTts:
    # A TTS module on a UART, an XFS5152CE or (syn6288 true) a SYN6288. It takes whole frames
    # (tts.Tts writes one frame per write), logs each to tts.log (one line: ticks, command, frame
    # in hex), answers with the module's reply bytes, and is busy for
    # max(min_ms, characters * ms_per_char) after a synthesis frame, or until a stop frame.
    # A frame in the other module's format (a SYN6288's without its checksum, or with one that
    # does not match) is refused, as the module would.
    def __init__(self, ms_per_char: int, min_ms: int, syn6288: bool = False) -> None:
        self.ms_per_char = ms_per_char
        self.min_ms = min_ms
        self.syn6288 = syn6288
        self._out = bytearray()  # reply bytes not yet read
        self._until = ticks_ms()
        self.speaking = False

    def _command(self, frame: bytes) -> int:
        # The frame's command byte, -1 if the frame is malformed for this module.
        n = len(frame)
        if n < 4 or frame[0] != 0xFD or frame[1] << 8 | frame[2] != n - 3:
            return -1
        if self.syn6288:
            x = 0
            for b in frame:
                x ^= b
            if n < 5 or x:  # the XOR of every byte, checksum included, is 0
                return -1
        return frame[3]

    def write(self, buf) -> int:
        frame = bytes(buf)
        n = len(frame)
        cmd = self._command(frame)
        with open(TTS_LOG, "a") as f:
            f.write("%s %d %s\n" % (ticks_ms(), cmd, hexlify(frame).decode()))
        if self.speaking and ticks_diff(self._until, ticks_ms()) <= 0:
            self.speaking = False
        reply = 0x41  # accepted
        chars = (n - 6 if self.syn6288 else n - 5) // 2
        if cmd == 0x01 and chars > 0 and frame[4] & 7 == 0x03:  # synthesise Unicode text
            ms = max(self.min_ms, chars * self.ms_per_char)
            self._until = ticks_add(ticks_ms(), ms)
            self.speaking = True
        elif cmd == 0x21:  # status query
            reply = 0x4E if self.speaking else 0x4F  # busy, idle
        elif cmd == 0x02:  # stop
            self.speaking = False
        else:
            reply = 0x45  # refused
        self._out.append(reply)
        return n

    def any(self) -> int:
        return len(self._out)

    def read(self, n: int = -1) -> bytes | None:
        if not self._out:
            return None
        if n < 0:
            n = len(self._out)
        data = bytes(self._out[:n])
        self._out = self._out[n:]
        return data
