"""Human-readable numbers: the one place that turns values into text for pages, CLI, report and benchmark.

Every function takes anything (None, NaN, strings from a CSV) and answers "n/a" for what is not a finite number.
"""

from __future__ import annotations

import math
from typing import Any

NA = "n/a"


def as_number(value: Any) -> float | None:
    """A finite float, or None for None / NaN / inf / anything that is not a number."""
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt_bytes(value: Any) -> str:
    """1234567 → '1.23 MB' (decimal units, as file sizes are reported)."""
    number = as_number(value)
    if number is None:
        return NA
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(number) >= scale:
            return f"{number / scale:.2f} {unit}"
    return f"{number:.0f} B"


def fmt_mb(value: Any, digits: int = 3) -> str:
    """Bytes as megabytes with a fixed number of decimals (tables that line up)."""
    number = as_number(value)
    return NA if number is None else f"{number / 1e6:.{digits}f} MB"


def fmt_pct(value: Any, digits: int = 2) -> str:
    """A fraction as a percentage: 0.9336 → '93.36 %'."""
    number = as_number(value)
    return NA if number is None else f"{number * 100:.{digits}f} %"


def fmt_pts(value: Any, digits: int = 2) -> str:
    """A change of a fraction in percentage points, signed: -0.0077 → '-0.77 pts'."""
    number = as_number(value)
    return NA if number is None else f"{number * 100:+.{digits}f} pts"


def fmt_num(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    number = as_number(value)
    return NA if number is None else f"{number:{spec}}{suffix}"


def fmt_params(value: Any, digits: int = 2) -> str:
    """A parameter count in millions: 2,390,000 → '2.39 M'."""
    number = as_number(value)
    return NA if number is None else f"{number / 1e6:.{digits}f} M"


def fmt_ms(value: Any, digits: int = 2) -> str:
    return fmt_num(value, f".{digits}f", " ms")


def fmt_ratio(value: Any, digits: int = 2) -> str:
    return fmt_num(value, f".{digits}f", "×")


def fmt_seconds(value: Any) -> str:
    seconds = as_number(value)
    if seconds is None:
        return NA
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def fmt_size_ratio(value: Any, digits: int = 2) -> str:
    """Reference bytes ÷ artifact bytes in words: 3.9 → '3.90× smaller', 0.5 → '2.00× larger' (never '0.50× smaller'),
    1.0 → 'same size'."""
    number = as_number(value)
    if number is None or number <= 0:
        return NA
    if abs(number - 1.0) < 0.5 * 10**-digits:
        return "same size"
    if number > 1.0:
        return f"{number:.{digits}f}× smaller"
    return f"{1.0 / number:.{digits}f}× larger"


def plural(count: Any, word: str, plural_word: str | None = None, spec: str = "g") -> str:
    """'1 point', '0.5 points', '2 points', '1,234 images': the count with its word in the right number."""
    number = as_number(count)
    if number is None:
        return f"{NA} {plural_word or word + 's'}"
    return f"{number:{spec}} {word if number == 1 else plural_word or word + 's'}"
