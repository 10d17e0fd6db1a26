"""Provisioning's errors. Each message says what happened and what the technician can do;
every step is safe to repeat, so "run the same command again" is always an answer."""

from __future__ import annotations


class ProvisionError(Exception):
    """Base of provisioning's own errors."""


class PortError(ProvisionError):
    """The serial port cannot be opened (missing, in use, no permission)."""


class BoardLostError(ProvisionError):
    """The serial port vanished while talking to the board (cable pulled, board reset)."""


class NotMicroPythonError(ProvisionError):
    """The device on the port does not answer as a MicroPython board."""


class BoardTooOldError(ProvisionError):
    """The board runs a MicroPython older than the firmware needs."""


class RawReplError(ProvisionError):
    """The raw REPL conversation went wrong (no prompt, unexpected bytes, timeout)."""


class BoardCommandError(ProvisionError):
    """Code run on the board raised an exception; `traceback` is the board's own report."""

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


class UploadError(ProvisionError):
    """A file on the board does not match what was sent (size or hash)."""


class FirmwareError(ProvisionError):
    """The firmware could not be found or compiled."""


class AlreadyProvisionedError(ProvisionError):
    """The board is bound to another household; only --force moves it."""


class GatewayAdminError(ProvisionError):
    """The gateway's admin API refused a request."""


class GatewayUnreachableError(GatewayAdminError):
    """The gateway's admin API does not answer."""


class DeviceIdError(ProvisionError):
    """The device id is not one a device may have: not 1-32 of a-z, 0-9, '-', or a name
    reserved for a service login on the brokers (docs/protocol.md §1.1)."""


class DeviceIdTakenError(GatewayAdminError):
    """The device id is registered for another board, household or role. `code` says which."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class SelfTestError(ProvisionError):
    """The provisioned board did not prove itself to the gateway in time."""


class EnrolmentError(ProvisionError):
    """Gateway enrolment cannot go on; the message says what is missing."""


class FrozenFirmwareMismatchError(ProvisionError):
    """The board's image has the firmware frozen in, at another version than the repository's."""
