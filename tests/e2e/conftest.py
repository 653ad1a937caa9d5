"""A real `streamlit run app.py` server and Debian's Chromium for the browser tests.

Chromium missing: the tests are skipped outside CI and fail under CI=true.
"""

from __future__ import annotations

import os
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


def wait_idle(page, timeout: float = 120_000) -> None:
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=timeout,
    )


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
            wait_idle(page)
            page.get_by_role("tab", name=tab).click()
            yield page
        finally:
            browser.close()


def settle(page) -> None:
    """Let the rerun a widget change triggers start, then wait for it to end (no stale copies of widgets left)."""
    page.wait_for_timeout(700)
    wait_idle(page)


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
