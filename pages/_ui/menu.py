"""The router: the app's pages, the sidebar menu, and leaving Streamlit's legacy ``pages/`` mode.

Streamlit treats an app with a ``pages/`` folder next to its entry script as a legacy file-based app until
``st.navigation`` is called: the first script run of a fresh server lists every file ("app, Home, Model, …"),
and a deep link on that run executes the page file without app.py. Two things keep that out of sight:

- ``client.showSidebarNavigation = false`` (.streamlit/config.toml) hides the file-based menu, so this module
  draws the one menu with ``st.page_link``, and ``st.navigation`` runs with ``position="hidden"``;
- ``route()`` is the first thing app.py does and this module imports nothing but streamlit, so the menu is on
  screen before torch and coremltools are imported; a page file run without app.py calls it too
  (``shell.page_context``), and ``st.navigation`` switches Streamlit out of the legacy mode for the server.

The file-based menu linked the home page as ``/Home``; a hidden alias keeps such links working.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HOME_ALIAS = "Home"  # the legacy menu's URL of the home page
STARTING_TEXT = "Starting up: loading PyTorch, coremltools and the model…"  # the main area's first words on a cold start


@dataclass(frozen=True)
class MenuEntry:
    file: str  # relative to app.py
    title: str
    icon: str
    optional: bool = False  # listed only when the file exists (a page another change adds)


MENU: tuple[MenuEntry, ...] = (
    MenuEntry("pages/0_Home.py", "Home", ":material/home:"),
    MenuEntry("pages/1_Model.py", "Model", ":material/deployed_code:"),
    MenuEntry("pages/2_Compress.py", "Compress", ":material/compress:"),
    MenuEntry("pages/3_Compare.py", "Compare", ":material/monitoring:"),
    MenuEntry("pages/4_Layers.py", "Layers", ":material/stacked_bar_chart:"),
    MenuEntry("pages/5_Learn.py", "Learn", ":material/school:"),
    MenuEntry("pages/6_Explore.py", "Explore", ":material/explore:"),
    MenuEntry("pages/7_Story.py", "Story", ":material/slideshow:"),
)


def menu_entries() -> list[MenuEntry]:
    """The entries whose page file is there, in menu order."""
    return [e for e in MENU if not e.optional or (PROJECT_ROOT / e.file).is_file()]


def navigation_pages() -> list[st.Page]:
    """The menu as st.Page objects; the first is the default page, served at the root URL."""
    pages = []
    for n, entry in enumerate(menu_entries()):
        # The default page lives at "/"; its own url_path only has to differ from the /Home alias.
        url_path = "home" if n == 0 else None
        pages.append(st.Page(entry.file, title=entry.title, icon=entry.icon, default=n == 0, url_path=url_path))
    return pages


def configure_page() -> None:
    st.set_page_config(page_title="Compression Studio", page_icon=":material/compress:", layout="wide")


def route() -> st.Page:
    """Register the pages, draw the menu and return the page this run shows (call first in app.py)."""
    configure_page()
    pages = navigation_pages()
    home = MENU[0]
    home_alias = st.Page(home.file, title=home.title, url_path=HOME_ALIAS, visibility="hidden")
    page = st.navigation([*pages, home_alias], position="hidden")
    if page is home_alias:
        st.switch_page(pages[0])  # answer /Home with the home page at its real address, "/"
    render_menu(pages)
    return page


def render_menu(pages: list[st.Page]) -> None:
    with st.sidebar:
        for page in pages:
            st.page_link(page, label=page.title, icon=page.icon)
        st.divider()
