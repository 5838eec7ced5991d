"""10,000 streams: no token lost, repeated or reordered; flat RSS; see andes/benchmarks/soak.py."""

import sys

from andes.benchmarks.soak import main

if __name__ == "__main__":
    sys.exit(main())
