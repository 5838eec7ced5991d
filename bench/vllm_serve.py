"""Tokens/s of the vLLM CPU engine alone vs through the Ray Serve app (see andes/benchmarks/vllm_serve.py)."""

import sys

from andes.benchmarks.vllm_serve import main

if __name__ == "__main__":
    sys.exit(main())
