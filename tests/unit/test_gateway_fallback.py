"""The gateway's second path without processes: the `[modem]` configuration, the contact list
kept from the centre (gateway/contactlist.py, protocol §11) and the texts it sends."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import fallback
from gateway.config import load_config, render_config
from gateway.contactlist import ContactList
from gateway.errors import ConfigError
from gateway.metrics import Metrics
from gateway.store import Store
from protocol import contacts, topics

CENTRE = Ed25519PrivateKey.generate()


def write_config(tmp_path: Path, modem: str) -> Path:
    (tmp_path / "village-broker.pass").write_text("pw")
    text = render_config(
        gateway_id="gw-1", village="v-1", state_dir=tmp_path, centre_public_key="00" * 32,
        village_host="127.0.0.1", village_port=1883, centre_host="c", centre_port=8883,
    )
    path = tmp_path / "gateway.toml"
    path.write_text(text + modem)
    return path


def test_no_modem_section_means_no_second_path(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path, "")).modem is None


def test_modem_section_with_defaults(tmp_path: Path) -> None:
    section = '\n[modem]\nport = "/dev/ttyUSB2"\ncentre_number = "+8613800000000"\n'
    cfg = load_config(write_config(tmp_path, section))
    assert cfg.modem is not None
    assert (cfg.modem.link_down_s, cfg.modem.receipt_deadline_s, cfg.modem.local_alert) == (30.0, 20.0, True)


@pytest.mark.parametrize(("body", "says"), [
    ('port = "/dev/x"\n', "centre_number"),
    ('port = "/dev/x"\ncentre_number = "centre"\n', "centre_number"),
    ('port = "/dev/x"\ncentre_number = "+86138"\nlink_down_s = 0\n', "link_down_s"),
    ('port = "/dev/x"\ncentre_number = "+86138"\nlocal_alert = "yes"\n', "local_alert"),
    ('port = "/dev/x"\ncentre_number = "+86138"\nthreshold = 3\n', "unknown field"),
])
def test_bad_modem_section_says_what_to_fix(tmp_path: Path, body: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_config(write_config(tmp_path, "\n[modem]\n" + body))


def households(n: int, alert: bool = True) -> list[contacts.Household]:
    return [contacts.Household(f"h-{i:03d}", "v-1", "g3", f"张{i}", f"三组{i}号", alert,
                               (contacts.Contact("leader", "李", "13800138000"),))
            for i in range(n)]


async def test_contact_list_is_replaced_only_when_every_part_of_a_newer_version_is_in(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        cl = ContactList(store, "gw-1", CENTRE.public_key(), Metrics())
        await cl.init()
        topic = topics.contacts("gw-1")
        parts = contacts.signed_parts(CENTRE, "gw-1", 10, households(200))
        assert len(parts) >= 2
        for _, payload in parts[:-1]:
            got = await cl.on_centre_message(topic, payload)
            assert got.puback and got.confirm is None
        assert await cl.household("h-000") is None and cl.version == 0
        got = await cl.on_centre_message(topic, parts[-1][1])
        assert got.confirm == 10 and cl.version == 10
        h = await cl.household("h-199")
        assert h is not None and h.name == "张199" and h.contacts[0].phone == "13800138000"
        # A repeat is confirmed again and changes nothing.
        assert (await cl.on_centre_message(topic, parts[0][1])).confirm == 10
        # A newer, smaller list replaces it whole.
        (_, newer), = contacts.signed_parts(CENTRE, "gw-1", 11, households(1, alert=False))
        assert (await cl.on_centre_message(topic, newer)).confirm == 11
        assert await cl.household("h-199") is None
        h0 = await cl.household("h-000")
        assert h0 is not None and not h0.local_alert
        # Kept across a restart.
        cl2 = ContactList(store, "gw-1", CENTRE.public_key(), Metrics())
        await cl2.init()
        assert cl2.version == 11
    finally:
        await store.close()


async def test_forged_contact_list_is_neither_kept_nor_confirmed(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        metrics = Metrics()
        cl = ContactList(store, "gw-1", CENTRE.public_key(), metrics)
        await cl.init()
        (_, forged), = contacts.signed_parts(Ed25519PrivateKey.generate(), "gw-1", 5, households(1))
        got = await cl.on_centre_message(topics.contacts("gw-1"), forged)
        assert got.confirm is None and cl.version == 0
        assert metrics.rejected["contacts_bad_signature"] == 1
    finally:
        await store.close()


def test_contact_text_names_person_address_and_time_in_chinese() -> None:
    h = households(1)[0]
    text = fallback.contact_text(h, "h-000", 1_790_000_000_000)
    assert "张0" in text and "三组0号" in text and "一键报警" in text
    assert "09月21日22:13" in text  # the time in China (UTC+8)
    assert fallback.contact_text(None, "h-7", 0).startswith("【一键报警】住户h-7")


def test_local_alert_names_group_and_house_not_the_person() -> None:
    h = contacts.Household("h-1", "v-1", "三组", "张三", "5号", True, ())
    assert fallback.local_alert_text(h, "h-1").startswith("紧急求助：三组5号")
    assert "张三" not in fallback.local_alert_text(h, "h-1")
    ascii_group = contacts.Household("h-1", "v-1", "g3", "张三", "三组5号", True, ())
    assert fallback.local_alert_text(ascii_group, "h-1").startswith("紧急求助：三组5号有人")
