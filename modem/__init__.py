"""SMS over a GSM/4G module (SIM7600, Quectel EC20 and the like) on a serial port, with AT
commands in PDU mode (3GPP TS 27.005/27.007). Used by the centre (escalation) and the gateway
(fallback path). Imports only the standard library and pyserial.

    from modem import Modem, ModemError

    m = Modem("/dev/ttyUSB2", on_sms=..., on_report=..., on_state=...)
    await m.start()                    # returns after the first initialisation attempt
    m.state                            # "ok" | "no_network" | "sim_missing" | "gone" | "starting"
    result = await m.send_sms("+8613800138000", "张三按下了一键报警，请回复1确认")
    result.refs                        # message references, one per part
    async for event in m.events():     # IncomingSms | DeliveryReport | StateChange
        ...
    await m.close()

Callbacks (`on_sms`, `on_report`, `on_state`) are called on the event loop and must only
enqueue; `events()` is the same stream for one consumer. Errors (all ModemError): NoNetwork,
SimMissing, ModemGone (unplugged: the driver re-opens the port by itself), ModemTimeout,
CmsError (`.code`, `.meaning`), CommandError; a bad number or empty text is pdu.PduError.
Long text goes as concatenated parts; incoming parts are joined before they are delivered.
A delivery report carries the references of the whole message and `message_delivered` once
every part arrived. `same_number(a, b)` compares a reply's sender with a stored contact
(+86 or national form). docs/modem.md has the AT commands and the state model.
"""

from modem.driver import (
    GONE,
    NO_NETWORK,
    OK,
    SIM_MISSING,
    STARTING,
    DeliveryReport,
    Event,
    IncomingSms,
    Modem,
    SendResult,
    StateChange,
    same_number,
)
from modem.errors import CmsError, CommandError, ModemError, ModemGone, ModemTimeout, NoNetwork, SimMissing
from modem.pdu import PduError

__all__ = [
    "GONE",
    "NO_NETWORK",
    "OK",
    "SIM_MISSING",
    "STARTING",
    "CmsError",
    "CommandError",
    "DeliveryReport",
    "Event",
    "IncomingSms",
    "Modem",
    "ModemError",
    "ModemGone",
    "ModemTimeout",
    "NoNetwork",
    "PduError",
    "SendResult",
    "SimMissing",
    "StateChange",
    "same_number",
]
