"""The offline HTML report: self-contained (plotly.js inlined, nothing fetched), with every experiment in it."""

from __future__ import annotations

import re

from core.report import build_report
from tests.conftest import ReportScripts, make_record


def test_report_is_self_contained_and_lists_every_experiment() -> None:
    records = [
        dict(make_record(accuracy=0.91, size=500_000), id=1),
        dict(make_record(method="prune", summary="prune <50%> & co", accuracy=0.88, size=900_000), id=2),
    ]
    page = build_report(records=records, title="Demo report", budget_pts=2.0, generated_at="2025-01-01 10:00")
    parser = ReportScripts()
    parser.feed(page)
    assert parser.sources == [] and parser.links == []  # nothing loaded from anywhere
    assert max(parser.inline_sizes) > 1_000_000  # plotly.js itself is inlined
    assert page.count("Plotly.newPlot") == 5  # scatter, latency, latency ratio, size breakdown, per-class
    assert len(re.findall(r"plotly\.js v\d", page)) == 1  # the library is inlined once, not per chart
    assert "4-bit palettization, data-free" in page
    assert "prune &lt;50%&gt; &amp; co" in page  # user-visible text is escaped
    assert "Smallest within 2 points of baseline" in page and "#1 4-bit palettization, data-free: 0.500 MB" in page
    assert "weights are decompressed in PyTorch" in page  # the latency note travels with the numbers
    assert "Fashion-MNIST © Zalando SE" in page


def test_report_without_experiments() -> None:
    page = build_report(records=[])
    assert "No experiments to report yet" in page
    assert "<script" not in page


def test_report_states_the_baseline_latency_the_runs_timed_never_na() -> None:
    first, second = dict(make_record(), id=1), dict(make_record(), id=2)
    first["baseline_latency_ms_p50"], second["baseline_latency_ms_p50"] = 2.6, 6.4
    second_only = dict(make_record(), id=3)
    second_only["baseline_latency_ms_p50"] = None  # the newest record was not timed (an uploaded .mlpackage)
    page = build_report(records=[first, second, second_only], generated_at="2025-01-01 10:00")
    card = re.search(r'Baseline latency p50</div><div class="v">([^<]*)<', page)
    assert card is not None and card.group(1) == "2.60–6.40 ms, timed beside each run"
    assert "every run has its own baseline bar" in page
    assert "95 % bootstrap interval" in page
    second_only["baseline_accuracy_top1"] = second_only["size_fp16_bytes"] = None
    assert 'Baseline top-1 accuracy</div><div class="v">92.00 %<' in build_report(records=[first, second_only])
    cards = build_report(records=[first, second_only]).split("<div class='cards'>")[1].split("<h2>")[0]
    assert "Baseline size (fp16 .mlpackage)" in cards and "n/a" not in cards
    one = build_report(records=[first], generated_at="2025-01-01 10:00")
    assert 'Baseline latency p50</div><div class="v">2.60 ms<' in one
