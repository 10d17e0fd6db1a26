"""What provisioning reads from a board: versions, the info reply, and the checks on it."""

from __future__ import annotations

import hashlib
import zlib

import pytest

from provisioning.board import (
    Board,
    BoardInfo,
    FrozenFirmware,
    check_board,
    parse_frozen,
    parse_info,
    parse_version,
)
from provisioning.errors import BoardTooOldError, NotMicroPythonError, RawReplError
from provisioning.files import local_digest, matches
from provisioning.rawrepl import RawRepl
from tests.provision_support import FakeBoard, FakeSerial, frozen_reply, info_reply


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([1, 22, 2], (1, 22, 2)),
        ([1, 29, 0, "preview"], (1, 29, 0)),
        ((1, 20), (1, 20, 0)),
        ("v1.19.1", (1, 19, 1)),
        ("1.22.0-preview.123", (1, 22, 0)),
        ("MicroPython v1.20.0 on 2023-04-26; ESP32 module with ESP32", (1, 20, 0)),
    ],
)
def test_versions_parse_from_tuples_and_banners(value: object, expected: tuple[int, int, int]) -> None:
    assert parse_version(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["MicroPython", [], ["1", "20"], "v.x"])
def test_a_version_without_numbers_is_refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_version(value)  # type: ignore[arg-type]


def info(**kw: object) -> BoardInfo:
    return parse_info(info_reply(**kw), "/dev/ttyUSB0")  # type: ignore[arg-type]


def test_info_reply_describes_the_board() -> None:
    b = info(version=(1, 22, 2), uid="A0B1C2D3E4F5", loaded=True)
    assert b.version == (1, 22, 2) and b.version_text == "1.22.2"
    assert b.uid == "a0b1c2d3e4f5" and b.firmware_loaded and not b.virtual
    assert info(platform="linux").virtual


def test_a_current_micropython_passes() -> None:
    check_board(info(version=(1, 20, 0)), "/dev/ttyUSB0")


def test_a_board_older_than_1_20_is_refused_with_what_to_do() -> None:
    msg = r"runs MicroPython 1\.19\.1; the firmware needs 1\.20\.0.*Flash"
    with pytest.raises(BoardTooOldError, match=msg):
        check_board(info(version=(1, 19, 1)), "/dev/ttyUSB0")


def test_circuitpython_is_not_micropython() -> None:
    with pytest.raises(NotMicroPythonError, match="runs circuitpython, not MicroPython"):
        check_board(info(name="circuitpython", version=(8, 2, 0)), "/dev/ttyUSB0")


def test_a_board_without_unique_id_is_refused() -> None:
    with pytest.raises(NotMicroPythonError, match="unique_id"):
        check_board(info(uid=""), "/dev/ttyUSB0")


def test_garbage_in_place_of_the_info_reply_is_not_micropython() -> None:
    with pytest.raises(NotMicroPythonError, match="did not describe itself"):
        parse_info("Traceback: no json here", "/dev/ttyUSB0")


def test_board_info_goes_through_the_raw_repl() -> None:
    repl = RawRepl(FakeSerial(FakeBoard()), "/dev/ttyFAKE")
    repl.enter_raw(timeout=2)
    got = Board(repl).info()
    assert got.implementation == "micropython" and got.platform == "esp32"


def test_local_digests_match_what_the_board_computes() -> None:
    data = b"firmware" * 100
    assert local_digest(data, "sha256") == hashlib.sha256(data).hexdigest()
    assert local_digest(data, "crc32") == f"{zlib.crc32(data):08x}"


class _Files:
    """A Board stand-in with one file, and a given way of hashing it."""

    def __init__(self, data: bytes | None, kind: str) -> None:
        self.data = data
        self.kind = kind

    def digest(self, path: str) -> tuple[str, int, str] | None:
        if self.data is None:
            return None
        return self.kind, len(self.data), local_digest(self.data, self.kind)

    def read_file(self, path: str) -> bytes | None:
        return self.data


@pytest.mark.parametrize("kind", ["sha256", "crc32", "size"])
def test_a_file_matches_only_with_the_same_bytes(kind: str) -> None:
    board = _Files(b"abc", kind)
    assert matches(board, "x", b"abc")  # type: ignore[arg-type]
    assert not matches(board, "x", b"abd")  # type: ignore[arg-type]
    assert not matches(board, "x", b"abcd")  # type: ignore[arg-type]
    assert not matches(_Files(None, kind), "x", b"abc")  # type: ignore[arg-type]


def test_frozen_firmware_is_read_with_its_version_and_modules() -> None:
    got = parse_frozen(frozen_reply("0123456789abcdef", ("okproto", "fwversion")), "/dev/ttyUSB0")
    assert got == FrozenFirmware("0123456789abcdef", ("okproto", "fwversion"))


def test_an_image_frozen_before_the_version_marker_has_no_version() -> None:
    got = parse_frozen(frozen_reply(None, ("okproto",)), "/dev/ttyUSB0")
    assert got == FrozenFirmware(None, ("okproto",))


@pytest.mark.parametrize("reply", [frozen_reply(), '[false, null, []]'])
def test_an_image_without_the_firmware_frozen_in_is_a_plain_board(reply: str) -> None:
    assert parse_frozen(reply, "/dev/ttyUSB0") is None


def test_an_unreadable_frozen_reply_is_a_raw_repl_error() -> None:
    with pytest.raises(RawReplError, match="frozen modules"):
        parse_frozen("Traceback", "/dev/ttyUSB0")


def test_the_frozen_query_looks_only_in_the_image_and_puts_sys_path_back() -> None:
    board = FakeBoard(
        lambda code: (frozen_reply("v1", ("okproto",)), "") if "'.frozen'" in code else ("", "")
    )
    repl = RawRepl(FakeSerial(board), "/dev/ttyFAKE")
    repl.enter_raw(timeout=2)
    got = Board(repl).frozen_firmware()
    assert got == FrozenFirmware("v1", ("okproto",))
    query = board.executed[-1]
    assert "sys.path.append('.frozen')" in query and "sys.path.append(_ok_n)" in query
