"""Cluster routing in virtual time (headroom vs power of two vs round robin); see
andes/benchmarks/router_bench.py."""

import sys

from andes.benchmarks.router_bench import main

if __name__ == "__main__":
    sys.exit(main())
