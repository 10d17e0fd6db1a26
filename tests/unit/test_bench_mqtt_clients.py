"""bench/mqtt_clients.py without aiomqtt says how to install it and exits non-zero, before it
starts a broker (aiomqtt is installed for that bench only, not a project dependency)."""

from __future__ import annotations

import sys

import pytest

from bench import mqtt_clients
from transport.brokers import VillageBroker


def test_mqtt_clients_bench_without_aiomqtt_says_so_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "aiomqtt", None)  # `import aiomqtt` raises ImportError
    monkeypatch.setattr(sys, "argv", ["mqtt_clients.py"])
    started: list[object] = []
    monkeypatch.setattr(VillageBroker, "start", lambda *a, **k: started.append(a))
    assert mqtt_clients.main() == 2
    err = capsys.readouterr().err
    assert "aiomqtt is not installed" in err and "pip install aiomqtt" in err
    assert started == []
