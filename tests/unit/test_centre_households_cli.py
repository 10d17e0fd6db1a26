"""`onekey centre households import|export`: exit codes and what a technician reads, and the
demo's fictional households."""

from __future__ import annotations

import asyncio
import inspect
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from centre.config import load_config
from centre.enrol import init_centre
from centre.household_csv import HEADER, parse
from centre.households import load_cards
from centre.store import Store
from harness.stack import LocalStack
from onekey.cli import main
from onekey.demo import load_households

GOOD = ",".join(HEADER) + "\n" + ",".join(
    {"id": "h-001", "village": "v-1", "name": "王秀英", "phone": "13900000001",
     "family1_name": "王大", "family1_relation": "儿子", "family1_phone": "13900000011"}.get(c, "")
    for c in HEADER
) + "\n"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path, _ = init_centre(tmp_path / "centre")
    return path


def names(config: Path) -> list[tuple[str, str]]:
    async def read() -> list[tuple[str, str]]:
        async with Store(load_config(config).db_path) as s, s.transaction(write=False) as db:
            return [(c.id, c.name) for c in await load_cards(db)]

    return asyncio.run(read())


def test_import_then_export_round_trips_with_exit_0(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text(GOOD, encoding="utf-8-sig")
    assert main(["centre", "households", "import", "--config", str(config), str(src)]) == 0
    assert f"imported 1 households from {src}: 1 new, 0 replaced" in capsys.readouterr().out
    assert main(["centre", "households", "export", "--config", str(config), str(out)]) == 0
    assert f"exported 1 households to {out}" in capsys.readouterr().out
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # personal data
    assert parse(out.read_bytes()) == parse(src.read_bytes())
    assert main(["centre", "households", "import", "--config", str(config), str(out)]) == 0
    assert "0 new, 1 replaced" in capsys.readouterr().out


def test_a_bad_file_lists_every_problem_imports_nothing_and_exits_1(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "bad.csv"
    bad = GOOD.splitlines()[1].replace("13900000011", "138")
    src.write_text(GOOD + "\n" + bad.replace("h-001", "h-002") + "\n" + bad.replace("h-001", "h-001"),
                   encoding="utf-8")
    assert main(["centre", "households", "import", "--config", str(config), str(src)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{src}: line 4, column family1_phone: '138' is not a mainland")
    assert err[1] == f"{src}: line 5, column id: h-001 is also on line 2"
    assert err[2] == f"onekey: error: {src}: nothing imported: 2 problem(s) on 2 line(s)"
    assert names(config) == []


def test_a_gbk_file_says_to_save_it_as_utf8(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "gbk.csv"
    src.write_bytes(GOOD.encode("gbk"))
    assert main(["centre", "households", "import", "--config", str(config), str(src)]) == 1
    assert "CSV UTF-8" in capsys.readouterr().err


def test_a_missing_file_exits_2_naming_it(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.csv"
    assert main(["centre", "households", "import", "--config", str(config), str(missing)]) == 2
    assert f"onekey: error: cannot read {missing}: No such file or directory" in capsys.readouterr().err


def test_the_demo_loads_its_fictional_households_for_its_buttons(tmp_path: Path) -> None:
    path, _ = init_centre(tmp_path / "centre")
    load_households(SimpleNamespace(centre_config=path))  # type: ignore[arg-type]

    async def read() -> list[tuple[str, str, int]]:
        async with Store(load_config(path).db_path) as s, s.transaction(write=False) as db:
            return [(c.id, c.village, len(c.contacts)) for c in await load_cards(db)]

    cards = asyncio.run(read())
    # The demo's buttons serve h-001, h-002, ... in the LocalStack's village.
    assert [c[0] for c in cards] == [f"h-{i:03d}" for i in range(1, 9)]
    assert {c[1] for c in cards} == {inspect.signature(LocalStack).parameters["village"].default}
    assert all(n >= 4 for _, _, n in cards)  # leader, grid, family, doctor at least
