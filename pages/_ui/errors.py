"""Failures become a message on the page, never a traceback; the details go to the server log."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

LOG = logging.getLogger("compression_studio.ui")
T = TypeVar("T")


def friendly_message(exc: BaseException, action: str) -> str:
    """A message for the page: our ValueErrors already say what to do; anything else gets a generic hint."""
    if isinstance(exc, ValueError):
        return f"{action} failed: {exc}"
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    if isinstance(exc, MemoryError):
        hint = "The machine ran out of memory: use a smaller model, fewer evaluation images or a smaller batch."
    elif isinstance(exc, OSError):
        hint = "A file could not be read or written: check free disk space and that the data folder is writable."
    else:
        hint = "Try other settings or another model; the app keeps working and nothing saved was lost."
    return f"{action} failed ({type(exc).__name__}: {first}). {hint}"


def attempt(action: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run a core call; on failure show st.error (never a traceback) and return None."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # every failure becomes a message; details go to the server log
        LOG.warning("%s failed:\n%s", action, traceback.format_exc())
        st.error(friendly_message(exc, action), icon=":material/error:")
        return None
