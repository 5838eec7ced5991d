"""The Andes scheduler's added time per vLLM step (see andes/benchmarks/vllm_sched_overhead.py)."""

import sys

from andes.benchmarks.vllm_sched_overhead import main

if __name__ == "__main__":
    sys.exit(main())
