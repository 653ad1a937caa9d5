"""The Model page's model card: which compression methods apply to the loaded model, and why the others do not."""

from __future__ import annotations

import streamlit as st

from core.compress.applicability import applicability_table, lifting_summary
from core.models.sources import LoadedModel


def method_card(model: LoadedModel) -> None:
    table = applicability_table(model=model)
    refused = int((table["Applies"] == "no").sum())
    title = ("Every method applies to this model" if refused == 0
             else f"Methods: {len(table) - refused} apply, {refused} do not — see why")
    with st.expander(title, icon=":material/fact_check:", expanded=refused > 0):
        summary = lifting_summary(model=model)
        if summary:
            st.caption(summary)
        st.dataframe(table, hide_index=True, width="stretch", key="model.method_card")
