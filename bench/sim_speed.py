"""Simulator speed on a 10,000-request trace (see andes/benchmarks/sim_speed.py)."""

import sys

from andes.benchmarks.sim_speed import main

if __name__ == "__main__":
    sys.exit(main())
