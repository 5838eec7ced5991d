"""Measure a Llama's step times (transformers, static KV cache) and fit a latency profile.

See andes/benchmarks/gpu_profile.py. On a GPU: ``python bench/gpu_profile.py`` (Llama-3-8B
shapes, random bf16 weights) writes andes/profiles/<name>.json. On CPU:
``python bench/gpu_profile.py --model tiny`` writes bench/results/gpu_profile_<name>.json.
"""

import sys

from andes.benchmarks.gpu_profile import main

if __name__ == "__main__":
    sys.exit(main())
