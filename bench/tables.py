"""Plain-text tables for the terminal and CSV files for everything else.

Cell text comes from core.metrics / core.formatting (the one formatting module); this only lays it out.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path


def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]], *, title: str = "") -> str:
    """rows of {key: str}; columns of (key, header). Numbers must already be formatted."""
    headers = [h for _, h in columns]
    cells = [[str(row.get(key, "")) for key, _ in columns] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [title, "=" * len(title)] if title else []
    out += [line, "  ".join("-" * w for w in widths)]
    for c in cells:
        out.append("  ".join((v.rjust(w) if _numeric(v) else v.ljust(w)) for v, w in zip(c, widths, strict=True)))
    return "\n".join(out)


def _numeric(text: str) -> bool:
    """A cell that starts with a number ("93.36 %", "-0.77 pts", "1.25 MB") is right-aligned."""
    return re.match(r"^[+-]?\d[\d,.]*(\s|×|$)", text.strip()) is not None


def write_csv(path: Path, rows: Sequence[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return path
