"""Andes vs FCFS under overload on three mixes, beside the fluid bound; see andes/benchmarks/policy_eval.py."""

import sys

from andes.benchmarks.policy_eval import main

if __name__ == "__main__":
    sys.exit(main())
