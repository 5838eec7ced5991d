"""Concurrent paced readers one deployment serves at full QoE; see andes/benchmarks/readers.py."""

import sys

from andes.benchmarks.readers import main

if __name__ == "__main__":
    sys.exit(main())
