"""``python -m andes.cli``: the ``andes`` command."""

import sys

from andes.cli.commands import main

sys.exit(main())
