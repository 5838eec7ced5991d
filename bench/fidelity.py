"""Simulator vs the real vLLM CPU engine on one trace (see andes/benchmarks/fidelity.py).

Median step-time error and mean per-request |QoE_real - QoE_sim|, with and without online
refinement; prints a table and writes bench/results/fidelity.json.
"""

import sys

from andes.benchmarks.fidelity import main

if __name__ == "__main__":
    sys.exit(main())
