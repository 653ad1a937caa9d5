"""Widgets more than one page shows: the evaluation-size setting and the sidebar's status panel."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.data import Dataset
from core.formatting import fmt_params
from core.models.sources import LoadedModel
from pages._ui.session import EVAL_LIMIT_KEY, EVAL_LIMIT_OPTIONS
from pages._ui.storage import experiment_count


def eval_limit_selector(dataset: Dataset | None, *, container: Any = None) -> None:
    """The evaluation-size setting, shared by the Model and Compress pages."""
    where = container or st
    total = len(dataset.test) if dataset is not None else None
    where.selectbox(
        "Evaluation images",
        options=list(EVAL_LIMIT_OPTIONS),
        format_func=lambda v: EVAL_LIMIT_OPTIONS[v] if v or total is None else f"full test set ({total:,})",
        key=EVAL_LIMIT_KEY,
        help="Fewer images keep demos quick; the full test set gives the most precise accuracy. "
        "The same images are used for the baseline and every experiment.",
    )


def sidebar(model: LoadedModel | None, dataset: Dataset | None) -> None:
    """Below the menu: the current model and dataset and the experiment count."""
    with st.sidebar:
        st.markdown("**Current model**")
        if model is None:
            st.caption("none loaded — open the Model page")
        else:
            st.markdown(f":material/deployed_code: {model.label}")
            st.caption(f"{fmt_params(model.params)} parameters · {model.weights_note}")
        st.markdown("**Dataset**")
        if dataset is None:
            st.caption("synthetic inputs — accuracy is not measured")
        else:
            st.markdown(f":material/photo_library: {dataset.name}")
            st.caption(f"{len(dataset.test):,} evaluation images · source: {dataset.source}")
        st.markdown(f"**Experiments:** {experiment_count()}")  # the job queue follows (pages/_ui/queue_panel)
