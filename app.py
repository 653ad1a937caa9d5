"""Compression Studio — the Streamlit entry point: the router first, then the session's model and the page.

Run with ``streamlit run app.py`` (or ``make run``). The menu is ``pages/_ui/menu.MENU``; what pages compute
comes from ``core``.
"""

from __future__ import annotations

from pages._ui import menu

# First, before torch and coremltools are imported: the final menu is on screen from the first paint.
page = menu.route()

from pages._ui import shell  # noqa: E402 — deliberately after routing (slow imports)

shell.run(page)
