"""Provisioning a board whose MicroPython image has the firmware frozen in, against a scripted
board: what it decides from the board's answer, before anything is written to the board."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning.errors import FrozenFirmwareMismatchError, GatewayUnreachableError
from provisioning.firmware import firmware_version
from provisioning.flow import Options, Summary, provision
from provisioning.gwadmin import GatewayAdmin
from tests.provision_support import FakeBoard, PtyDevice, frozen_reply, info_reply

NOWHERE = GatewayAdmin("http://127.0.0.1:9", "token")  # never reached before the refusal


def scripted(version: str | None, modules: tuple[str, ...]) -> FakeBoard:
    def handler(code: str) -> tuple[str, str]:
        if "sys.implementation" in code:
            return info_reply(), ""
        if "'.frozen'" in code:
            return frozen_reply(version, modules), ""
        return "", ""

    return FakeBoard(handler)


@pytest.fixture
def board_port(request: pytest.FixtureRequest) -> Iterator[tuple[FakeBoard, str]]:
    board = scripted(*request.param)
    with PtyDevice(board.feed) as dev:
        yield board, dev.port


def run(port: str, **kw: object) -> Summary:
    s = Summary()
    opts = Options(port=port, role="button", household="h1", admin=NOWHERE, wifi_ssid="w", **kw)  # type: ignore[arg-type]
    try:
        provision(opts, summary=s)
    except GatewayUnreachableError:
        pass  # past the board's checks: the gateway comes next
    return s


@pytest.mark.parametrize("board_port", [("0123456789abcdef", ("okproto", "fwversion"))], indirect=True)
def test_frozen_firmware_of_another_version_is_refused_before_anything_is_written(
    board_port: tuple[FakeBoard, str],
) -> None:
    board, port = board_port
    with pytest.raises(FrozenFirmwareMismatchError) as err:
        run(port)
    msg = str(err.value)
    assert "version 0123456789abcdef" in msg and f"version {firmware_version()}" in msg
    assert "Reflash" in msg and "docs/firmware.md" in msg and "--upload-modules" in msg
    assert not [c for c in board.executed if c.startswith(("_ok_open(", "_ok_rm(", "_ok_mv("))]
    assert len(board.executed) == 3  # the helpers, the info query, the frozen query


@pytest.mark.parametrize("board_port", [(None, ("okproto",))], indirect=True)
def test_an_image_frozen_without_a_version_marker_is_refused_as_another_version(
    board_port: tuple[FakeBoard, str],
) -> None:
    with pytest.raises(FrozenFirmwareMismatchError, match="no version marker"):
        run(board_port[1])


@pytest.mark.parametrize("board_port", [("0123456789abcdef", ("okproto", "fwversion"))], indirect=True)
def test_upload_modules_goes_on_and_says_the_modules_shadow_the_frozen_ones(
    board_port: tuple[FakeBoard, str],
) -> None:
    s = run(board_port[1], upload_modules=True)
    assert s.frozen == "0123456789abcdef" and not s.frozen_used
    assert any("shadow the frozen ones" in n and "PSRAM" in n for n in s.notes)


@pytest.fixture
def same_version_port() -> Iterator[str]:
    with PtyDevice(scripted(firmware_version(), ("okproto", "fwversion")).feed) as dev:
        yield dev.port


def test_frozen_firmware_of_the_repositorys_version_is_used(same_version_port: str) -> None:
    s = run(same_version_port)
    assert s.frozen == firmware_version() and s.frozen_used


@pytest.mark.parametrize("board_port", [(None, ())], indirect=True)
def test_a_board_without_frozen_firmware_gets_the_modules_as_before(
    board_port: tuple[FakeBoard, str],
) -> None:
    s = run(board_port[1])
    assert s.frozen is None and not s.frozen_used and not s.notes


def test_freeze_tree_command_writes_the_modules_and_the_stamped_marker_for_a_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from onekey.cli import main

    assert main(["provision", "freeze-tree", str(tmp_path / "frozen")]) == 0
    files = {p.name for p in (tmp_path / "frozen").iterdir()}
    assert {"okproto.py", "link.py", "fwversion.py"} <= files and "main.py" not in files
    assert f"VERSION = '{firmware_version()}'" in (tmp_path / "frozen" / "fwversion.py").read_text()
    assert f"firmware version {firmware_version()}" in capsys.readouterr().out
