"""Files `onekey install` puts on a Debian or Raspberry Pi OS machine: systemd units and the
sysusers.d entry for the service user. Read with importlib.resources."""
