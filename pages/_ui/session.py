"""Per-browser-session state: defaults, widget values that survive page switches, and this run's model + dataset."""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING

import streamlit as st

if TYPE_CHECKING:
    from core.data import Dataset
    from core.models.sources import LoadedModel

PERSISTENT_PREFIX = "cfg."  # widget keys that keep their value when the user switches pages
EVAL_LIMIT_KEY = f"{PERSISTENT_PREFIX}eval_limit"
EVAL_LIMIT_OPTIONS = {500: "500 images (fastest)", 2000: "2,000 images (quick)", 0: "full test set"}
DEFAULT_EVAL_LIMIT = 2000


def init_session() -> None:
    """Defaults for a new browser session, and keep configured widget values across page switches."""
    state = st.session_state
    state.setdefault("session_id", uuid.uuid4().hex)
    state.setdefault("model_choice", None)
    state.setdefault("dataset_choice", {"kind": "auto"})
    state.setdefault(EVAL_LIMIT_KEY, DEFAULT_EVAL_LIMIT)
    # Streamlit forgets a widget's value when its page is not shown; re-assigning keeps it (documented pattern).
    for key in list(state.keys()):
        if isinstance(key, str) and key.startswith(PERSISTENT_PREFIX):
            state[key] = state[key]


def eval_limit() -> int | None:
    """How many evaluation images runs use (None: the whole test split)."""
    value = int(st.session_state.get(EVAL_LIMIT_KEY, DEFAULT_EVAL_LIMIT))
    return None if value <= 0 else value


_RUN = threading.local()  # what app.py loaded in this script run (each run executes in one thread)


def set_app_context(context: tuple[LoadedModel | None, Dataset | None] | None) -> None:
    _RUN.context = context


def app_context() -> tuple[LoadedModel | None, Dataset | None] | None:
    """What app.py set for this run (None: the page runs alone; ``shell.page_context`` then prepares it)."""
    return getattr(_RUN, "context", None)
