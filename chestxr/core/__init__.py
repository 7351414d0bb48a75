"""Layer 0, imported by every other floor: specific errors, atomic file writes and hashes, frozen configs and presets. Imports nothing from chestxr."""
