"""Run the test suite in two lanes: the fast lane first, then the tests that start things.

The fast lane is every test not marked ``vllm``, ``ray`` or ``subprocess`` (pyproject.toml,
``[tool.pytest.ini_options]`` markers): unit tests that finish in seconds, run with ``-x`` so
a broken core fails within a minute. Only if it passes does the slow lane run: the real vLLM
engine, Ray clusters and Serve apps, and servers in processes of their own.

    python tests/run_lanes.py [pytest args...]

Extra arguments go to both lanes (paths, ``-k``, ``-q`` ...). A lane that selects no test is
not a failure as long as the other ran some; exit status 5 (pytest's "no tests collected") if
neither did. Arguments that choose the markers themselves (``-m``) mean a single plain pytest
run: that selection replaces the lanes.
"""

from __future__ import annotations

import subprocess
import sys

# Marker names of the slow lane; tests/conftest.py checks that unmarked tests start nothing.
SLOW_MARKERS = ("vllm", "ray", "subprocess")
SLOW = " or ".join(SLOW_MARKERS)
FAST = f"not ({SLOW})"
FAST_LANE = ["-m", FAST, "-x"]
SLOW_LANE = ["-m", SLOW]
NO_TESTS = 5  # pytest.ExitCode.NO_TESTS_COLLECTED, without importing pytest here


def pytest(args: list[str]) -> int:
    """Exit status of one pytest run in a fresh interpreter (each lane imports what it needs)."""
    return subprocess.call([sys.executable, "-m", "pytest", *args])


def chooses_markers(args: list[str]) -> bool:
    return any(a == "-m" or (a.startswith("-m") and not a.startswith("--")) for a in args)


def main(argv: list[str]) -> int:
    if chooses_markers(argv):
        return pytest(argv)
    print(f"== fast lane: {FAST}", flush=True)
    fast = pytest([*FAST_LANE, *argv])
    if fast not in (0, NO_TESTS):
        print(f"== fast lane failed (exit {fast}); slow lane not run", flush=True)
        return fast
    print(f"== slow lane: {SLOW}", flush=True)
    slow = pytest([*SLOW_LANE, *argv])
    if slow not in (0, NO_TESTS):
        return slow
    return NO_TESTS if fast == slow == NO_TESTS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
