"""The `onekey` command line imports a command's module only when that command runs
(onekey/cli.py), and still lists, helps and reports errors for every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from onekey import cli

ROOT = Path(__file__).resolve().parents[2]
COMMAND_MODULES = sorted({mod for mod, _help in cli.COMMANDS.values()})


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_onekey_help_lists_every_command_without_importing_any() -> None:
    out = _python(
        "import contextlib, io, sys\n"
        "from onekey import cli\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):\n"
        "    cli.main(['--help'])\n"
        f"print(sorted(m for m in {COMMAND_MODULES!r} if m in sys.modules))\n"
        "print(buf.getvalue())\n"
    )
    loaded, _, helptext = out.partition("\n")
    assert loaded == "[]"
    for name, (_mod, helpline) in cli.COMMANDS.items():
        assert f"    {name}" in helptext and helpline[:40] in helptext


def test_the_command_table_says_what_each_command_module_registers() -> None:
    # The top-level help built from the table is the one built from every module: same names,
    # same order, same one-line help.
    assert cli.build_parser([]).format_help() == cli.build_parser().format_help()


def test_gateway_run_imports_neither_the_centre_nor_fastapi_nor_the_other_commands() -> None:
    heavy = ["centre.cli", "centre.api", "fastapi", "pydantic", "harness.stack",
             "provisioning.cli", "onekey.demo", "onekey.install"]
    out = _python(
        "import sys\n"
        "import gateway.cli\n"
        # The run itself is replaced: what matters is what parsing the command line imported.
        f"gateway.cli._run = lambda args: print(sorted(m for m in {heavy!r} if m in sys.modules))"
        " or 0\n"
        "from onekey.cli import main\n"
        "sys.exit(main(['--log-level', 'WARNING', 'gateway', 'run', '--config', 'x.toml']))\n"
    )
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_help_still_works(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([name, "--help"])
    assert done.value.code == 0
    assert f"usage: onekey {name}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, command",
    [
        (["gateway", "run"], "gateway"),
        (["--log-level", "DEBUG", "centre", "init"], "centre"),
        (["--log-level=DEBUG", "enrol"], "enrol"),
        (["--log", "DEBUG", "pki", "issue"], "pki"),
        (["--help"], None),
        (["nosuch"], None),
        ([], None),
    ],
)
def test_the_command_is_found_after_the_global_options(argv: list[str], command: str | None) -> None:
    assert cli._chosen_command(argv) == command


def test_an_unknown_command_is_refused_with_the_list(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["nosuch"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nosuch'" in err and "'gateway'" in err and "'pki'" in err


def test_an_error_of_a_lazily_loaded_command_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["gateway", "stats", "--config", str(tmp_path / "missing.toml")]) == 2
    assert capsys.readouterr().err.startswith("onekey: error: ")
