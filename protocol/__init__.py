"""The written contract (docs/protocol.md) as pure code: no I/O, one codec per link.

- device link (buttons, speakers <-> gateway): `device_fw/okproto.py`, the same file runs on the
  boards; `protocol.device` is its CPython face.
- gateway <-> centre: `protocol.signed` (the §6 frame).
"""
