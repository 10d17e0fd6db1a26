"""Test, benchmark and demo harness: local stacks, process control, simulated and protocol-level
devices, a virtual board, a fake gateway. Product packages never import it."""
