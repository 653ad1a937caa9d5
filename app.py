"""Compression Studio — the Streamlit entry point: page router, session defaults and the sidebar.

Run with ``streamlit run app.py`` (or ``make run``). Pages live in ``pages/`` (the menu is
``pages/_ui.navigation_pages``); everything they compute comes from ``core``.
"""

from __future__ import annotations

import logging
import traceback

import streamlit as st

from pages import _ui

_ui.configure_page()
_ui.init_session()

page = st.navigation(_ui.navigation_pages())

model = _ui.current_model()
dataset = _ui.current_dataset(model)
_ui.sidebar(model, dataset)
# Pages read what this run loaded instead of loading (and reporting failures) a second time.
_ui.set_app_context((model, dataset))
try:
    page.run()
except Exception as exc:  # last line of defence: a message, never a traceback on the page
    logging.getLogger("compression_studio.ui").warning("page %s failed:\n%s", page.title, traceback.format_exc())
    st.error(
        _ui.friendly_message(exc, f"The {page.title} page")
        + " Reload the page or go back to Home; your experiments are safe.",
        icon=":material/error:",
    )
finally:
    _ui.set_app_context(None)
