"""5x capacity with and without admission control; see andes/benchmarks/overload.py."""

import sys

from andes.benchmarks.overload import main

if __name__ == "__main__":
    sys.exit(main())
