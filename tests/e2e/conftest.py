"""A real `streamlit run app.py` server and Debian's Chromium for the browser tests.

Chromium missing: the tests are skipped outside CI and fail under CI=true.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.app_browser import CHROMIUM, CHROMIUM_ARGS, ServerError, serve

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
ERROR_TEXT = ("Traceback (most recent call last)", "StreamlitAPIException", "Error running app")


def require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Chromium is required in CI but {CHROMIUM} is missing (scripts/ensure_system_deps.sh installs it).")
    pytest.skip(f"Chromium not found at {CHROMIUM}")


@contextmanager
def streamlit_server(home: Path, *, log_name: str = "streamlit_server.log") -> Iterator[str]:
    """A fresh `streamlit run app.py` on a free port with its own data folder; yields its URL once healthy."""
    log_path = home / "streamlit.log"
    try:
        with serve(model="sample:fashion_cnn", home=home, log_path=log_path) as url:  # the quicker sample
            yield url
    except ServerError as exc:
        pytest.fail(str(exc))
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        if log_path.is_file():
            (ARTIFACTS / log_name).write_text(log_path.read_text(errors="replace"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for a test module (started fresh for it: its first page load is a cold one)."""
    require_chromium()
    with streamlit_server(tmp_path_factory.mktemp("studio_home")) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    require_chromium()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


# The app root's script-run state, the attribute Streamlit's own browser tests read ("initial", "running",
# "rerunRequested", "notRunning"); elements of the previous run are marked data-stale until the new run redraws them.
APP_IDLE_JS = (
    "() => { const app = document.querySelector('[data-testid=\"stApp\"]');"
    " const state = app && app.getAttribute('data-test-script-state');"
    " return state === 'notRunning' && !document.querySelector('[data-stale=\"true\"]'); }"
)
# Counts the runs that have ended on this page (a MutationObserver on that attribute), so a wait can ask for the run a
# click started instead of guessing how long the server takes to start it.
COUNT_RUNS_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app) return -1;
  if (window.__studioRunsApp !== app) {
    window.__studioRunsApp = app;
    window.__studioRunsEnded = window.__studioRunsEnded || 0;
    new MutationObserver(() => {
      if (app.getAttribute('data-test-script-state') === 'notRunning') window.__studioRunsEnded += 1;
    }).observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
  }
  return window.__studioRunsEnded;
}"""
RERUN_TIMEOUT_MS = 180_000
CHIPS = "[data-tag]"  # the chosen values drawn in a multiselect (each with its label as aria-label)  # a rerun of a page with charts on a machine shared with other heavy jobs


def wait_idle(page, timeout: float = 120_000) -> None:
    """Wait until Streamlit has finished the current script run and redrawn every element of it."""
    page.wait_for_function(APP_IDLE_JS, timeout=timeout, polling=100)


@contextmanager
def rerun(page, timeout: float = RERUN_TIMEOUT_MS) -> Iterator[None]:
    """The widget change made inside the block starts a script run: wait until a run has ended after it and the page
    is idle. No fixed delay: on a busy machine the server may take seconds to start that run."""
    before = page.evaluate(COUNT_RUNS_JS)
    yield
    page.wait_for_function(
        f"n => window.__studioRunsEnded > n && ({APP_IDLE_JS})()", arg=before, timeout=timeout, polling=100)


def change_until(page, change, done, *, tries: int = 3, timeout: float = 60_000) -> None:
    """Make a widget change until `done()` holds: on a busy machine a click can be lost (no run starts), and waiting
    for that run's end would only time out. Each try waits for its run; a lost one is tried again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(tries):
        try:
            with rerun(page, timeout=timeout):
                change()
        except PlaywrightTimeout:
            pass  # no run followed the click: the click was lost
        if done():
            return
    assert done(), f"the change did not take after {tries} tries"


def open_until_shown(page, combobox: str, option, timeout: float = RERUN_TIMEOUT_MS) -> None:
    """Click the combobox until `option` is listed. One click is not enough on a busy machine: the click that clears a
    multiselect can leave its menu open (a second click closes it) and a late rerun can close it again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline = time.monotonic() + timeout / 1000
    while not option.is_visible():
        if time.monotonic() > deadline:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "option_never_shown.png"), full_page=True)
            listed = page.get_by_role("option").all_inner_texts()
            raise AssertionError(f"{option} never showed under the combobox {combobox!r}; listed: {listed[:12]}")
        page.get_by_role("combobox", name=combobox).first.click()
        with contextlib.suppress(PlaywrightTimeout):
            option.wait_for(state="visible", timeout=5_000)


def pick_options(page, combobox: str, labels: tuple[str, ...]) -> None:
    """Choose each of `labels` in the multiselect named `combobox`, one rerun at a time; the chosen chips show."""
    from playwright.sync_api import expect

    box = page.get_by_test_id("stMultiSelect").filter(has=page.get_by_role("combobox", name=combobox))
    for label in labels:
        option = page.get_by_role("option", name=label, exact=True)
        with rerun(page):
            open_until_shown(page, combobox, option)
            option.click()
        expect(box.locator(f'{CHIPS}[aria-label="{label}"]')).to_have_count(1)
    page.keyboard.press("Escape")


def expect_chosen(multiselect, labels: tuple[str, ...]) -> None:
    """The multiselect shows exactly `labels` as chosen, in that order (Playwright's expect waits for it)."""
    from playwright.sync_api import expect

    expect(multiselect.locator(CHIPS)).to_have_count(len(labels))
    for index, label in enumerate(labels):
        expect(multiselect.locator(CHIPS).nth(index)).to_have_attribute("aria-label", label)


def assert_no_exception(page, where: str) -> None:
    text = page.inner_text("body")
    for needle in ERROR_TEXT:
        assert needle not in text, f"{where}: '{needle}' shown on the page"
    assert page.locator('[data-testid="stException"]').count() == 0, f"{where}: an exception box is shown"


CLIPPED_METRICS_JS = """
() => [...document.querySelectorAll('[data-testid="stMetricValue"], [data-testid="stMetricDelta"]')]
  .flatMap(box => [box, ...box.querySelectorAll('*')])
  .filter(el => el.scrollWidth > el.clientWidth + 1 && el.innerText.trim())
  .map(el => el.innerText.trim())
"""


def assert_metrics_fit(page, where: str) -> None:
    """No metric value or delta on the page is cut off by its column ("1.25 MB" drawn as "1.25 M")."""
    clipped = sorted(set(page.evaluate(CLIPPED_METRICS_JS)))
    assert not clipped, f"{where}: metric text cut off by its column: {clipped}"


def fresh_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], object]:
    """For tests that need a server of their own (a cold start per test)."""
    def make(name: str):
        require_chromium()
        return streamlit_server(tmp_path_factory.mktemp(name), log_name=f"streamlit_server_{name}.log")
    return make


@contextmanager
def explore_tab(server: str, tab: str) -> Iterator[object]:
    """A fresh Chromium page on Explore with `tab` open (Playwright's expect waits a minute); closed afterwards."""
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    expect.set_options(timeout=60_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1400})
            page.set_default_timeout(60_000)
            page.goto(f"{server}/Explore")
            expect(page.get_by_role("heading", name="Explore", exact=True)).to_be_visible(timeout=180_000)
            wait_idle(page, RERUN_TIMEOUT_MS)
            page.get_by_role("tab", name=tab).click()
            yield page
        finally:
            browser.close()


def full_page_screenshot(page, name: str) -> None:
    """The whole page: Streamlit scrolls inside its main container, so grow the viewport to fit it first."""
    height = page.evaluate(
        "() => { const m = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
        " return Math.max(m.scrollHeight, document.body.scrollHeight); }"
    )
    size = page.viewport_size
    for _ in range(3):  # re-measure: a taller viewport can re-flow the page
        page.set_viewport_size({"width": size["width"], "height": min(int(height) + 80, 12_000)})
        page.wait_for_timeout(500)  # let charts re-layout to the new size
        height = page.evaluate(
            "() => { const m = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
            " return Math.max(m.scrollHeight, document.body.scrollHeight); }"
        )
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    page.set_viewport_size(size)


def trace_names(page, index: int = 0) -> list[str]:
    return page.evaluate(
        "i => { const p = document.querySelectorAll('.js-plotly-plot')[i]; return p && p.data ? p.data.map(t => t.name) : []; }",
        index,
    )
