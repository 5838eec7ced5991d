"""Local models built on this machine (no downloads)."""
