"""`onekey demo` starts the whole village, says what to type, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from transport.procs import free_port


def processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def test_the_demo_runs_prints_what_to_type_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    http_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "onekey.cli", "demo", "--run-dir", str(run_dir),
         "--buttons", "2", "--speakers", "2", "--http-port", str(http_port), "--duration", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    out: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            if "Press Ctrl-C to stop everything" in line:
                break
        text = "".join(out)
        assert "Press Ctrl-C to stop everything" in text, text
        assert "demo: ready" in text, text
        assert "onekey sim press btn-0001" in text and "onekey sim played spk-0001" in text
        # The escalation chain's SMS go through a virtual modem the demo started.
        assert "onekey vmodem send-reply --dir" in text and "virtual SMS modem on" in text
        modem = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/api/modem",
            headers={"Authorization": "Bearer " + (run_dir / "centre" / "api.token").read_text()},
        )
        state = ""
        until = time.monotonic() + 15
        while state != "ok" and time.monotonic() < until:
            with urllib.request.urlopen(modem, timeout=10) as resp:
                state = json.loads(resp.read())["state"]
            time.sleep(0.1)
        assert state == "ok"
        assert processes_mentioning(str(run_dir)), "the demo's processes should be running"
        # The printed demo accounts log in (one of each role), and say they are for the demo.
        assert "Staff accounts, for this demo only" in text, text
        accounts = re.findall(r"^  (admin|broadcaster|operator) +(\w+) +password (\S+)$", text, re.M)
        assert {role for role, _, _ in accounts} == {"admin", "broadcaster", "operator"}, text
        for role, user, password in accounts:
            req = urllib.request.Request(
                f"http://127.0.0.1:{http_port}/api/session", method="POST",
                data=json.dumps({"username": user, "password": password}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert json.loads(resp.read())["user"]["role"] == role
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, "".join(out) + rest
    assert "stopping everything" in rest
    time.sleep(0.5)
    assert processes_mentioning(str(run_dir)) == []


def test_the_demo_fails_at_once_naming_a_taken_web_port_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "demo"
    with socket.socket() as occupier:
        occupier.bind(("127.0.0.1", 0))
        occupier.listen()
        port = occupier.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "onekey.cli", "demo", "--run-dir", str(run_dir),
             "--buttons", "1", "--speakers", "1", "--http-port", str(port), "--duration", "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    assert proc.returncode != 0, out
    assert f"127.0.0.1:{port} is already in use" in out and "--http-port" in out, out
    assert "demo: ready" not in out and "Press Ctrl-C" not in out, out
    assert processes_mentioning(str(run_dir)) == []
