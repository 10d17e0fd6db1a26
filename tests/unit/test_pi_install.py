"""The gateway installs on a Pi (arm64) with `pip install` and no extras (docs/operations.md,
"On the Pi's CPU (arm64)"). scripts/arm64-check.sh proves it under emulation; it downloads a
Debian root, so no test runs it. What these tests keep true between its runs: the code that the
installed `onekey` command loads, and the smoke that the check runs, import only what the base
dependencies bring (not the sim or test extras, which a Pi does not install).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = {"protocol", "transport", "harness", "gateway", "centre", "provisioning", "device_fw",
        "onekey", "modem", "deploy"}
# What `onekey` loads on the Pi: every product package (the command line imports the gateway,
# centre and provisioning commands at start), the firmware's shared codec, and what the smoke
# of scripts/arm64-check.sh runs. The rest of harness/ and device_fw/ needs the sim extra or
# runs on MicroPython.
PI_PACKAGES = ["gateway", "centre", "provisioning", "protocol", "transport", "modem", "onekey",
               "deploy"]
PI_FILES = ["device_fw/okproto.py", "harness/stack.py", "harness/protodevice.py",
            "scripts/arm64_smoke.py"]
# MicroPython's own module: device_fw/okproto.py imports it only when it runs on MicroPython.
NOT_ON_CPYTHON = {"micropython"}


def _third_party_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in OURS and top not in NOT_ON_CPYTHON:
                found.add(top)
    return found


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _base_closure() -> set[str]:
    """The distributions `pip install onekey` brings: the base dependencies in pyproject.toml
    and, through the installed metadata, theirs (requirements under an extra left out, and
    those not installed here, which are for other Pythons)."""
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    todo = [_name(r) for r in base]
    seen: set[str] = set()
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        try:
            requires = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            continue  # a requirement for other Pythons (e.g. exceptiongroup before 3.11)
        for req in requires:
            marker = req.partition(";")[2]
            if "extra" not in marker:
                todo.append(_name(req))
    return seen


def test_what_the_pi_loads_imports_only_base_dependencies() -> None:
    closure = _base_closure()
    providers = metadata.packages_distributions()
    files = [p for pkg in PI_PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    files += [ROOT / f for f in PI_FILES]
    wrong = []
    for path in files:
        for module in sorted(_third_party_imports(path)):
            dists = {_name(d) for d in providers.get(module, [])}
            if not dists & closure:
                source = sorted(dists) or "nothing installed"
                wrong.append(
                    f"{path.relative_to(ROOT)} imports {module} (from {source}),"
                    " which the base dependencies do not bring: a Pi installs onekey without extras;"
                    " add it to [project] dependencies in pyproject.toml or do not import it here"
                )
    assert not wrong, "\n".join(wrong)


def test_base_dependencies_are_for_every_platform() -> None:
    # A marker such as platform_machine == 'x86_64' belongs to the sim and test extras: a base
    # dependency with one would be missing on the Pi.
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [r for r in base if "platform_machine" in r or "sys_platform" in r] == []


def test_the_arm64_check_script_is_valid_bash() -> None:
    script = ROOT / "scripts" / "arm64-check.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    head = script.read_text().split("set -euo pipefail")[0]
    assert "NOT run by CI" in head
