"""Imports only go down: the static import graph of core/, pages/ and bench/ has no cycle and no upward edge.

The graph is read with ``ast`` from the source, so an import inside a function counts as much as one at the top
of a module (it runs as soon as that function is called), and so does one under ``if TYPE_CHECKING:`` (the type
still depends on that module). ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, and
importing ``a.b.c`` also imports the packages ``a`` and ``a.b`` (their ``__init__`` runs first), except the
packages the importing module already lives in. A package ``__init__`` that imports every module beside it
through ``pkgutil`` / ``importlib`` (``core.compress`` does, so each method registers itself) has an edge to
each of them.

Layers, top to bottom: bench (benchmarks and screenshots) and pages (the Streamlit app) are side by side above
core; core never imports pages, bench or streamlit; test modules import neither bench nor other test modules nor
helper modules beside them (shared helpers are fixtures and functions of a conftest.py).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "pages", "bench")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    path: str

    def __str__(self) -> str:
        return f"{self.source} → {self.target} ({self.path}:{self.line})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(*tops: str) -> dict[str, Path]:
    return {module_name(p): p for top in tops for p in sorted((ROOT / top).rglob("*.py"))}


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports_every_sibling(node: ast.Call) -> bool:
    """``importlib.import_module(f"{__name__}.{…}")``: a package __init__ importing each of its own modules."""
    func = node.func
    if not (isinstance(func, ast.Attribute) and func.attr == "import_module" and node.args):
        return False
    arg = node.args[0]
    return isinstance(arg, ast.JoinedStr) and any(
        isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name) and v.value.id == "__name__"
        for v in arg.values
    )


def imported_names(module: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """Every module name ``path`` imports (absolute, resolved), with its line."""
    package = _package_of(module, path)
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            if len(submodules) < len(node.names):  # a name defined in `base` itself: its __init__ is the edge
                yield base, node.lineno
            for submodule in submodules:  # (the package above each is an edge unless the importer lives in it)
                yield submodule, node.lineno
        elif isinstance(node, ast.Call) and path.name == "__init__.py" and _imports_every_sibling(node):
            for other in known:
                if other.rpartition(".")[0] == module:
                    yield other, node.lineno
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.args[0].value, node.lineno


def edges_of(module: str, path: Path, known: set[str]) -> Iterator[Edge]:
    """The edges of one module: each imported name and the packages above it that are not the module's own."""
    own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    if path.name == "__init__.py":
        own_packages.add(module)
    rel = str(path.relative_to(ROOT))
    for name, line in imported_names(module, path, known):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            target = ".".join(parts[:i])
            if target == module or (target in own_packages and i < len(parts)):
                continue
            yield Edge(module, target, line, rel)


def import_graph(*tops: str) -> dict[str, list[Edge]]:
    files = source_files(*tops)
    known = set(files)
    return {module: list(edges_of(module, path, known)) for module, path in files.items()}


def internal(graph: dict[str, list[Edge]]) -> dict[str, list[Edge]]:
    return {m: [e for e in edges if e.target in graph] for m, edges in graph.items()}


def strongly_connected(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted({e.target for e in graph[start]})))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted({e.target for e in graph[child]}))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def cycle_report(graph: dict[str, list[Edge]]) -> list[str]:
    """Each cycle as its modules and the edges that close it."""
    lines = []
    for component in strongly_connected(graph):
        members = set(component)
        inner = [str(e) for m in component for e in graph[m] if e.target in members]
        lines.append("cycle: " + " ↔ ".join(component) + "\n    " + "\n    ".join(sorted(set(inner))))
    return lines


def _top(name: str) -> str:
    return name.split(".")[0]


def upward_edges(graph: dict[str, list[Edge]]) -> list[str]:
    forbidden = {"core": {"pages", "bench", "streamlit", "app", "tests"}, "bench": {"pages", "tests"},
                 "pages": {"bench", "tests"}}
    return [f"{e} imports {_top(e.target)}" for edges in graph.values() for e in edges
            if _top(e.target) in forbidden.get(_top(e.source), set())]


# --------------------------------------------------------------------------- the graph reader itself


def test_reader_sees_function_level_relative_and_package_edges() -> None:
    """The reader on the real tree: a function-level import, `from pkg import module` and a package's __init__."""
    graph = import_graph(*PACKAGES)
    targets = {e.target for e in graph["core.compress.layers"]}
    assert "core.compress" not in targets  # the package it lives in is not an edge (unless imported by name)
    assert "core.compress.result" in targets and "core.specs" in targets
    # `from core.compress import snippets` inside core.compress: the sibling module, not the package's __init__
    assert {"core.compress.snippets", "core.compress.latency_notes"} <= {e.target for e in graph["core.compress.palettize"]}
    assert "core.compress" not in {e.target for e in graph["core.compress.palettize"]}
    # core.compress imports every module beside it through pkgutil / importlib
    assert {"core.compress.palettize", "core.compress.prune"} <= {e.target for e in graph["core.compress"]}
    # a function-level import in a package module also imports the packages above it
    bench_targets = {e.target for e in graph["bench.run_bench"]}
    assert "core" in bench_targets


def test_reader_resolves_relative_and_function_level_imports(tmp_path: Path) -> None:
    source = tmp_path / "a.py"
    source.write_text("from .sibling import thing\nfrom . import other\nfrom . import VALUE\n\n\ndef f():\n"
                      "    from ..up import deep\n")
    names = {name for name, _ in imported_names("pkg.sub.a", source, {"pkg.sub.sibling", "pkg.sub.other", "pkg.up"})}
    assert names == {"pkg.sub.sibling", "pkg.sub.other", "pkg.sub", "pkg.up"}  # VALUE: from pkg.sub's __init__


def test_cycle_finder_names_the_edges() -> None:
    graph = {
        "a": [Edge("a", "b", 1, "a.py")],
        "b": [Edge("b", "c", 2, "b.py")],
        "c": [Edge("c", "a", 3, "c.py")],
        "d": [Edge("d", "a", 4, "d.py")],
    }
    report = cycle_report(graph)
    assert len(report) == 1 and "a ↔ b ↔ c" in report[0] and "c → a (c.py:3)" in report[0]
    assert "d" not in report[0].split("\n")[0]


# --------------------------------------------------------------------------- the rules


def test_no_import_cycles() -> None:
    cycles = cycle_report(internal(import_graph(*PACKAGES)))
    assert not cycles, "imports must only go down; these modules import each other:\n" + "\n".join(cycles)


def test_no_upward_imports() -> None:
    upward = upward_edges(import_graph(*PACKAGES))
    assert not upward, "core never imports pages, bench or streamlit; bench and pages never import each other:\n" + \
        "\n".join(upward)


def test_subpackages_of_core_form_no_cycle() -> None:
    """Collapsed to core's subpackages (core.compress, core.measure, …; a top-level module stands alone), the graph
    is still acyclic: a package either uses another or is used by it."""

    def unit(name: str) -> str:
        parts = name.split(".")
        return ".".join(parts[:2])

    graph = internal(import_graph("core"))
    collapsed: dict[str, list[Edge]] = {}
    for module, edges in graph.items():
        collapsed.setdefault(unit(module), [])
        collapsed[unit(module)] += [Edge(unit(e.source), unit(e.target), e.line, e.path)
                                    for e in edges if unit(e.target) != unit(module)]
    cycles = cycle_report(collapsed)
    assert not cycles, "core's subpackages import each other:\n" + "\n".join(cycles)


def test_tests_import_neither_bench_nor_other_test_modules() -> None:
    """Shared test helpers are conftest fixtures; a test module importing another test module (or bench) ties the
    suite to files pytest does not treat as shared, and runs the other module's tests' imports twice."""
    files = source_files("tests")
    bad = [f"{path.relative_to(ROOT)}:{line} imports {name}"
           for module, path in files.items()
           for name, line in imported_names(module, path, set(files))
           if _top(name) == "bench" or (_top(name) == "tests" and name != "tests" and not _is_conftest(name))]
    assert not bad, "tests import bench or other test modules (shared helpers belong in conftest.py):\n" + \
        "\n".join(bad)


def _is_conftest(name: str) -> bool:
    return name.rpartition(".")[2] == "conftest"
