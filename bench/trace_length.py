"""Andes/FCFS mean QoE at 1.5x FCFS capacity against trace length; see andes/benchmarks/trace_length.py."""

import sys

from andes.benchmarks.trace_length import main

if __name__ == "__main__":
    sys.exit(main())
