"""The one formatting module: every function answers "n/a" for what is not a finite number."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core import formatting as f


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, "abc", object()])
def test_not_a_number_is_na(bad: object) -> None:
    for fmt in (f.fmt_bytes, f.fmt_mb, f.fmt_pct, f.fmt_pts, f.fmt_num, f.fmt_ms, f.fmt_ratio, f.fmt_seconds):
        assert fmt(bad) == "n/a"


def test_as_number() -> None:
    assert f.as_number("1.5") == 1.5 and f.as_number(np.float32(2)) == 2.0 and f.as_number(True) == 1.0
    assert f.as_number(math.inf) is None and f.as_number("x") is None


def test_values() -> None:
    assert f.fmt_bytes(999) == "999 B" and f.fmt_bytes(1_500) == "1.50 kB" and f.fmt_bytes(2_340_000_000) == "2.34 GB"
    assert f.fmt_mb(500_000) == "0.500 MB" and f.fmt_mb(500_000, 1) == "0.5 MB"
    assert f.fmt_pct(0.9336) == "93.36 %" and f.fmt_pts(-0.0077) == "-0.77 pts"
    assert f.fmt_ms(1.234) == "1.23 ms" and f.fmt_ratio(2) == "2.00×" and f.fmt_num(3.14159, ".3f", " x") == "3.142 x"
    assert f.fmt_seconds(12.34) == "12.3 s" and f.fmt_seconds(125) == "2 min 05 s"


def test_size_ratios_below_one_read_as_larger() -> None:
    from core.formatting import fmt_size_ratio

    assert fmt_size_ratio(3.9) == "3.90× smaller"
    assert fmt_size_ratio(0.5) == "2.00× larger"  # PyTorch dynamic int8 vs the fp16 .mlpackage, never "0.50× smaller"
    assert fmt_size_ratio(0.5, 1) == "2.0× larger"
    assert fmt_size_ratio(1.0) == "same size" and fmt_size_ratio(None) == "n/a" and fmt_size_ratio(0) == "n/a"


def test_counts_take_the_right_plural() -> None:
    from core.formatting import plural

    assert plural(1, "point") == "1 point" and plural(1.0, "point") == "1 point"
    assert plural(0.5, "point") == "0.5 points" and plural(2, "point") == "2 points" and plural(0, "point") == "0 points"
    assert plural(1234, "image", spec=",.0f") == "1,234 images"
