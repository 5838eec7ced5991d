"""vLLM's scheduler against Andes', back to back on the fidelity traces; see andes/benchmarks/vllm_seat_ab.py."""

import sys

from andes.benchmarks.vllm_seat_ab import main

if __name__ == "__main__":
    sys.exit(main())
