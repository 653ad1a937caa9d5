"""Every function and method in core/, pages/ and bench/ fits on a screen (80 lines at most).

Long functions hide several steps behind one name; splitting them into named helpers
is how the code says what it does. The count runs from the `def` line (decorators
excluded) to the last line of the body, so a docstring counts like any other line.
A page's top-level script is not a function and is not counted here.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHECKED_FOLDERS = ("core", "pages", "bench")
MAX_LINES = 80


def long_functions(source: str, *, file_name: str) -> list[str]:
    """`file:line name (N lines)` for each function or method over MAX_LINES in `source`."""
    found = []
    for node in ast.walk(ast.parse(source, filename=file_name)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_LINES:
                found.append(f"{file_name}:{node.lineno} {node.name} ({length} lines)")
    return found


def checked_files() -> list[Path]:
    return sorted(p for folder in CHECKED_FOLDERS for p in (REPO / folder).rglob("*.py"))


def test_the_checked_folders_hold_the_known_modules():
    # A wrong root would make the length check pass on nothing.
    names = {p.relative_to(REPO).as_posix() for p in checked_files()}
    assert {"core/charts.py", "core/measure/size.py", "pages/2_Compress.py", "bench/run_bench.py"} <= names


def test_a_function_one_line_over_the_limit_is_named_and_a_method_too():
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_LINES))
    source = (
        "def short():\n    return 1\n\n\n"
        f"class Holder:\n    @staticmethod\n    def long_one():\n{body}\n"
        f"\n\ndef exactly_at_limit():\n" + "\n".join(f"    y{i} = {i}" for i in range(MAX_LINES - 1)) + "\n"
    )
    assert long_functions(source, file_name="sample.py") == [f"sample.py:7 long_one ({MAX_LINES + 1} lines)"]


def test_no_function_is_longer_than_80_lines():
    offenders = [
        entry
        for path in checked_files()
        for entry in long_functions(path.read_text(encoding="utf-8"), file_name=path.relative_to(REPO).as_posix())
    ]
    assert not offenders, (
        f"{len(offenders)} function(s) over {MAX_LINES} lines; split them into named helpers:\n  "
        + "\n  ".join(offenders)
    )
