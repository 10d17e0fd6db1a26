"""Provisioning's own parts without a board: the gateway admin client's error messages, the
progress bar, the port list, the firmware build."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from provisioning import ports
from provisioning.errors import (
    DeviceIdTakenError,
    FirmwareError,
    GatewayAdminError,
    GatewayUnreachableError,
    PortError,
)
from provisioning.firmware import (
    firmware_dir,
    firmware_files,
    firmware_version,
    freeze_tree,
    main_file,
    module_names,
)
from provisioning.gwadmin import GatewayAdmin, load_token
from provisioning.progress import Progress


def http_error(code: int, body: dict[str, Any]) -> urllib.error.HTTPError:
    return urllib.error.HTTPError(
        "http://gw/admin", code, "error", {}, io.BytesIO(json.dumps(body).encode())  # type: ignore[arg-type]
    )


def fail_with(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    def urlopen(*_a: object, **_k: object) -> object:
        raise exc

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def test_an_unreachable_gateway_says_what_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    fail_with(monkeypatch, urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")))
    with pytest.raises(GatewayUnreachableError, match=r"does not answer.*Is the gateway running.*again"):
        GatewayAdmin("http://127.0.0.1:9", "tok").health()


def test_a_wrong_token_names_the_token_file(monkeypatch: pytest.MonkeyPatch) -> None:
    fail_with(monkeypatch, http_error(401, {"detail": "wrong or missing admin token"}))
    with pytest.raises(GatewayAdminError, match="--admin-token-file"):
        GatewayAdmin("http://gw", "tok").health()


def test_a_taken_id_carries_the_gateways_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    fail_with(monkeypatch, http_error(409, {"detail": "belongs to another board", "code": "other_board"}))
    with pytest.raises(DeviceIdTakenError, match="another board") as info:
        GatewayAdmin("http://gw", "tok").register(
            "btn-1", role="button", household="h", village=None, groups=(), hw_id="aa", force=False
        )
    assert info.value.code == "other_board"


def test_an_unknown_device_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    fail_with(monkeypatch, http_error(404, {"detail": "not registered"}))
    assert GatewayAdmin("http://gw", "tok").device("btn-9") is None


def test_a_missing_token_file_says_where_it_lives(tmp_path: Path) -> None:
    with pytest.raises(GatewayAdminError, match=r"admin\.token in the gateway's state directory"):
        load_token(tmp_path / "nope")


def test_progress_lines_without_a_terminal() -> None:
    out = io.StringIO()
    p = Progress(["build", "upload"], out, tty=False)
    with p.step("build"):
        p.detail("14 files")
    with pytest.raises(RuntimeError), p.step("upload"):
        p.advance(1024, 4096)
        raise RuntimeError("cable")
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/2] build ..."
    assert lines[1].startswith("[1/2] build: ok (14 files)")
    assert lines[3].startswith("[2/2] upload: FAILED after")
    assert set(p.timings) == {"build", "upload"}


def test_progress_bar_on_a_terminal_redraws_one_line() -> None:
    out = io.StringIO()
    p = Progress(["upload"], out, tty=True)
    with p.step("upload"):
        p.advance(2048, 4096)
    text = out.getvalue()
    assert "\r[1/1] ############------------ upload  2.0/4.0 KB" in text
    assert text.endswith("s\n") and "upload: ok (2.0/4.0 KB)" in text


def test_only_known_adapters_are_listed_as_boards(monkeypatch: pytest.MonkeyPatch) -> None:
    found = [
        SimpleNamespace(device="/dev/ttyUSB0", vid=0x10C4, pid=0xEA60, serial_number="0001", description=""),
        SimpleNamespace(device="/dev/ttyACM0", vid=0x303A, pid=0x1001, serial_number=None, description=""),
        SimpleNamespace(device="/dev/ttyS0", vid=None, pid=None, serial_number=None, description="n/a"),
        SimpleNamespace(device="/dev/ttyUSB1", vid=0x067B, pid=0x2303, serial_number=None, description=""),
    ]
    monkeypatch.setattr(ports.list_ports, "comports", lambda: found)
    monkeypatch.setattr(ports, "running_boards", lambda: [])
    boards = ports.list_boards()
    assert [(b.device, b.kind) for b in boards] == [
        ("/dev/ttyACM0", "ESP32-S3/C3 native USB"),
        ("/dev/ttyUSB0", "CP210x (Silicon Labs)"),
    ]
    assert len(ports.list_boards(all_ports=True)) == 4


def test_a_missing_port_says_how_to_find_boards() -> None:
    with pytest.raises(PortError, match="onekey provision list"):
        ports.open_port("/dev/ttyNOPE99")


def test_firmware_is_compiled_main_stays_source_and_comes_last() -> None:
    files, compiled = firmware_files()
    names = [f.name for f in files]
    assert names[-1] == "main.py" and files[-1].data.startswith(b"#")
    if compiled:
        assert "okproto.mpy" in names and all(n.endswith(".mpy") for n in names[:-1])
        assert files[names.index("okproto.mpy")].data[:1] == b"M"  # the .mpy magic
        assert files[names.index("okproto.mpy")].shadow == "okproto.py"
    assert "__init__.py" not in names and "__init__.mpy" not in names


def test_sources_are_sent_when_not_compiling() -> None:
    files, compiled = firmware_files(compile=False)
    assert not compiled and "okproto.py" in [f.name for f in files]


def test_a_directory_without_firmware_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FirmwareError, match="no firmware"):
        firmware_files(tmp_path)


def test_the_version_marker_is_not_uploaded_as_a_file() -> None:
    names = [f.name for f in firmware_files(compile=False)[0]]
    assert "fwversion.py" not in names and "fwversion.mpy" not in names


def test_the_frozen_tree_holds_the_modules_and_a_version_marker_stamped_with_the_firmware_version(
    tmp_path: Path,
) -> None:
    names = freeze_tree(tmp_path / "esp32")
    files = sorted(p.name for p in (tmp_path / "esp32").iterdir())
    assert "main.py" not in files and "hal_sim.py" not in files and "okproto.py" in files
    assert files == sorted(n + ".py" for n in names)
    marker: dict[str, Any] = {}
    exec((tmp_path / "esp32" / "fwversion.py").read_text(), marker)
    assert marker["VERSION"] == firmware_version() and len(marker["VERSION"]) == 16
    assert marker["MODULES"] == tuple(names)
    assert "hal_sim" in freeze_tree(tmp_path / "unix", sim=True)


def test_the_firmware_version_changes_with_any_module(tmp_path: Path) -> None:
    for p in firmware_dir().glob("*.py"):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    assert firmware_version(tmp_path) == firmware_version()
    (tmp_path / "link.py").write_text((tmp_path / "link.py").read_text() + "\n# edited\n")
    assert firmware_version(tmp_path) != firmware_version()


def test_a_frozen_board_gets_main_py_alone_and_every_module_name_is_a_shadow_candidate() -> None:
    assert main_file().name == "main.py"
    names = module_names()
    assert {"okproto", "link", "fwversion", "hal_esp32"} <= set(names) and "main" not in names
