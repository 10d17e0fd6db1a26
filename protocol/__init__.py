"""The written contract (docs/protocol.md) as pure code: no I/O, one codec per link.

- device link (buttons, speakers <-> gateway): `device_fw/okproto.py`, the same file runs on the
  boards; vectors in `docs/vectors/protocol-v1.json`.
- gateway <-> centre: `signed` (the §6 frame), `topics` (every topic of the centre broker),
  `uplink` (§1.2 event ids, §6.2 events, §6.5 heartbeats, §6.6 confirmations), `acks` (§6.4),
  `broadcast` (§8.1 copies), `reports` (§8.3), all raising one error, `errors.Rejected`; vectors
  in `docs/vectors/uplink-v1.json`.
"""
