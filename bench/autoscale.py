"""QoE autoscaling vs Ray Serve's default vs fixed peak over one day, in virtual time; see
andes/benchmarks/autoscale_bench.py."""

import sys

from andes.benchmarks.autoscale_bench import main

if __name__ == "__main__":
    sys.exit(main())
