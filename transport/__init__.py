"""Plumbing that gateway and centre share: the asyncio MQTT client, TLS and PKI, key files,
Mosquitto configuration."""
