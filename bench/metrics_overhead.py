"""Tokens/s of the served app with metrics on and off; see andes/benchmarks/metrics_overhead.py."""

import sys

from andes.benchmarks.metrics_overhead import main

if __name__ == "__main__":
    sys.exit(main())
