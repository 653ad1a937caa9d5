"""Explore → Mixed precision → Measured search in a real browser: a small search on fashion_cnn (palettize 2 and 8
bits, 60 calibration images) runs as a job from the page; its candidate curve, per-layer table and downloads appear;
"Run this recipe" queues the real .mlpackage run, whose measured point then lands on the curve."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import (
    ARTIFACTS,
    assert_no_exception,
    change_until,
    expect_chosen,
    explore_tab,
    pick_options,
    rerun,
    wait_idle,
)
from tests.e2e.conftest import full_page_screenshot as _screenshot

pytestmark = pytest.mark.browser

SEARCH_TIMEOUT_MS = 300_000  # the search itself takes well under a minute on an idle 2-core machine
RUN_TIMEOUT_MS = 300_000  # compress → .mlpackage → evaluate, then the sidebar's queue redraws the app
FASHION_CNN_LAYERS = 6  # weight layers of the sample: 4 convolutions, 2 linear layers
SETTINGS = ("palettize 2-bit", "palettize 8-bit")
CURVE_JS = ("() => [...document.querySelectorAll('.js-plotly-plot')]"
            ".find(p => p.data && p.data.some(t => t.name === 'predicted (knapsack path)'))")



def _traces(page) -> dict[str, int]:
    """The curve's traces: name → number of points in its data (empty when the curve is not drawn)."""
    # Plotly ships numeric columns as typed-array specs ({dtype, bdata}); the drawn traces (_fullData) hold them decoded.
    return page.evaluate(
        f"() => {{ const p = ({CURVE_JS})(); if (!p) return {{}};"
        " const traces = p._fullData && p._fullData.length === p.data.length ? p._fullData : p.data;"
        " return Object.fromEntries(traces.map(t => [t.name, t.x && t.x.length !== undefined ? t.x.length : 0])); }")


def _drawn_markers(page) -> int:
    """Markers Plotly actually drew on the curve (SVG points, not just data)."""
    return page.evaluate(f"() => {{ const p = ({CURVE_JS})(); return p ? p.querySelectorAll('.scatterlayer .point').length : 0; }}")


# st.dataframe draws on a canvas; glide data grid keeps an accessible <table role="grid"> inside it (not "visible")
LAYERS_JS = ("() => { const t = [...document.querySelectorAll('[data-testid=\"stDataFrame\"] table[role=\"grid\"]')]"
             ".find(t => [...t.querySelectorAll('th')].some(h => h.textContent.trim() === 'output change alone (KL)'));"
             " return t ? {rows: Number(t.getAttribute('aria-rowcount')),"
             " layers: [...t.querySelectorAll('tbody tr')].map(r => (r.querySelector('td') || {}).textContent)} : null; }")


def test_measured_search_shows_its_recipe_and_runs_it(server: str) -> None:
    from playwright.sync_api import expect

    with explore_tab(server, "Mixed precision") as page:
        # The radio's rerun draws the search's widgets with their defaults: a click before that run has ended is
        # overwritten by it (on a busy machine it had not even started 0.7 s after the click).
        with rerun(page):
            page.get_by_text(re.compile(r"^Measured search \(")).click()
        start = page.get_by_role("button", name="Start measured search")
        expect(start).to_be_visible()

        # A small search: two settings, the fewest calibration images, no real run inside the job.
        settings = page.get_by_test_id("stMultiSelect").filter(has_text="Settings each layer may take")
        with rerun(page):
            settings.get_by_role("button", name="Clear all").click()
        expect_chosen(settings, ())
        pick_options(page, "Settings each layer may take", SETTINGS)
        expect_chosen(settings, SETTINGS)
        images = page.get_by_test_id("stSlider").filter(has_text="Calibration images")
        with rerun(page):
            images.get_by_role("slider").first.focus()
            page.keyboard.press("Home")
        expect(images.get_by_test_id("stSliderThumbValue")).to_have_text("60")
        toggle = page.get_by_role("switch", name="Then run it")
        expect(toggle).to_be_checked()
        change_until(page, lambda: page.get_by_text("Then run it", exact=True).click(), lambda: not toggle.is_checked())
        expect(toggle).not_to_be_checked()

        start.click()
        panel = page.get_by_text(re.compile(r"Measured search #\d+"))
        expect(panel.first).to_be_visible()
        expect(page.get_by_text("palettize 2-bit, palettize 8-bit · 60 calibration images").first).to_be_visible()
        expect(page.get_by_test_id("stTabs").get_by_role("button", name="Cancel")).to_be_visible()
        expect(page.get_by_test_id("stTabs").get_by_test_id("stProgress").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "explore_recipe_running.png"))
        try:
            page.wait_for_function(f"() => !!({CURVE_JS})()", timeout=SEARCH_TIMEOUT_MS)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "explore_recipe_timeout.png"), full_page=True)
            raise
        wait_idle(page)
        assert_no_exception(page, "measured search result")
        expect(page.get_by_test_id("stTabs").get_by_role("button", name="Cancel")).to_have_count(0)

        traces = _traces(page)
        assert traces.get("predicted (knapsack path)", 0) >= 2, traces
        assert traces.get("measured (calibration slice)", 0) >= 2, traces
        assert traces.get("chosen recipe (measured)") == 1, traces
        assert "measured (real .mlpackage)" not in traces, traces  # nothing run yet
        assert _drawn_markers(page) >= 2 * 2 + 1
        expect(page.get_by_test_id("stMetric").filter(has_text="Real run drop")).to_contain_text("n/a")
        bits = page.get_by_test_id("stMetric").filter(has_text="Bits / weight").get_by_test_id("stMetricValue")
        assert float(bits.inner_text()) <= 3.0  # the default target: 3 bits per weight

        layers = page.evaluate(LAYERS_JS)
        assert layers is not None, "no per-layer table with an 'output change alone (KL)' column"
        assert layers["rows"] == FASHION_CNN_LAYERS + 1, layers  # aria-rowcount counts the header row
        assert len(set(layers["layers"])) == FASHION_CNN_LAYERS, layers  # one row per weight layer
        for name in ("recipe_spec.yaml", "coremltools_config.yaml", "recipe.py"):
            expect(page.get_by_test_id("stDownloadButton").filter(has_text=name)).to_have_count(1)

        page.get_by_role("button", name="Run this recipe").click()
        expect(page.get_by_text(re.compile(r"Recipe queued as job #\d+")).first).to_be_visible()
        expect(page.get_by_text(re.compile(r"Recipe run #\d+")).first).to_be_visible()  # followed on the page
        try:
            page.wait_for_function(
                f"() => {{ const p = ({CURVE_JS})(); return p && p.data.some(t => t.name === 'measured (real .mlpackage)'); }}",
                timeout=RUN_TIMEOUT_MS)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "explore_recipe_run_timeout.png"), full_page=True)
            raise
        wait_idle(page)
        assert _traces(page)["measured (real .mlpackage)"] == 1
        expect(page.get_by_text(re.compile(r"Experiment #\d+: .* on disk, top-1 .* %")).first).to_be_visible()
        real = page.get_by_test_id("stMetric").filter(has_text="Real run drop").get_by_test_id("stMetricValue")
        assert re.fullmatch(r"-?\d+\.\d\d pts", real.inner_text().strip()), real.inner_text()
        _screenshot(page, "explore_recipe_measured.png")
        assert_no_exception(page, "measured search run")
