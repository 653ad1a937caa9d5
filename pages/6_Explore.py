"""Explore: which setting should I ship? Sweeps, per-layer sensitivity, mixed precision, budget search, lineage."""

from __future__ import annotations

import streamlit as st

from pages._ui.explore_search import render_lineage_tab, render_search_tab
from pages._ui.explore_sweep import render_sweep_tab
from pages._ui.shell import page_context

model, dataset = page_context()
st.title("Explore", anchor=False)
st.caption("Many configs at once, as jobs in the queue: every run becomes an ordinary experiment, so Compare, "
           "Layers, downloads and the HTML report work on it.")

if model is None:
    st.info("Load a model on the Model page first.", icon=":material/info:")
    st.page_link("pages/1_Model.py", label="Go to Model", icon=":material/deployed_code:")
    st.stop()


def _other_helper_tab(name: str) -> None:
    """The sensitivity / mixed-precision tabs live in pages/_ui/explore_sensitivity.py (shown when present)."""
    try:
        from pages._ui import explore_sensitivity
    except ImportError:
        st.info("Coming: per-layer sensitivity and mixed-precision recipes.", icon=":material/construction:")
        return
    render = getattr(explore_sensitivity, name, None)
    if render is None:
        st.info("Coming soon.", icon=":material/construction:")
        return
    render(model=model, dataset=dataset)


sweep_tab, sensitivity_tab, mixed_tab, search_tab, lineage_tab = st.tabs(
    ["Sweep", "Sensitivity", "Mixed precision", "Budget search", "Lineage"])
with sweep_tab:
    render_sweep_tab(model=model, dataset=dataset)
with sensitivity_tab:
    _other_helper_tab("render_sensitivity_tab")
with mixed_tab:
    _other_helper_tab("render_mixed_precision_tab")
with search_tab:
    render_search_tab(model=model)
with lineage_tab:
    render_lineage_tab(model=model)
