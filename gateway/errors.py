"""Errors a technician can act on."""


class GatewayError(Exception):
    """Base of the gateway's own errors."""


class ConfigError(GatewayError):
    """The configuration file is missing, malformed or inconsistent."""


class StoreError(GatewayError):
    """SQLite refused a write (disk full, file read-only, corruption)."""


class StoreFullError(StoreError):
    """The disk holding the gateway's state directory is full (SQLITE_FULL): nothing can be
    stored until space is freed there."""


class RegistryError(GatewayError):
    """A device registry operation cannot be done as asked."""
