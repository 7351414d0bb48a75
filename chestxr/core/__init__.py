"""Layer 0, imported by every other floor: specific errors, atomic file writes and hashes, frozen configs, presets, progress output. Imports nothing from chestxr."""
