"""Log axes tick at 1-2-5 steps with their unit, never Plotly's bare minor digits ("8 9 1 2 3 …")."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import pytest

from core.log_axis import apply_log_axis, bytes_label, log_range, log_tick_values, tick_label


def test_ticks_step_1_2_5_and_enclose_the_data() -> None:
    assert log_tick_values(0.8, 9.6) == [0.5, 1.0, 2.0, 5.0, 10.0]
    assert log_tick_values(1.2, 4.0) == [1.0, 2.0, 5.0]
    assert log_tick_values(0.03, 0.3) == [0.02, 0.05, 0.1, 0.2, 0.5]
    assert log_tick_values(2.0, 5.0) == [2.0, 5.0]  # exact steps are their own ends


def test_a_wide_span_gets_one_tick_per_decade() -> None:
    assert log_tick_values(3.0, 40_000.0) == [1.0, 10.0, 100.0, 1000.0, 10_000.0, 100_000.0]


def test_ticks_reject_ends_a_log_axis_cannot_show() -> None:
    with pytest.raises(ValueError, match="positive, finite"):
        log_tick_values(0.0, 10.0)


def test_tick_labels_carry_their_unit() -> None:
    assert [tick_label(v, "MB") for v in log_tick_values(0.8, 9.6)] == ["0.5 MB", "1 MB", "2 MB", "5 MB", "10 MB"]
    assert tick_label(2000.0, "images") == "2,000 images" and tick_label(0.05) == "0.05"
    assert [bytes_label(v) for v in (500.0, 2000.0, 5e6)] == ["500 B", "2 kB", "5 MB"]


def test_applied_axis_is_log_with_labelled_ticks_and_at_least_two_in_view() -> None:
    fig = go.Figure(go.Scatter(x=[0.26, 0.3, 0.33], y=[1, 2, 3]))
    apply_log_axis(fig, axis="x", unit="MB", title="size")
    axis = fig.layout.xaxis
    assert axis.type == "log" and axis.tickmode == "array" and axis.title.text == "size"
    assert list(axis.ticktext) == ["0.2 MB", "0.5 MB"]
    low, high = axis.range
    assert sum(low - 1e-9 <= math.log10(t) <= high + 1e-9 for t in axis.tickvals) >= 2  # data inside one step: widened to both ticks
    assert log_range(1.0, 9.0, [1.0, 2.0, 5.0, 10.0])[0] < 0.0  # room below the smallest point
