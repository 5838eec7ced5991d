"""The test lanes: run_lanes.py's order and exit status, the README's command, the marker guard."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import run_lanes

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[1]


def fake_pytest(monkeypatch, statuses: list[int]) -> list[list[str]]:
    """Replace the lanes' pytest runs by ``statuses`` in turn; the argument lists they got."""
    calls: list[list[str]] = []

    def run(args: list[str]) -> int:
        calls.append(args)
        return statuses[len(calls) - 1]

    monkeypatch.setattr(run_lanes, "pytest", run)
    return calls


@pytest.mark.parametrize("statuses, expected, lanes", [
    ([0, 0], 0, 2), ([1], 1, 1), ([2], 2, 1), ([0, 1], 1, 2),
    ([5, 0], 0, 2), ([0, 5], 0, 2), ([5, 5], 5, 2),  # one empty lane is fine, two are not
])
def test_fast_lane_first_and_the_slow_lane_only_after_it_passed(monkeypatch, statuses, expected, lanes):
    calls = fake_pytest(monkeypatch, statuses)
    assert run_lanes.main(["-q", "tests/x.py"]) == expected
    assert len(calls) == lanes
    assert calls[0] == ["-m", "not (vllm or ray or subprocess)", "-x", "-q", "tests/x.py"]
    if lanes == 2:
        assert calls[1] == ["-m", "vllm or ray or subprocess", "-q", "tests/x.py"]


@pytest.mark.parametrize("argv", [["-m", "vllm"], ["-mray", "-q"]])
def test_a_marker_choice_is_one_plain_run(monkeypatch, argv):
    calls = fake_pytest(monkeypatch, [3])
    assert run_lanes.main(argv) == 3 and calls == [argv]


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = readme.split("Run the tests:\n\n```bash\n", 1)[1].split("\n```", 1)[0]
    assert command.endswith(".venv/bin/python tests/run_lanes.py") and "\n" not in command
    assert f"\n{command} 2>&1 | tee " in (ROOT / ".ci" / "run").read_text()


GUARDED = '''
import subprocess
import pytest

def test_unmarked_starts_a_process():
    subprocess.run(["true"], check=True)

@pytest.mark.subprocess
def test_marked_starts_a_process():
    subprocess.run(["true"], check=True)

def test_unmarked_starts_nothing():
    pass

def test_unmarked_probes_the_platform():
    subprocess.run(["uname", "-p"], check=True, capture_output=True)
'''


@pytest.mark.subprocess
def test_an_unmarked_test_that_starts_a_process_fails(pytester):
    """tests/conftest.py in a pytest of its own: the guard, and tests/vllm/ marked by path."""
    for name in ("conftest.py", "run_lanes.py"):
        shutil.copy(ROOT / "tests" / name, pytester.path / name)
    pytester.makeini("[pytest]\nmarkers =\n    vllm: x\n    ray: x\n    subprocess: x\n")
    pytester.makepyfile(test_guarded=GUARDED)
    (pytester.path / "vllm").mkdir()
    (pytester.path / "vllm" / "test_engine.py").write_text("def test_needs_vllm():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rE")
    result.assert_outcomes(passed=5, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_unmarked_starts_a_process*",
                                 "test_guarded.py::test_unmarked_starts_a_process starts processes *"])
    assert "subprocess.Popen ['true']" in result.stdout.str()
    vllm_only = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", "vllm")
    vllm_only.assert_outcomes(passed=1)
    fast = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", run_lanes.FAST)
    fast.assert_outcomes(passed=3, errors=1)  # tests/vllm/ not even collected
    assert "deselected" in fast.stdout.str() and "test_engine" not in fast.stdout.str()


def test_test_file_names_are_unique_across_folders():
    # pytest's default import mode imports each test file by its basename: a second file of the
    # same name in another folder fails collection ("import file mismatch") and stops the lane.
    names = [p.name for p in Path(__file__).parent.rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
