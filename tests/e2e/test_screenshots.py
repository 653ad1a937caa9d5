"""A screenshot of every page, of every tab of Compress / Compare / Explore, of every Learn lesson and of the Story
page (and its exported PNG / PDF) in test-artifacts/screens/, for a person to look at; real Chromium against
`streamlit run app.py` with two real experiments (4-bit palettization, 50 % pruning) in its data folder.

Each shot also checks the page finished without an exception; the Story's export is downloaded as a user would
and checked: a one-page landscape PDF and a 1600 × 900 PNG that is not blank.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest

from core.app_browser import choose_lesson
from core.learn.lessons import LESSONS
from core.story import PAGE_HEIGHT, PAGE_WIDTH
from pages._ui.menu import menu_entries
from pages._ui.spec_form import tab_groups
from tests.e2e.conftest import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    assert_no_exception,
    require_chromium,
    streamlit_server,
    wait_idle,
)
from tests.e2e.conftest import full_page_screenshot as _screenshot
from tests.pages.conftest import run_real_experiment

pytestmark = pytest.mark.browser

SCREENS = "screens"
TABS = {  # pages whose tabs each get a shot
    "Compress": [*tab_groups(), "Joint pipeline"],  # every method's tab, as the page draws them from the specs
    "Compare": ["Latency", "Size breakdown", "Per-class accuracy", "Flipped images", "Side by side", "Downloads"],
    "Explore": ["Sweep", "Sensitivity", "Mixed precision", "Budget search", "Lineage"],
}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _shot(page, name: str, where: str) -> None:
    wait_idle(page, 180_000)
    page.wait_for_timeout(800)  # let charts finish their first layout
    assert_no_exception(page, where)
    _screenshot(page, f"{SCREENS}/{name}.png")


@pytest.fixture(scope="module")
def server_with_experiments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_chromium()
    home = tmp_path_factory.mktemp("screens_home")
    run_real_experiment(home, {"method": "palettize", "n_bits": 4})
    run_real_experiment(home, {"method": "prune", "target_sparsity": 0.5})
    (ARTIFACTS / SCREENS).mkdir(parents=True, exist_ok=True)
    with streamlit_server(home, log_name="streamlit_server_screens.log") as url:
        yield url


@pytest.fixture
def page(server_with_experiments: str) -> Iterator[object]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=120_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
            tab.set_default_timeout(120_000)
            yield tab
        finally:
            browser.close()


def _open(page, url: str, title: str) -> None:
    from playwright.sync_api import expect

    path = "" if title == "Home" else f"/{title}"
    page.goto(f"{url}{path}")
    heading = "Compression Studio" if title == "Home" else title
    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible(timeout=180_000)
    wait_idle(page, 180_000)


def test_every_page_and_tab(server_with_experiments: str, page) -> None:
    for number, entry in enumerate(menu_entries()):
        _open(page, server_with_experiments, entry.title)
        _shot(page, f"{number}_{_slug(entry.title)}", entry.title)
        for index, tab in enumerate(TABS.get(entry.title, [])):
            page.get_by_role("tab", name=tab, exact=True).click()
            _shot(page, f"{number}_{_slug(entry.title)}_tab{index + 1}_{_slug(tab)}", f"{entry.title} → {tab}")
    shots = sorted(p.name for p in (ARTIFACTS / SCREENS).glob("*.png"))
    assert len(shots) >= len(menu_entries()) + sum(len(t) for t in TABS.values()), shots


def test_every_learn_lesson(server_with_experiments: str, page) -> None:
    _open(page, server_with_experiments, "Learn")
    for number, lesson in enumerate(LESSONS, start=1):
        choose_lesson(page, lesson.title)
        _shot(page, f"learn_lesson{number}_{lesson.key}", lesson.title)


def _pdf_pages(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", data))


def test_story_page_and_its_exports(server_with_experiments: str, page) -> None:
    from PIL import Image
    from playwright.sync_api import expect

    _open(page, server_with_experiments, "Story")
    page.get_by_role("slider").first.focus()
    for _ in range(40):  # the budget to its widest: the default story is then the smallest experiment
        page.keyboard.press("ArrowRight")
    wait_idle(page)
    expect(page.locator("h3").filter(has_text="× smaller")).to_be_visible()
    page.locator(".js-plotly-plot .main-svg").nth(1).wait_for()
    _shot(page, "story_page", "Story")
    page.get_by_role("button", name="Make PDF and PNG").click()
    expect(page.get_by_role("button", name="Story PNG")).to_be_visible(timeout=180_000)
    for label, suffix in (("Story PNG", "png"), ("Story PDF", "pdf")):
        with page.expect_download() as download:
            page.get_by_role("button", name=label).click()
        download.value.save_as(ARTIFACTS / SCREENS / f"story_export.{suffix}")
    png = Image.open(ARTIFACTS / SCREENS / "story_export.png")
    assert png.size == (PAGE_WIDTH, PAGE_HEIGHT)
    assert np.asarray(png.convert("L"), dtype=float).std() > 20  # not a blank page
    assert _pdf_pages((ARTIFACTS / SCREENS / "story_export.pdf").read_bytes()) == 1
    _shot(page, "story_page_exported", "Story after export")
