"""Plain-text tables for the terminal and CSV files for everything else."""

from __future__ import annotations

import csv
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
    stripped = text.replace(".", "").replace("-", "").replace("+", "").replace("×", "").replace("%", "").strip()
    return stripped.isdigit()


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


def pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}"


def num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:.3f}"
