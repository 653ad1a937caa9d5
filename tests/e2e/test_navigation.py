"""The router in a real browser: a cold load shows only the final menu, and every menu link works as a direct URL.

Streamlit treats an app with a pages/ folder as a legacy file-based app until st.navigation runs; on a fresh
server's first load it would list "app, Home, Model, …" and answer deep links without app.py. A MutationObserver,
installed before the page's own scripts run, records every state of the sidebar's menu from the first paint on.
"""

from __future__ import annotations

import json

import pytest

from pages._ui.menu import HOME_ALIAS, menu_entries
from tests.e2e.conftest import assert_no_exception, fresh_server_factory, wait_idle

pytestmark = pytest.mark.browser

MENU = [entry.title for entry in menu_entries()]
HEADINGS = {"Home": "Compression Studio"}  # every other page's heading is its menu title

RECORD_MENU = """
window.__menuStates = [];
const record = () => {
  const sidebar = document.querySelector('[data-testid="stSidebar"]');
  const state = {
    builtinNav: !!document.querySelector('[data-testid="stSidebarNav"], [data-testid="stTopNavLinkContainer"]'),
    links: sidebar ? Array.from(sidebar.querySelectorAll('a'))
      .map(a => a.innerText.trim().split('\\n').pop().trim()).filter(t => t) : [],
  };
  const key = JSON.stringify(state);
  if (window.__menuStates[window.__menuStates.length - 1] !== key) window.__menuStates.push(key);
};
new MutationObserver(record).observe(document, {childList: true, subtree: true, characterData: true});
"""


@pytest.fixture(scope="module")
def new_server(tmp_path_factory: pytest.TempPathFactory):
    return fresh_server_factory(tmp_path_factory)


def _menu_states(page) -> list[dict]:
    return [json.loads(s) for s in page.evaluate("window.__menuStates")]


def _expect_heading(page, title: str) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name=HEADINGS.get(title, title), exact=True)).to_be_visible(timeout=120_000)


def test_cold_load_shows_the_final_menu_from_the_first_paint(new_server, browser) -> None:
    with new_server("cold_root") as url:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.add_init_script(RECORD_MENU)
        page.goto(url)
        _expect_heading(page, "Home")
        wait_idle(page)
        states = _menu_states(page)
        shown = [s for s in states if s["links"] or s["builtinNav"]]
        assert shown, f"no menu was ever shown: {states}"
        assert not any(s["builtinNav"] for s in shown), f"Streamlit's own (file-based) menu was shown: {shown}"
        for state in shown:  # from the first state with a menu on, it is the final menu (drawn link by link)
            assert state["links"] == MENU[: len(state["links"])], f"menu states seen: {shown}"
        assert shown[-1]["links"] == MENU
        assert_no_exception(page, "cold load")


RECORD_MAIN = """
window.__mainTexts = [];
new MutationObserver(() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const text = main ? main.innerText.trim() : '';
  if (text && window.__mainTexts[window.__mainTexts.length - 1] !== text) window.__mainTexts.push(text);
}).observe(document, {childList: true, subtree: true, characterData: true});
"""


def test_cold_load_says_what_it_is_doing_before_the_page_appears(new_server, browser) -> None:
    """A fresh server spends seconds importing torch and coremltools and loading the model: the main area shows a
    spinner with what is happening (and the seconds so far) instead of staying blank, and it is gone afterwards."""
    from pages._ui.menu import STARTING_TEXT

    with new_server("cold_status") as url:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.add_init_script(RECORD_MAIN)
        page.goto(url)
        _expect_heading(page, "Home")
        wait_idle(page)
        texts = page.evaluate("window.__mainTexts")
        first = next((n for n, text in enumerate(texts) if STARTING_TEXT in text), None)
        heading = next(n for n, text in enumerate(texts) if "Compression Studio" in text)
        assert first is not None and first < heading, f"main area before the page: {texts[:5]}"
        assert STARTING_TEXT not in page.inner_text('[data-testid="stMain"]')
        assert_no_exception(page, "cold load")


def _open(browser, address: str):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(address)
    return page


def test_every_menu_link_works_as_a_direct_url(new_server, browser) -> None:
    # The server's very first request is a deep link: the page that Streamlit runs without app.py.
    with new_server("cold_deep_link") as url:
        first = _open(browser, f"{url}/Compare")
        _expect_heading(first, "Compare")
        wait_idle(first)
        links = first.locator('[data-testid="stSidebar"] a')
        # Addresses relative to the app's root; the home page's link is "" (the root itself).
        hrefs = {links.nth(i).inner_text().strip().split("\n")[-1].strip(): f"{url}/{links.nth(i).get_attribute('href')}"
                 for i in range(links.count())}
        assert list(hrefs)[: len(MENU)] == MENU
        assert "Page not found" not in first.inner_text("body")
        first.close()

        for title in MENU:
            page = _open(browser, hrefs[title])  # a fresh page: the link typed into the address bar
            _expect_heading(page, title)
            wait_idle(page)
            body = page.inner_text("body")
            assert "Page not found" not in body, f"{title}: {hrefs[title]} answered 'Page not found'"
            assert_no_exception(page, title)
            page.close()


def test_legacy_home_link_opens_the_home_page(new_server, browser) -> None:
    """Streamlit's file-based menu linked the home page as /Home; such links (bookmarks) still work."""
    with new_server("legacy_home") as url:
        page = _open(browser, f"{url}/{HOME_ALIAS}")
        _expect_heading(page, "Home")
        wait_idle(page)
        assert "Page not found" not in page.inner_text("body")
        assert page.url.rstrip("/") == url  # redirected to the home page's real address
        assert_no_exception(page, "/Home")
