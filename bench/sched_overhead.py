"""Policy time per step (see andes/benchmarks/sched_overhead.py)."""

import sys

from andes.benchmarks.sched_overhead import main

if __name__ == "__main__":
    sys.exit(main())
