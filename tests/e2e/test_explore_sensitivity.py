"""Explore → Sensitivity in a real browser: run the analysis on fashion_cnn (2 settings, 100 images) from the page, see
the heatmap with one row per weight layer, click a cell and see that layer's weight histogram for that setting."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import (
    ARTIFACTS,
    assert_no_exception,
    expect_chosen,
    explore_tab,
    pick_options,
    rerun,
    wait_idle,
)

pytestmark = pytest.mark.browser

RUN_TIMEOUT_MS = 150_000  # the analysis itself takes ~15 s on an idle 2-core machine; shared CI machines are slower
SETTINGS = ("palettize 2-bit", "palettize 8-bit")
FASHION_CNN_LAYERS = 6  # weight layers of the sample: 4 convolutions, 2 linear layers
HEATMAP_JS = ("() => [...document.querySelectorAll('.js-plotly-plot')]"
              ".find(p => p.data && p.data.length && p.data[0].type === 'heatmap')")



def _heatmap_rows(page) -> int:
    return page.evaluate(f"() => {{ const p = ({HEATMAP_JS})(); return p ? p.data[0].y.length : 0; }}")


def _cell(page, *, layer_index: int, setting_index: int) -> dict:
    """Screen position and (layer, setting) of one cell's click marker (the scatter trace laid over the heatmap)."""
    return page.evaluate(
        f"""([li, si]) => {{
            const p = ({HEATMAP_JS})();
            const layers = p.data[0].y.length;
            const i = si * layers + li;  // markers run setting by setting, layers in network order
            const point = p.querySelectorAll('.scatterlayer .trace')[0].querySelectorAll('.point')[i];
            const box = point.getBoundingClientRect();
            return {{x: box.x + box.width / 2, y: box.y + box.height / 2, cell: p.data[1].customdata[i]}};
        }}""",
        [layer_index, setting_index],
    )


def test_sensitivity_heatmap_and_a_clicked_cell_opens_its_histogram(server: str) -> None:
    from playwright.sync_api import expect

    with explore_tab(server, "Sensitivity") as page:

        # Fewer probes keep it short: palettize 2 and 8 bits, 100 evaluation images.
        settings = page.get_by_test_id("stMultiSelect").filter(has_text="Settings to probe")
        with rerun(page):
            settings.get_by_role("button", name="Clear all").click()
        expect_chosen(settings, ())
        pick_options(page, "Settings to probe (each layer alone)", SETTINGS)
        expect_chosen(settings, SETTINGS)
        slider = page.get_by_test_id("stSlider").filter(has_text="Evaluation images").get_by_role("slider")
        with rerun(page):
            slider.first.focus()
            page.keyboard.press("Home")
        expect(page.get_by_text(f"{FASHION_CNN_LAYERS * 2} probes")).to_be_visible()

        page.get_by_role("button", name="Run sensitivity analysis").click()
        try:
            page.wait_for_function(f"() => !!({HEATMAP_JS})()", timeout=RUN_TIMEOUT_MS)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "explore_sensitivity_timeout.png"), full_page=True)
            raise
        wait_idle(page)
        assert _heatmap_rows(page) == FASHION_CNN_LAYERS

        # Click the last layer's 8-bit cell: the pickers follow and the histogram is that layer's.
        target = _cell(page, layer_index=FASHION_CNN_LAYERS - 1, setting_index=1)
        layer, setting = target["cell"]
        assert setting == "pal8"
        expect(page.get_by_text(f"Weights of {layer} with palettize 8-bit")).to_have_count(0)
        page.mouse.click(target["x"], target["y"])
        expect(page.get_by_text(f"Weights of {layer} with palettize 8-bit")).to_be_visible()
        wait_idle(page)
        histogram = page.evaluate(
            "() => [...document.querySelectorAll('.js-plotly-plot')].map(p => p.layout.title && p.layout.title.text)"
            ".filter(t => t && t.includes('palettize 8-bit'))")
        assert any(layer in title for title in histogram), histogram
        page.screenshot(path=str(ARTIFACTS / "explore_sensitivity_heatmap.png"), full_page=True)
        assert_no_exception(page, "explore sensitivity")
