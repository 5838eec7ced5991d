"""QoE against load for every policy (also ``andes bench``); see andes/benchmarks/qoe_vs_load.py."""

import sys

from andes.benchmarks.qoe_vs_load import main

if __name__ == "__main__":
    sys.exit(main())
