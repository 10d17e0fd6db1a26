"""The modem's errors. Each message says what happened and what a technician can do about it."""

from __future__ import annotations

# +CMS ERROR codes (3GPP TS 27.005 3.2.5) and the common network causes (TS 24.011 E-2) that
# modules report in the same field.
CMS_MEANINGS = {
    1: "unassigned (unallocated) number",
    8: "operator determined barring",
    10: "call barred",
    21: "short message transfer rejected",
    27: "destination out of service",
    28: "unidentified subscriber",
    29: "facility rejected",
    30: "unknown subscriber",
    38: "network out of order",
    41: "temporary failure",
    42: "congestion",
    47: "resources unavailable",
    50: "requested facility not subscribed",
    69: "requested facility not implemented",
    96: "invalid mandatory information",
    111: "protocol error",
    300: "ME failure",
    301: "SMS service of ME reserved",
    302: "operation not allowed",
    303: "operation not supported",
    304: "invalid PDU mode parameter",
    305: "invalid text mode parameter",
    310: "SIM not inserted",
    311: "SIM PIN required",
    312: "PH-SIM PIN required",
    313: "SIM failure",
    314: "SIM busy",
    315: "SIM wrong",
    316: "SIM PUK required",
    320: "memory failure",
    321: "invalid memory index",
    322: "memory full",
    330: "SMSC address unknown",
    331: "no network service",
    332: "network timeout",
    340: "no +CNMA acknowledgement expected",
    500: "unknown error",
}

# +CME ERROR codes (3GPP TS 27.007 9.2) met while initialising.
CME_MEANINGS = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    14: "SIM busy",
    15: "SIM wrong",
    30: "no network service",
    100: "unknown",
}
CMS_NO_NETWORK = {331, 332}
CMS_SIM = {310, 311, 312, 313, 314, 315, 316}
CME_SIM = {10, 11, 12, 13, 14, 15}


class ModemError(Exception):
    """Base of the modem's errors."""


class NoNetwork(ModemError):
    """The module is not registered on a network: nothing can be sent."""


class SimMissing(ModemError):
    """No usable SIM card: missing, failed, or locked by a PIN."""


class ModemGone(ModemError):
    """The serial port vanished or cannot be opened (unplugged, powered off, wrong path)."""


class ModemTimeout(ModemError):
    """The module did not answer a command in time."""


class CmsError(ModemError):
    """The module refused a message operation with `+CMS ERROR: <code>`."""

    def __init__(self, code: int, context: str = "") -> None:
        self.code = code
        self.meaning = CMS_MEANINGS.get(code, "unknown code")
        where = f" {context}" if context else ""
        super().__init__(f"modem refused{where}: +CMS ERROR {code} ({self.meaning})")


class CommandError(ModemError):
    """The module answered ERROR or `+CME ERROR: <code>` to a command."""

    def __init__(self, command: str, code: int | None) -> None:
        self.command = command
        self.code = code
        detail = "ERROR" if code is None else f"+CME ERROR {code} ({CME_MEANINGS.get(code, 'unknown code')})"
        super().__init__(f"modem refused {command}: {detail}")
