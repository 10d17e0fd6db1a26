"""A full disk at the gateway, on a small filesystem made for the test (a tmpfs with a size
limit holding the gateway's state directory), with a firmware button and the whole system:
nothing is acknowledged that was not stored, the centre is told, and the alarm arrives once
space is freed."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.stack import LocalStack
from tests.support import wait_until

pytestmark = pytest.mark.integration

T = TypeVar("T")
GW_FS_SIZE = "8m"  # a fresh gateway state directory takes about 1 MB


@contextlib.contextmanager
def small_filesystem(mountpoint: Path) -> Iterator[Path]:
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={GW_FS_SIZE},mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True, text=True, timeout=10,
    )
    if done.returncode != 0:
        pytest.skip(
            "cannot mount a tmpfs for the gateway's state directory (mount needs root or "
            f"CAP_SYS_ADMIN here): {done.stderr.strip() or done.returncode}"
        )
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True, timeout=10).returncode:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=10)


def fill(path: Path) -> int:
    """Write `path` until the filesystem refuses (ENOSPC); returns its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    written = 0
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    n = os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                written += n
                if n < chunk:
                    break
    finally:
        os.close(fd)
    return written


def wait(what: str, pred: Callable[[], T | None], timeout: float = 20.0) -> T:
    value: T = wait_until(pred, timeout, what)
    return value


def newest_alarm(st: dict[str, Any]) -> dict[str, Any] | None:
    items = [r for r in st.get("recent", []) if r["kind"] == "alarm"]
    return max(items, key=lambda r: r["c"]) if items else None


def gateway_store(stack: LocalStack) -> dict[str, Any] | None:
    (gw,) = stack.api("GET", "/api/gateways")
    store: dict[str, Any] | None = gw["store"]
    return store


def test_a_full_disk_stores_and_acknowledges_nothing_tells_the_centre_and_resumes(
    tmp_path: Path,
) -> None:
    with small_filesystem(tmp_path / "gwfs") as fs, LocalStack(
        tmp_path / "stack", gateway_dir=fs / "gateway", resend_after_s=2.0
    ) as stack:
        stack.setup()
        stack.start()
        # A long ack timeout: the button keeps showing `sending` while it sends again.
        button = stack.add_button("btn-full", "h-full", ack_timeout_s=300)
        button.start()
        button.wait_for(lambda st: bool(st["connected"]))
        wait("the gateway's first heartbeat", lambda: gateway_store(stack))

        filler = fs / "filler"
        fill(filler)
        button.press(150)
        st = button.wait_for(lambda st: newest_alarm(st) is not None)
        counter = newest_alarm(st)["c"]  # type: ignore[index]
        log = stack.root / "gateway.log"
        line = f"event=store_failed kind=alarm device=btn-full counter={counter} full=1"
        wait("the gateway logs store_failed", lambda: line in log.read_text())
        store = wait(
            "the centre sees the gateway's full disk",
            lambda: (s := gateway_store(stack)) is not None and s["full"] and s,
        )
        assert store["ok"] is False and store["failed"] >= 1 and store["free_bytes"] < 65536
        # Through at least one more copy from the button, and the broker's redeliveries:
        # nothing stored, nothing answered, nothing at the centre.
        wait("the button's next copy fails too",
             lambda: log.read_text().count(line) >= 3, timeout=20)
        assert newest_alarm(button.status())["state"] == "sending"  # type: ignore[index]
        assert "event=store_gave_up" not in log.read_text()
        assert [a for a in stack.api("GET", "/api/alarms") if a["device"] == "btn-full"] == []

        filler.unlink()
        button.wait_for(
            lambda st: (a := newest_alarm(st)) is not None and a["state"] == "received",
            timeout=30,
        )
        alarms = [a for a in stack.api("GET", "/api/alarms") if a["device"] == "btn-full"]
        assert [a["id"] for a in alarms] == [f"gw-demo:btn-full:{counter}"]
        wait("the centre sees the store writable again",
             lambda: (s := gateway_store(stack)) is not None and s["ok"])
        text = log.read_text()
        # Told once each way, however many attempts failed in between.
        assert text.count("event=store_unwritable full=1") == 1
        assert text.count("event=store_writable") == 1
        assert text.count(f"event=stored kind=alarm device=btn-full counter={counter} ") == 1
