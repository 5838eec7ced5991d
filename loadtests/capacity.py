"""Same as ``andes capacity``: sweep request rates with headless Locust, report the capacity.

    python loadtests/capacity.py --url http://127.0.0.1:8000 --rates 2,4,6,8

See loadtests/README.md; the logic is in andes/loadgen/sweep.py.
"""

import sys

from andes.cli import main

if __name__ == "__main__":
    sys.exit(main(["capacity", *sys.argv[1:]]))
