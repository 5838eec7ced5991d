"""The layering rule: no module under andes/ imports a layer above its own.

Layers, bottom to top (README, Architecture: the layering rule):
core < engines < serve < client < tools. Within a layer imports are free. Every ``andes.*``
import counts wherever it stands: at module level, inside a function (a lazy import is still a
dependency, only a later one) and under ``if TYPE_CHECKING:`` (a type named from a layer above
is a dependency on it; the lower layer declares a Protocol instead). Modules are read with
``ast``, never imported, so this runs without any optional dependency.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "engines", "serve", "client", "tools")

# A module's layer is that of the longest dotted prefix listed here.
LAYER_OF = {
    # core: pure, no I/O, no clocks; andes/profiles/*.json is latency's data.
    "andes.expectations": "core", "andes.qoe": "core", "andes.latency": "core",
    "andes.latency_refit": "core", "andes.workload": "core", "andes.scheduler": "core",
    "andes.routing": "core", "andes.config": "core", "andes.bound": "core",
    "andes.autoscale": "core",
    # engines: the engine interface and its implementations, and the tiny model they load.
    "andes.engines": "engines", "andes.models": "engines",
    # serve: the Ray Serve app (replica, router, gateway) and its one-process twin.
    "andes.serve": "serve",
    # client: what talks to a server over HTTP (load generation, client-side QoE).
    "andes.client": "client", "andes.loadgen": "client",
    # tools: commands, benchmarks and profiling; nothing imports them.
    "andes.cli": "tools", "andes.benchmarks": "tools", "andes.profiling": "tools",
    "andes.k8s": "tools",  # manifests rendered from deployments/*.yaml and checked offline
    "andes.observe": "tools",  # the dashboard, its push to Grafana, `andes top`
}
PACKAGE_LAYER = "core"  # andes/__init__.py itself (its version string)

# Upward imports in the tree this test was written on, each being removed by a refactor under
# way. The list only shrinks: a new upward import fails below, and so does an entry that no
# longer occurs (delete it). (importer, imported).
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name, or None if no entry covers it."""
    if module == "andes":
        return PACKAGE_LAYER
    parts = module.split(".")
    for end in range(len(parts), 1, -1):
        layer = LAYER_OF.get(".".join(parts[:end]))
        if layer is not None:
            return layer
    return None


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def andes_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted((root / "andes").rglob("*.py"))}


def imports_of(name: str, source: str, is_package: bool, known: set[str]) -> list[Import]:
    """Every ``andes.*`` module that ``source`` (module ``name``) imports, anywhere in it.

    ``from X import y`` counts as importing ``X.y`` when that is a module in ``known``, else
    ``X``; relative imports are resolved against the module's package.
    """
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found += [Import(name, t, node.lineno) for t in dict.fromkeys(targets)
                  if t == "andes" or t.startswith("andes.")]
    return found


def all_imports(root: Path = ROOT) -> list[Import]:
    modules = andes_modules(root)
    return [imp for name, path in modules.items()
            for imp in imports_of(name, path.read_text(), path.name == "__init__.py", set(modules))]


def upward(imports: list[Import]) -> list[Import]:
    """The imports that go from a layer to one above it."""
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    return [i for i in imports
            if layer_of(i.importer) and layer_of(i.imported)
            and rank[layer_of(i.imported)] > rank[layer_of(i.importer)]]


def describe(imports: list[Import]) -> str:
    return "\n".join(f"  {i.importer} ({layer_of(i.importer)}) -> {i.imported} ({layer_of(i.imported)}), "
                     f"line {i.line}" for i in imports)


def test_every_module_has_a_layer():
    unmapped = [name for name in andes_modules() if layer_of(name) is None]
    assert not unmapped, f"add these to LAYER_OF in {Path(__file__).name}: {unmapped}"


def test_no_module_imports_a_layer_above_its_own():
    found = upward(all_imports())
    new = [i for i in found if (i.importer, i.imported) not in KNOWN_VIOLATIONS]
    assert not new, "imports from a layer above (core < engines < serve < client < tools):\n" + describe(new)


def test_known_violations_still_occur():
    found = {(i.importer, i.imported) for i in upward(all_imports())}
    fixed = sorted(KNOWN_VIOLATIONS - found)
    assert not fixed, f"fixed, delete from KNOWN_VIOLATIONS: {fixed}"


def test_imports_are_found_anywhere_and_resolved(tmp_path):
    """The checker itself: a lazy, a type-only and a relative upward import are all reported."""
    files = {
        "andes/__init__.py": "",
        "andes/qoe.py": "from andes import serve\n",
        "andes/scheduler/__init__.py": "",
        "andes/scheduler/base.py": (
            "from typing import TYPE_CHECKING\nfrom . import andes\nfrom ..qoe import x\n"
            "if TYPE_CHECKING:\n    from andes.engines.base import TokenEvent\n"
            "def f():\n    import andes.loadgen.client\n"),
        "andes/scheduler/andes.py": "",
        "andes/serve/__init__.py": "",
        "andes/engines/base.py": "import andes.qoe\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = all_imports(tmp_path)
    assert {(i.importer, i.imported) for i in found} == {
        ("andes.qoe", "andes.serve"), ("andes.scheduler.base", "andes.scheduler.andes"),
        ("andes.scheduler.base", "andes.qoe"), ("andes.scheduler.base", "andes.engines.base"),
        ("andes.scheduler.base", "andes.loadgen.client"), ("andes.engines.base", "andes.qoe")}
    assert {(i.importer, i.imported, i.line) for i in upward(found)} == {
        ("andes.qoe", "andes.serve", 1), ("andes.scheduler.base", "andes.engines.base", 5),
        ("andes.scheduler.base", "andes.loadgen.client", 7)}


@pytest.mark.parametrize("module, layer", [
    ("andes", "core"), ("andes.cli", "tools"), ("andes.cli.profile", "tools"), ("andes.cli.trace", "tools"),
    ("andes.latency_refit", "core"), ("andes.engines.sim.core", "engines"), ("andes.routing.score", "core"),
    ("andes.serve.gateway", "serve"), ("andes.profiling.vllm", "tools"), ("andes.newthing", None),
])
def test_layer_by_longest_prefix(module, layer):
    assert layer_of(module) == layer
