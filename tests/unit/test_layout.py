"""The folders show the architecture (DESIGN.md): who may import whom.

- `protocol/` is the contract as pure code: it imports nothing of ours but the firmware's
  codec, and no I/O module.
- `transport/` is plumbing: it may use the contract (`protocol/`, the device codec), never a
  service or the harness.
- The product (`gateway`, `centre`, `provisioning`, `device_fw`) never imports the harness or
  the command line; `onekey/` is the command line only and may import anything, lazily.
- `modem/` (SMS over a GSM module) stands alone: the standard library and pyserial only, so
  that the centre and the gateway can both use it; it never imports them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"protocol", "transport", "harness", "gateway", "centre", "provisioning", "device_fw",
        "onekey", "tests", "bench", "modem"}
# What each package may import from our own packages.
ALLOWED = {
    "protocol": {"protocol", "device_fw"},
    "transport": {"transport", "protocol", "device_fw"},
    "gateway": {"gateway", "protocol", "transport", "device_fw", "modem"},
    "centre": {"centre", "protocol", "transport", "device_fw", "modem"},
    "provisioning": {"provisioning", "protocol", "transport", "device_fw", "gateway", "centre"},
    "device_fw": {"device_fw"},
    "modem": {"modem"},
}
IO_MODULES = {"socket", "asyncio", "sqlite3", "aiosqlite", "subprocess", "ssl", "paho", "serial",
              "urllib", "http", "pathlib", "os", "shutil", "threading"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    wrong = []
    for path in _files(package):
        for mod in _imports(path):
            top = mod.split(".")[0]
            if top in OURS and top not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not wrong, "\n".join(wrong)


def test_the_protocol_package_does_no_io() -> None:
    wrong = []
    for path in _files("protocol"):
        for mod in _imports(path):
            if mod.split(".")[0] in IO_MODULES:
                wrong.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not wrong, "\n".join(wrong)


def test_the_modem_package_needs_only_the_standard_library_and_pyserial() -> None:
    import sys

    wrong = []
    for path in _files("modem"):
        for mod in _imports(path):
            top = mod.split(".")[0]
            if top not in sys.stdlib_module_names and top not in {"serial", "modem"}:
                wrong.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not wrong, "\n".join(wrong)


def test_the_command_line_package_holds_commands_only() -> None:
    # Every module of onekey/ is a command: it registers subcommands or is the entry point.
    for path in _files("onekey"):
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        assert "def add_commands(" in text or "def main(" in text, (
            f"{path.relative_to(ROOT)} is not a command module: move it to the package whose job it is"
        )
