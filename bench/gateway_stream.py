"""Tokens/s and added delay per token through the served app; see andes/benchmarks/gateway_stream.py."""

import sys

from andes.benchmarks.gateway_stream import main

if __name__ == "__main__":
    sys.exit(main())
