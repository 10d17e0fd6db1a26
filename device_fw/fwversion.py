# The firmware's version, carried by a MicroPython image with the modules frozen in, so that
# provisioning can tell whether a board's frozen modules are the repository's
# (docs/firmware.md, Flashing an ESP32). This file is the template: provisioning/firmware.py
# (`freeze_tree`) writes the copy that is frozen, with VERSION set to the digest of the
# firmware's modules and MODULES to the names frozen beside it. Nothing on the device imports it.
VERSION = "unstamped"
MODULES = ()
