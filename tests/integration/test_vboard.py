"""The virtual board keeps its identity as a board does: `onekey vboard` restarted on the same
directory is the same board (same unique id, what provisioning registers the device under);
a new directory is a new board."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.vboard import VBoardProcess

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
