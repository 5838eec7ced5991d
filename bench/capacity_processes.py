"""Rate one vs two `andes capacity` generator processes offer on schedule; see andes/benchmarks/capacity_processes.py."""

import sys

from andes.benchmarks.capacity_processes import main

if __name__ == "__main__":
    sys.exit(main())
