"""Andes vs FCFS on the real vLLM CPU engine under overload (see andes/benchmarks/vllm_policy.py).

Load set from the engine's capacity measured in the same run; mean and p10 QoE from the token
events' receive times, throughput, the fluid bound, 3 seeds; prints a table and writes
bench/results/vllm_policy.json.
"""

import sys

from andes.benchmarks.vllm_policy import main

if __name__ == "__main__":
    sys.exit(main())
