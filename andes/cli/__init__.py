"""The ``andes`` command (``andes.cli:main``); the command tree is built in ``andes.cli.commands``."""

from andes.cli.commands import main

__all__ = ["main"]
