"""The ``andes`` command with only the core install, and the direction of imports between layers.

The optional extras (serve, cpu, gpu, loadtest, bench) are all installed in the test venv, so
``andes --help`` importing one of them by accident would pass every other test while breaking
the documented ``pip install -e '.[bench]' && andes bench``. Here each command runs in a fresh
interpreter whose import system refuses those packages (a ``sys.meta_path`` finder), as if they
were not installed, and reports every attempt to import one, even an attempt that was caught.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("ray", "httpx", "fastapi", "uvicorn", "starlette", "vllm", "torch", "transformers", "locust",
           "gevent", "matplotlib", "openai", "tqdm", "rich", "grafana_client", "grafana_foundation_sdk", "niquests")

# Runs before the command: refuse BLOCKED packages, write each refused name to stderr at exit.
PRELUDE = """
import atexit, json, sys
from importlib.abc import MetaPathFinder
blocked, tried = set(json.loads(sys.argv[1])), []
class Blocker(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            tried.append(name)
            raise ImportError(f"{name} is blocked: not part of the core install")
        return None
sys.meta_path.insert(0, Blocker())
atexit.register(lambda: print("BLOCKED IMPORTS:", json.dumps(sorted(set(tried))), file=sys.stderr))
already = sorted(m for m in sys.modules if m.split(".")[0] in blocked)
assert not already, f"imported before the blocker: {already}"
from andes.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_core_only(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """``andes *argv`` in a fresh interpreter where only the core dependencies import."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", PRELUDE, json.dumps(BLOCKED), *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def blocked_attempts(result: subprocess.CompletedProcess) -> list[str]:
    line = [x for x in result.stderr.splitlines() if x.startswith("BLOCKED IMPORTS:")][-1]
    return json.loads(line.removeprefix("BLOCKED IMPORTS:"))


@pytest.mark.parametrize("argv", [["--help"], ["bench", "--help"], ["capacity", "--help"], ["profile", "--help"],
                                  ["chat", "--help"], ["dashboard", "push", "--help"], ["top", "--help"],
                                  ["k8s", "render", "--help"]],
                         ids=" ".join)
@pytest.mark.subprocess
def test_help_needs_only_the_core(argv, tmp_path):
    result = run_core_only(*argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: andes")
    assert blocked_attempts(result) == []


@pytest.mark.subprocess
def test_bound_runs_with_only_the_core(tmp_path):
    assert run_core_only("trace", "--kind", "poisson", "--rate", "3", "--num-requests", "20", "--seed", "1",
                         "-o", "t.jsonl", cwd=tmp_path).returncode == 0
    for argv in (["bound", "--help"], ["bound", "--trace", "t.jsonl"]):
        result = run_core_only(*argv, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert blocked_attempts(result) == []
    assert json.loads(result.stdout)["num_requests"] == 20


@pytest.mark.subprocess
def test_trace_runs_with_only_the_core(tmp_path):
    result = run_core_only("trace", "--kind", "gamma", "--rate", "3", "--num-requests", "25", "--seed", "1",
                           "-o", "t.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wrote t.jsonl: 25 requests")
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 25
    assert blocked_attempts(result) == []


@pytest.mark.subprocess
def test_simulate_runs_with_only_the_core(tmp_path):
    result = run_core_only("simulate", "--rate", "2", "--num-requests", "20", "--policy", "andes", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["num_requests"] == 20
    assert blocked_attempts(result) == []


@pytest.mark.subprocess
def test_capacity_checks_its_flags_with_only_the_core(tmp_path):
    # the subcommand's own modules import without Locust or httpx; only a sweep needs them
    result = run_core_only("capacity", "--url", "http://127.0.0.1:1", cwd=tmp_path)
    assert result.returncode == 2 and "andes capacity: error: --rates: required" in result.stderr
    assert blocked_attempts(result) == []


# ------------------------------------------------------------------- direction of imports
TOOLS = ("cli", "benchmarks", "profiling")
CHECKED = (*TOOLS, "loadgen")


def _layer(module: str) -> str:
    """``andes.<layer>...`` -> layer (a subpackage, or a module of the package root)."""
    return module.split(".")[1] if module.count(".") else ""


def _andes_imports(path: Path, module: str) -> set[str]:
    """Every ``andes.*`` module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("andes.")}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{module}: relative import (the package imports absolutely)"
            if node.module == "andes":
                found |= {f"andes.{a.name}" for a in node.names}
            elif (node.module or "").startswith("andes."):
                found.add(node.module)
    return found


def _import_graph() -> dict[str, set[str]]:
    """layer -> the other layers its modules import."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "andes").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        layer = _layer(module)
        targets = {_layer(m) for m in _andes_imports(path, module)} - {layer}
        graph.setdefault(layer, set()).update(targets)
    return graph


def test_no_core_engine_serve_or_loadgen_module_imports_a_tool():
    graph = _import_graph()
    offenders = {layer: sorted(deps & set(TOOLS)) for layer, deps in graph.items()
                 if layer not in TOOLS and deps & set(TOOLS)}
    assert offenders == {}


def test_no_import_cycle_between_the_tools_and_loadgen():
    graph = {layer: deps & set(CHECKED) for layer, deps in _import_graph().items() if layer in CHECKED}

    def reaches(start: str, goal: str, seen: frozenset = frozenset()) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in graph.get(start, ()))

    assert [layer for layer in CHECKED if reaches(layer, layer)] == []
