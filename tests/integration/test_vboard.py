"""The virtual board keeps its identity as a board does: `onekey vboard` restarted on the same
directory is the same board (same unique id, what provisioning registers the device under);
a new directory is a new board. `onekey vboard --frozen` is a board whose image has the
firmware frozen in, and says so when provisioning asks; a plain one has none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.vboard import VBoardProcess
from provisioning.board import Board, FrozenFirmware
from provisioning.firmware import firmware_version, module_names
from provisioning.ports import BAUD, open_port
from provisioning.rawrepl import RawRepl
from tests import fw_support as fw

pytestmark = pytest.mark.integration


def board_uid(vb: VBoardProcess) -> str:
    uid: str = json.loads((vb.dir / "board.json").read_text())["uid"]
    # What the board itself answers to machine.unique_id() comes from the same id.
    assert f'bytes.fromhex("{uid}")' in (vb.dir / "rom" / "machine.py").read_text()
    return uid


def test_a_restarted_virtual_board_keeps_its_unique_id(tmp_path: Path) -> None:
    vb = VBoardProcess(tmp_path / "vb", name=f"{tmp_path.name[-12:]}-keep")
    vb.start()
    try:
        first = board_uid(vb)
    finally:
        vb.stop()
    vb.start()  # plugged in again
    try:
        assert board_uid(vb) == first
    finally:
        vb.kill()  # unplugged without warning
    vb.start()
    try:
        assert board_uid(vb) == first
    finally:
        vb.stop()


def test_a_new_board_directory_is_a_new_board(tmp_path: Path) -> None:
    uids = []
    for name in ("a", "b"):
        vb = VBoardProcess(tmp_path / name, name=f"{tmp_path.name[-12:]}-{name}")
        vb.start()
        try:
            uids.append(board_uid(vb))
        finally:
            vb.stop()
    assert uids[0] != uids[1]


def frozen_firmware_of(vb: VBoardProcess) -> FrozenFirmware | None:
    repl = RawRepl(open_port(vb.port, BAUD), vb.port)
    try:
        repl.enter_raw(6.0)
        board = Board(repl)
        assert board.info().virtual
        return board.frozen_firmware()
    finally:
        repl.close()


def test_a_frozen_virtual_board_runs_an_image_with_the_firmware_frozen_in(tmp_path: Path) -> None:
    fw.frozen32_or_fail(repl=True)  # built once (about 25 s), or skipped/failed with what to do
    vb = VBoardProcess(tmp_path / "frz", name=f"{tmp_path.name[-12:]}-frz", frozen=True)
    vb.start()
    try:
        frozen = frozen_firmware_of(vb)
        # Nothing on its flash: the version marker and the modules are in the interpreter's image.
        assert not list(vb.flash.iterdir())
        assert json.loads((vb.dir / "board.json").read_text())["frozen"] is True
    finally:
        vb.stop()
    assert frozen is not None and frozen.version == firmware_version()
    assert set(module_names()) <= set(frozen.modules)
    assert vb.heapsize == "56K"  # a plain ESP32's heap


def test_a_plain_virtual_board_has_no_firmware_frozen_in(tmp_path: Path) -> None:
    vb = VBoardProcess(tmp_path / "plain", name=f"{tmp_path.name[-12:]}-plain")
    vb.start()
    try:
        assert frozen_firmware_of(vb) is None
    finally:
        vb.stop()
