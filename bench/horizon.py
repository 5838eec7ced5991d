"""FCFS and Andes at several horizons on a short seat-bound burst and on long prompts at capacity;
see andes/benchmarks/horizon.py."""

import sys

from andes.benchmarks.horizon import main

if __name__ == "__main__":
    sys.exit(main())
