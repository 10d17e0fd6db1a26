"""Provisioning end to end: virtual boards (the MicroPython unix port on a pseudo-terminal,
driven through the real raw REPL), the gateway's admin API, real Mosquitto, the centre.

Each bad input gives its clear message, and running the same provisioning again completes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.simdevice import send_command
from harness.stack import HOST, LocalStack
from harness.vboard import VBoardProcess
from provisioning.errors import (
    AlreadyProvisionedError,
    BoardLostError,
    BoardTooOldError,
    DeviceIdTakenError,
    FrozenFirmwareMismatchError,
    GatewayUnreachableError,
    NotMicroPythonError,
)
from provisioning.firmware import firmware_version
from provisioning.flow import STEPS, Options, Summary, provision, replace
from provisioning.gwadmin import GatewayAdmin, load_token
from provisioning.progress import Progress
from tests import fw_support as fw
from tests.provision_support import fake_board_on_pty, garbage_on_pty, info_reply
from tests.refusal import broker_refuses, gateway_refuses
from tests.support import wait_for
from transport.procs import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    s = LocalStack(tmp_path_factory.mktemp("provisioning") / "stack", resend_after_s=2.0)
    s.setup()
    try:
        s.start()
        s.wait_admin()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def admin(stack: LocalStack) -> GatewayAdmin:
    return GatewayAdmin(stack.admin_url, load_token(stack.admin_token_file))


@pytest.fixture
def boards(tmp_path: Path) -> Iterator[Callable[[str], VBoardProcess]]:
    """Starts virtual boards (each `onekey vboard` in its own process); stops them all."""
    started: list[VBoardProcess] = []

    def make(name: str) -> VBoardProcess:
        vb = VBoardProcess(tmp_path / name, name=f"{tmp_path.name[-12:]}-{name}")
        vb.start()
        started.append(vb)
        return vb

    try:
        yield make
    finally:
        for vb in started:
            vb.stop()


@pytest.fixture
def frozen_boards(tmp_path: Path) -> Iterator[Callable[..., VBoardProcess]]:
    """Virtual plain ESP32s flashed with an image that has the firmware frozen in (`onekey
    vboard --frozen`: the 32-bit port with the modules frozen, 56K heap unless told)."""
    fw.frozen32_or_fail(repl=True)  # built once (about 25 s), or skipped/failed with what to do
    started: list[VBoardProcess] = []

    def make(name: str, heapsize: str | None = None) -> VBoardProcess:
        vb = VBoardProcess(tmp_path / name, name=f"{tmp_path.name[-12:]}-{name}", frozen=True,
                           heapsize=heapsize)
        vb.start()
        started.append(vb)
        return vb

    try:
        yield make
    finally:
        for vb in started:
            vb.stop()


def opts(port: str, admin: GatewayAdmin, household: str, **kw: Any) -> Options:
    return Options(port=port, role=kw.pop("role", "button"), household=household, admin=admin,
                   self_test_timeout=30.0, **kw)


def centre_events(stack: LocalStack, device: str, kind: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = stack.api("GET", f"/api/alarms?kind={kind}&limit=1000")
    return [r for r in rows if r["device"] == device]


def flash_config(vb: VBoardProcess) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((vb.flash / "config.json").read_text())
    return data


# -- the path that works


def test_virtual_board_is_provisioned_and_its_press_reaches_the_centre(
    stack: LocalStack, admin: GatewayAdmin, boards: Callable[[str], VBoardProcess]
) -> None:
    vb = boards("a")
    s = provision(opts(vb.port, admin, "h-press"))
    assert s.passed and s.created and s.virtual and s.compiled, s.render()
    assert s.files_sent >= 10 and s.bytes_sent > 20_000
    # A plain board (no firmware frozen in its image) gets the modules.
    assert s.frozen is None and not s.frozen_used and (vb.flash / "okproto.mpy").is_file()
    assert len(s.tested) == 3 and set(s.timings) == set(STEPS)
    cfg = flash_config(vb)
    assert (cfg["id"], cfg["household"], cfg["hal"]) == (s.device_id, "h-press", "sim")
    assert not [p for p in vb.flash.iterdir() if p.name.endswith(".tmp")]
    # The self-test press is a test at the centre, never an alarm.
    tests = centre_events(stack, s.device_id, "test")
    assert [(t["state"], t["household"]) for t in tests] == [("test", "h-press")]
    assert centre_events(stack, s.device_id, "alarm") == []
    # A real press from the provisioned board.
    assert s.sim_port is not None
    send_command(s.sim_port, "press 150", timeout=10)
    alarms = asyncio.run(wait_for(lambda: centre_events(stack, s.device_id, "alarm"), 15))
    assert [(a["household"], a["village"], a["state"]) for a in alarms] == [("h-press", "v-demo", "open")]
    rec = admin.device(s.device_id)
    assert rec is not None and rec["last_seen"] and rec["hw_id"] == s.hw_id


def module_files(vb: VBoardProcess) -> list[str]:
    return sorted(p.name for p in vb.flash.iterdir() if p.suffix in (".py", ".mpy"))


def test_a_board_with_the_firmware_frozen_in_gets_only_main_py_and_config_and_works(
    stack: LocalStack, admin: GatewayAdmin, frozen_boards: Callable[..., VBoardProcess]
) -> None:
    vb = frozen_boards("frz")
    # Copies left from an earlier provisioning with files: on the board they come before the
    # frozen modules in sys.path; this one would stop the firmware if it were imported.
    (vb.flash / "okproto.py").write_text("raise RuntimeError('stale copy shadowing the frozen okproto')\n")
    (vb.flash / "link.mpy").write_bytes(b"stale")
    (vb.flash / "fwversion.py").write_text("VERSION = 'stale'\n")
    s = provision(opts(vb.port, admin, "h-frozen"))
    assert s.passed and s.frozen == firmware_version() and s.frozen_used, s.render()
    assert s.files_sent == 1 and s.bytes_sent == len((vb.flash / "main.py").read_bytes())
    assert sorted(s.removed) == ["fwversion.py", "link.mpy", "okproto.py"]
    assert module_files(vb) == ["main.py"] and (vb.flash / "config.json").is_file()
    assert "frozen in the board's image" in s.render()
    # The self-test passed on the frozen modules (heartbeat, test press, centre's record), and
    # a real press reaches the centre.
    assert len(s.tested) == 3
    assert s.sim_port is not None
    send_command(s.sim_port, "press 150", timeout=10)
    alarms = asyncio.run(wait_for(lambda: centre_events(stack, s.device_id, "alarm"), 15))
    assert [(a["household"], a["state"]) for a in alarms] == [("h-frozen", "open")]


def test_frozen_firmware_of_another_version_is_refused_and_upload_modules_overrides_it(
    admin: GatewayAdmin, frozen_boards: Callable[..., VBoardProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The repository's firmware moved on after the board's image was built: the board reports
    # the version frozen into its image, which is no longer the repository's.
    monkeypatch.setattr("provisioning.flow.firmware_version", lambda: "0000000000000000")
    vb = frozen_boards("frzold", heapsize="160K")  # a board with PSRAM: room for .mpy modules
    summary = Summary()
    with pytest.raises(FrozenFirmwareMismatchError, match=r"(?s)version \w{16}, and this .*Reflash"):
        provision(opts(vb.port, admin, "h-frzold"), summary=summary)
    assert "upload" not in summary.timings and module_files(vb) == []
    s = provision(opts(vb.port, admin, "h-frzold", upload_modules=True))
    assert s.passed and not s.frozen_used and s.files_sent >= 10, s.render()
    assert any("shadow the frozen ones" in n for n in s.notes)
    assert "okproto.mpy" in module_files(vb)


def test_running_it_again_completes_without_sending_the_firmware_again(
    admin: GatewayAdmin, boards: Callable[[str], VBoardProcess]
) -> None:
    vb = boards("b")
    first = provision(opts(vb.port, admin, "h-again"))
    again = provision(opts(vb.port, admin, "h-again"))
    assert first.passed and again.passed
    assert again.device_id == first.device_id and again.created is False
    assert again.files_sent == 0 and again.bytes_sent == 0


def test_a_speaker_is_provisioned_and_heard_at_the_gateway(
    admin: GatewayAdmin, boards: Callable[[str], VBoardProcess]
) -> None:
    vb = boards("spk")
    s = provision(opts(vb.port, admin, "h-spk", role="speaker", groups=("north",)))
    assert s.passed and s.device_id.startswith("spk-"), s.render()
    rec = admin.device(s.device_id)
    assert rec is not None and rec["role"] == "speaker" and rec["groups"] == ["north"]


def test_replace_moves_the_household_to_a_new_board_and_revokes_the_old(
    admin: GatewayAdmin, boards: Callable[[str], VBoardProcess]
) -> None:
    old = provision(opts(boards("old").port, admin, "h-moved", groups=("east",)))
    new_board = boards("new")
    s = replace(opts(new_board.port, admin, "", role=""), old.device_id)
    assert s.passed and s.device_id != old.device_id and s.household == "h-moved"
    old_rec, new_rec = admin.device(old.device_id), admin.device(s.device_id)
    assert old_rec is not None and not old_rec["enabled"]
    assert new_rec is not None and new_rec["enabled"] and new_rec["groups"] == ["east"]


# -- bad input, and the re-run that completes


class Unplug(Progress):
    """Pulls the cable (kills the virtual board) a third of the way through the upload."""

    def __init__(self, vb: VBoardProcess) -> None:
        super().__init__(STEPS, quiet=True)
        self.vb = vb

    def advance(self, done: int, total: int, unit: str = "KB") -> None:
        super().advance(done, total, unit)
        if self.vb.running and total and done > total // 3:
            self.vb.kill()


def test_port_vanishing_mid_upload_is_reported_and_a_rerun_completes(
    admin: GatewayAdmin, boards: Callable[[str], VBoardProcess]
) -> None:
    vb = boards("unplug")
    summary = Summary()
    started = time.monotonic()
    with pytest.raises(BoardLostError, match=r"went away.*plug it back in and run the same command"):
        provision(opts(vb.port, admin, "h-unplug"), Unplug(vb), summary)
    assert time.monotonic() - started < 30
    assert "upload" in summary.timings and "register" not in summary.timings
    assert not (vb.flash / "main.py").exists()  # a half-flashed board does not boot a mix
    vb.start()  # plugged in again: same board, same flash, maybe another port
    s = provision(opts(vb.port, admin, "h-unplug"))
    assert s.passed and 0 < s.files_sent < 15, s.render()


def test_a_device_that_is_not_micropython_is_refused(
    admin: GatewayAdmin, boards: Callable[[str], VBoardProcess]
) -> None:
    with garbage_on_pty() as port:
        started = time.monotonic()
        with pytest.raises(NotMicroPythonError, match="does not answer as a MicroPython board"):
            provision(opts(port, admin, "h-nmp"))
        assert time.monotonic() - started < 20
    assert provision(opts(boards("nmp").port, admin, "h-nmp")).passed


def test_a_board_with_old_micropython_is_refused(
    admin: GatewayAdmin, boards: Callable[[str], VBoardProcess]
) -> None:
    def old_board(code: str) -> tuple[str, str]:
        return (info_reply(version=(1, 19, 1)), "") if "sys.implementation" in code else ("", "")

    with fake_board_on_pty(old_board) as port, pytest.raises(
        BoardTooOldError, match=r"MicroPython 1\.19\.1; the firmware needs 1\.20\.0"
    ):
        provision(opts(port, admin, "h-old"))
    assert provision(opts(boards("old").port, admin, "h-old")).passed


def test_a_board_of_another_household_moves_only_with_force(
    admin: GatewayAdmin, boards: Callable[[str], VBoardProcess]
) -> None:
    vb = boards("moved")
    first = provision(opts(vb.port, admin, "h-first"))
    with pytest.raises(AlreadyProvisionedError, match=f"{first.device_id} for household h-first.*--force"):
        provision(opts(vb.port, admin, "h-second"))
    assert flash_config(vb)["household"] == "h-first"  # untouched
    s = provision(opts(vb.port, admin, "h-second", force=True))
    assert s.passed
    rec = admin.device(s.device_id)
    assert rec is not None and rec["household"] == "h-second"


def test_an_unreachable_gateway_is_reported_and_a_rerun_completes(
    stack: LocalStack, admin: GatewayAdmin, boards: Callable[[str], VBoardProcess]
) -> None:
    vb = boards("nogw")
    nowhere = GatewayAdmin(f"http://{HOST}:{free_port()}", admin.token, timeout=2)
    with pytest.raises(GatewayUnreachableError, match=r"does not answer.*Is the gateway running"):
        provision(opts(vb.port, nowhere, "h-nogw"))
    assert not (vb.flash / "config.json").exists()
    assert provision(opts(vb.port, admin, "h-nogw")).passed


def test_a_device_id_of_another_board_is_refused(
    admin: GatewayAdmin, boards: Callable[[str], VBoardProcess]
) -> None:
    first = provision(opts(boards("one").port, admin, "h-id1", device_id="btn-shared"))
    assert first.passed
    two = boards("two")
    with pytest.raises(DeviceIdTakenError, match="btn-shared belongs to another board"):
        provision(opts(two.port, admin, "h-id2", device_id="btn-shared"))
    assert provision(opts(two.port, admin, "h-id2", device_id="btn-own")).passed
    rec = admin.device("btn-shared")
    assert rec is not None and rec["household"] == "h-id1" and rec["hw_id"] == first.hw_id


# -- revocation


def test_a_revoked_device_is_refused_by_broker_and_gateway(
    stack: LocalStack, admin: GatewayAdmin, boards: Callable[[str], VBoardProcess]
) -> None:
    vb = boards("rv")
    s = provision(opts(vb.port, admin, "h-rv"))
    cfg = flash_config(vb)
    result = admin.revoke(s.device_id)
    assert result["broker_user_removed"]
    why = asyncio.run(broker_refuses(stack, cfg["mqtt"]["user"], cfg["mqtt"]["password"]))
    assert "not authorised" in why or "password" in why
    asyncio.run(gateway_refuses(stack, s.device_id, bytes.fromhex(cfg["key"])))
    # The board itself, pressed, gets nowhere.
    assert s.sim_port is not None
    send_command(s.sim_port, "press 150", timeout=10)
    time.sleep(1.0)
    assert centre_events(stack, s.device_id, "alarm") == []


# -- the command line


def test_the_commands_provision_list_and_revoke(
    stack: LocalStack, boards: Callable[[str], VBoardProcess]
) -> None:
    vb = boards("cli")
    env = dict(os.environ, ONEKEY_GATEWAY_ADMIN=stack.admin_url,
               ONEKEY_ADMIN_TOKEN_FILE=str(stack.admin_token_file))

    def onekey(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "onekey.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    listed = onekey("provision", "list")
    assert listed.returncode == 0 and vb.port in listed.stdout
    res = onekey("provision", "device", "--port", vb.port, "--role", "button",
                 "--household", "h-cli", "--village", "v-demo", "--device-id", "btn-cli")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("PASS  btn-cli  household h-cli") and "[9/9] self-test: ok" in res.stderr
    bad = onekey("provision", "device", "--port", vb.port, "--role", "button", "--household", "h-other",
                 "--device-id", "btn-cli")
    assert bad.returncode == 2 and bad.stdout.startswith("FAIL")
    assert "onekey: error: the board on" in bad.stderr and "--force" in bad.stderr
    rv = onekey("provision", "revoke", "btn-cli")
    assert rv.returncode == 0 and "revoked btn-cli" in rv.stdout


# -- hil_tests never pass by skipping


@pytest.mark.parametrize(
    ("args", "env", "why"),
    [
        ([], {"ONEKEY_MICROPYTHON": "/nonexistent/micropython"}, "no virtual board could be started"),
        (["--port", "/dev/ttyNOPE9"], {}, "no such serial port"),
    ],
)
def test_hil_tests_fail_loudly_without_a_board(args: list[str], env: dict[str, str], why: str) -> None:
    repo = Path(__file__).resolve().parents[2]
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "hil_tests", *args],
        cwd=repo, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert res.returncode == 1, res.stdout
    assert why in res.stdout and "skipped" not in res.stdout


# -- the virtual board behaves like a board


def test_virtual_board_resets_and_interrupts_like_a_board(tmp_path: Path) -> None:
    from provisioning.ports import open_port
    from provisioning.rawrepl import RawRepl

    vb = VBoardProcess(tmp_path / "vb", name=f"{tmp_path.name[-12:]}-reset")
    port = vb.start()
    try:
        (vb.flash / "main.py").write_text(
            "import time\nprint('main: up')\nwhile True:\n    time.sleep_ms(20)\n"
        )
        repl = RawRepl(open_port(port), port)
        try:
            repl.enter_raw()
            uid = repl.exec("import machine\nprint(machine.unique_id().hex())").decode().strip()
            assert uid == json.loads((vb.dir / "board.json").read_text())["uid"]
            repl.exec("x = 41")
            repl.soft_reset()  # a fresh interpreter, still in the raw REPL, main.py not run
            assert repl.exec("print('x' in globals())") == b"False\n"
            # machine.reset(): the board boots and runs main.py; Ctrl-C stops it, as on a board.
            repl.send("import machine\nmachine.reset()\n")
            repl.in_raw = False
            repl.read_until(b"main: up", 10)
            repl.enter_raw()
            assert repl.exec("print(1 + 1)") == b"2\n"
            # Ctrl-D in the friendly REPL is a soft reset that runs main.py.
            repl.exit_raw()
            repl.serial.write(b"\x04")
            repl.read_until(b"MPY: soft reboot\r\n", 10)
            repl.read_until(b"main: up", 10)
        finally:
            repl.close()
    finally:
        vb.stop()
