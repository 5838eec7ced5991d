"""Routing on a mixed cluster (fast big-KV replicas beside slow small ones) in virtual time;
see andes/benchmarks/router_hetero.py."""

import sys

from andes.benchmarks.router_hetero import main

if __name__ == "__main__":
    sys.exit(main())
