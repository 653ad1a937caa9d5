"""What app.py does after routing: session defaults, the model and dataset, the sidebar, and the page itself."""

from __future__ import annotations

import gc
import threading
import traceback

import streamlit as st

from core.data import Dataset
from core.models.sources import LoadedModel
from core.progress import quiet_libraries
from pages._ui import menu, queue_panel
from pages._ui.errors import LOG, friendly_message
from pages._ui.loading import current_dataset, current_model
from pages._ui.session import app_context, init_session, set_app_context
from pages._ui.widgets import sidebar


def prepare() -> tuple[LoadedModel | None, Dataset | None]:
    """Session defaults, this session's model and dataset (errors shown, never raised) and the sidebar panel."""
    quiet_libraries()
    init_session()
    model = current_model()
    dataset = current_dataset(model)
    sidebar(model, dataset)
    queue_panel.render()  # also starts workers for queued jobs: a restarted app runs the queue it finds
    return model, dataset


def prepare_legacy_run() -> tuple[LoadedModel | None, Dataset | None]:
    """app.py's work for a page file Streamlit ran directly (legacy pages/ mode): route, draw the menu, prepare."""
    menu.route()
    with st.spinner(menu.STARTING_TEXT, show_time=True):
        return prepare()


SETTLED_PAGES: set[str] = set()
_SETTLE_LOCK = threading.Lock()


def page_context() -> tuple[LoadedModel | None, Dataset | None]:
    """The model and dataset that app.py loaded for this run; call it once, at the top of every page.

    Streamlit still runs a page file without app.py in its legacy ``pages/`` mode: on a fresh server's first
    request when that is a deep link, and on every AppTest run of a page. Then this does app.py's work in the
    same run (a rerun would drop the click that started it).
    """
    context = app_context()
    if context is None:
        context = prepare_legacy_run()
    return context


def settle_heap(page_title: str) -> None:
    """After a page's first run in this process: one full garbage collection, then ``gc.freeze()``.

    What is alive then — torch, coremltools, plotly, the loaded model, ~500k objects — lives as long as the process;
    frozen, the collector stops walking it, so a full collection (Python's own, now and then) costs milliseconds
    instead of ~0.2 s of holding the GIL while a rerun's messages wait to be sent (see .streamlit/config.toml,
    runner.postScriptGC). Frozen objects are still freed by reference counting.
    """
    with _SETTLE_LOCK:
        if page_title in SETTLED_PAGES:
            return
        SETTLED_PAGES.add(page_title)
        gc.collect()
        gc.freeze()


def run(page: st.Page, *, context: tuple[LoadedModel | None, Dataset | None] | None = None) -> None:
    """Run the page with this session's model and dataset (`context`: already prepared; else loaded here), which
    pages read via page_context."""
    set_app_context(context if context is not None else prepare())
    try:
        page.run()
        settle_heap(page.title)
    except Exception as exc:  # last line of defence: a message, never a traceback on the page
        LOG.warning("page %s failed:\n%s", page.title, traceback.format_exc())
        st.error(
            friendly_message(exc, f"The {page.title} page") + " Reload the page or go back to Home; your experiments are safe.",
            icon=":material/error:",
        )
    finally:
        set_app_context(None)
