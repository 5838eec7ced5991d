"""The paper's OPT-66B row on the simulator (see andes/benchmarks/paper_table.py)."""

import sys

from andes.benchmarks.paper_table import main

if __name__ == "__main__":
    sys.exit(main())
