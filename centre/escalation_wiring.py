"""The escalation engine's protocols met by the real parts: household cards
(`centre.households.load_card`), the modem (`modem.Modem`, its errors translated to
`SendFailed` where they enter), and the modem's event stream (replies, delivery reports,
state changes)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiosqlite

import modem
from centre import escalation_policy as ep
from centre import households, smsin
from centre.escalation import (
    DeliveryReport,
    HouseholdInfo,
    Incoming,
    IncomingSms,
    ModemChanged,
    ModemStatus,
    SendFailed,
)

NO_MODEM = (
    "no modem configured: add a [modem] section with its serial port to the centre's "
    "configuration (e.g. port = \"/dev/ttyUSB2\") and restart the centre"
)


class CardContacts:
    """Contacts from the household card, in the card's calling order."""

    async def household(self, db: aiosqlite.Connection, household_id: str) -> HouseholdInfo | None:
        card = await households.load_card(db, household_id)
        if card is None:
            return None
        return HouseholdInfo(
            id=card.id,
            name=card.name,
            address=card.address,
            village=card.village,
            group=card.group,
            contacts=[ep.Contact(c.kind, c.name, c.phone, c.relation) for c in card.contacts],
        )


class ModemSender:
    """`modem.Modem` as the engine's SmsSender; `None`: the centre has no modem."""

    def __init__(self, device: modem.Modem | None) -> None:
        self.device = device

    def status(self) -> ModemStatus:
        if self.device is None:
            return ModemStatus("absent", NO_MODEM)
        return ModemStatus(self.device.state, self.device.detail)

    async def send(self, number: str, text: str) -> list[int]:
        if self.device is None:
            raise SendFailed("absent", NO_MODEM, gone=True)
        try:
            result = await self.device.send_sms(number, text)
        except modem.ModemGone as exc:
            raise SendFailed("gone", str(exc), gone=True) from None
        except modem.NoNetwork as exc:
            raise SendFailed("no_network", str(exc)) from None
        except modem.SimMissing as exc:
            raise SendFailed("sim_missing", str(exc)) from None
        except modem.CmsError as exc:
            raise SendFailed("cms_error", str(exc)) from None
        except modem.ModemTimeout as exc:
            raise SendFailed("timeout", str(exc)) from None
        except modem.PduError as exc:
            raise SendFailed("bad_number", f"cannot send to {number!r}: {exc}") from None
        except modem.ModemError as exc:
            raise SendFailed("modem_error", str(exc)) from None
        return list(result.refs)


async def modem_events(device: modem.Modem) -> AsyncIterator[Incoming]:
    """The modem's stream in the engine's words. A report that is not final (the network
    still tries) is left out; a final one says delivered or not."""
    async for ev in device.events():
        if isinstance(ev, modem.IncomingSms):
            # A gateway's alarm by SMS (protocol §10) goes to ingest first; anything else is a
            # contact's reply for the chain.
            if await smsin.handle_incoming(ev):
                continue
            yield IncomingSms(ev.sender, ev.text)
        elif isinstance(ev, modem.DeliveryReport):
            if ev.final:
                yield DeliveryReport(ev.ref, ev.delivered, ev.number)
        else:
            yield ModemChanged()
