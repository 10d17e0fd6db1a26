"""The raw REPL client against a scripted board: framing, raw-paste flow control, errors."""

from __future__ import annotations

import pytest

from provisioning.errors import BoardCommandError, BoardLostError, NotMicroPythonError, RawReplError
from provisioning.rawrepl import RawRepl
from tests.provision_support import FakeBoard, FakeSerial


def repl_for(board: FakeBoard, **kw: int) -> tuple[RawRepl, FakeSerial]:
    serial = FakeSerial(board, **kw)
    return RawRepl(serial, "/dev/ttyFAKE"), serial


def echo(code: str) -> tuple[str, str]:
    if code.startswith("raise"):
        return "", "Traceback (most recent call last):\n  File \"<stdin>\", line 1\nValueError: nope\n"
    return f"ran {len(code)} bytes\n", ""


@pytest.mark.parametrize("paste", [True, False])
def test_exec_returns_output_between_the_framing_bytes(paste: bool) -> None:
    board = FakeBoard(echo, paste=paste)
    repl, _ = repl_for(board)
    repl.enter_raw(timeout=2)
    assert repl.exec("print(1)") == b"ran 8 bytes\n"
    assert repl.use_paste is paste
    assert board.executed == ["print(1)"]


def test_raw_paste_respects_the_window_for_long_code() -> None:
    board = FakeBoard(echo, window=16)
    repl, _ = repl_for(board)
    repl.enter_raw(timeout=2)
    code = "x = 1\n" * 500  # 3000 bytes: many windows of 16
    assert repl.exec(code) == b"ran 3000 bytes\n"
    assert board.executed == [code]


def test_plain_mode_sends_long_code_whole() -> None:
    board = FakeBoard(echo, paste=False)
    repl, _ = repl_for(board)
    repl.enter_raw(timeout=2)
    code = "y = 2\n" * 200
    assert repl.exec(code) == b"ran 1200 bytes\n"


def test_an_exception_on_the_board_carries_its_traceback() -> None:
    repl, _ = repl_for(FakeBoard(echo))
    repl.enter_raw(timeout=2)
    with pytest.raises(BoardCommandError, match="ValueError: nope") as info:
        repl.exec("raise ValueError('nope')")
    assert "Traceback" in info.value.traceback
    assert repl.exec("print(2)") == b"ran 8 bytes\n"  # the conversation goes on


def test_soft_reset_waits_for_the_raw_prompt_again() -> None:
    board = FakeBoard(echo)
    repl, _ = repl_for(board)
    repl.enter_raw(timeout=2)
    repl.soft_reset(timeout=2)
    assert board.soft_resets == 1
    assert repl.exec("a") == b"ran 1 bytes\n"


def test_exit_raw_sends_ctrl_b() -> None:
    board = FakeBoard(echo)
    repl, serial = repl_for(board)
    repl.enter_raw(timeout=2)
    repl.close()
    assert not board.raw and serial.closed


def test_a_silent_device_is_not_micropython() -> None:
    class Silent(FakeBoard):
        def feed(self, data: bytes) -> bytes:
            return b""

    repl, _ = repl_for(Silent())
    with pytest.raises(NotMicroPythonError, match="does not answer as a MicroPython board"):
        repl.enter_raw(timeout=1.0, attempts=2)


def test_a_port_that_vanishes_is_board_lost() -> None:
    repl, _ = repl_for(FakeBoard(echo), lose_after=40)
    repl.enter_raw(timeout=2)
    with pytest.raises(BoardLostError, match=r"went away.*run the same command again"):
        for _ in range(20):
            repl.exec("print('some text')")


def test_exec_before_entering_raw_is_refused() -> None:
    repl, _ = repl_for(FakeBoard(echo))
    with pytest.raises(RawReplError, match="enter_raw"):
        repl.exec("1")


def test_a_command_that_never_ends_times_out_and_is_interrupted() -> None:
    class Hangs(FakeBoard):
        def _run(self) -> bytes:
            self.code.clear()
            return b""  # runs for ever: no output, no end marker

    board = Hangs()
    repl, serial = repl_for(board)
    repl.enter_raw(timeout=2)
    with pytest.raises(RawReplError, match=r"did not finish a command within 0\.3 s"):
        repl.exec("while True: pass", timeout=0.3)
    assert serial.written  # the interrupt (Ctrl-C) went out
