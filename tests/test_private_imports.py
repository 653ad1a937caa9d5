"""No module reaches into another's underscore names.

A leading underscore says "only this module relies on this"; importing it elsewhere (or reading it as
`module._name`) makes a hidden contract that a rename in one file silently breaks in another. A name that
another module needs is made public, or the function moves to where it is used. Library internals have their
own rule and adapters (core/library_internals.py, tests/test_library_internals.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHECKED_FOLDERS = ("core", "pages", "bench", "tests")
PROJECT_PACKAGES = ("core", "pages", "bench")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_project_module(module: str) -> bool:
    return module.split(".")[0] in PROJECT_PACKAGES


def private_uses(source: str, *, file_name: str) -> list[str]:
    """`file:line module._name` for every underscore name of another project module this source imports or reads."""
    tree = ast.parse(source, filename=file_name)
    found: list[str] = []
    modules: dict[str, str] = {}  # local name → project module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _is_project_module(node.module):
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(f"{file_name}:{node.lineno} {node.module}.{alias.name}")
                else:
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _is_project_module(alias.name):
                    modules[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in modules:
                found.append(f"{file_name}:{node.lineno} {ast.unparse(node)}")
    return found


def test_an_imported_or_read_underscore_name_is_found():
    source = (
        "from core.charts import base_figure, _empty\n"
        "from core import baseline\n"
        "import core.cli as cli\n"
        "from json import _default_decoder\n"  # not a project module: the library-internals rule covers those
        "def f(self):\n"
        "    return baseline._baseline_records, cli._load_model, self._own, baseline.clear_caches\n"
    )
    assert private_uses(source, file_name="x.py") == [
        "x.py:1 core.charts._empty",
        "x.py:6 baseline._baseline_records",
        "x.py:6 cli._load_model",
    ]


def test_no_module_uses_another_modules_underscore_names():
    offenders = [
        entry
        for folder in CHECKED_FOLDERS
        for path in sorted((REPO / folder).rglob("*.py"))
        for entry in private_uses(path.read_text(encoding="utf-8"), file_name=path.relative_to(REPO).as_posix())
    ]
    assert not offenders, (
        f"{len(offenders)} use(s) of another module's underscore name; make the name public or move the code "
        "to where it is used:\n  " + "\n  ".join(offenders)
    )
