"""Home: what this is, the model already loaded, and one obvious next step."""

from __future__ import annotations

import streamlit as st

from core.compress.registry import home_methods, method_color, method_label
from core.evaluation import baseline_words
from core.formatting import fmt_bytes, fmt_num, fmt_params, fmt_pct, fmt_pts
from core.models.sources import accuracy_meaning
from pages._ui.shell import page_context
from pages._ui.storage import records

model, dataset = page_context()

st.title("Compression Studio", anchor=False)
st.markdown(
    "Make a vision model **smaller** and see exactly what it costs: accuracy on real held-out images, "
    "the size of the exported file, and measured latency — side by side, for every setting you try."
)

if model is None:
    st.warning("No model is loaded yet. Pick one on the Model page.", icon=":material/warning:")
    st.page_link("pages/1_Model.py", label="Choose a model", icon=":material/arrow_forward:")
    st.stop()

with st.container(border=True):
    left, right = st.columns([3, 2], vertical_alignment="center")
    with left:
        st.markdown(f"#### :material/deployed_code: {model.label}")
        st.caption(
            f"{model.architecture} · input {'×'.join(map(str, model.input_shape))} · {model.num_classes} classes · "
            f"{model.weights_note}"
        )
        data_text = f"{dataset.name}: {len(dataset.test):,} evaluation images ({dataset.source})" if dataset else "no dataset (synthetic inputs)"
        st.caption(f":material/photo_library: {data_text}")
        cols = st.columns(3)
        cols[0].metric("Parameters", fmt_params(model.params))
        cols[1].metric("Size as fp32", fmt_bytes(model.size_fp32_bytes))
        cols[2].metric("Size as fp16", fmt_bytes(model.size_fp16_bytes))
    with right:
        st.markdown("**Next step**")
        st.markdown("Try 4-bit palettization: every weight becomes one of 16 shared values.")
        if st.button("Compress this model", type="primary", icon=":material/compress:", key="home.start", width="stretch"):
            st.switch_page("pages/2_Compress.py")
        st.page_link("pages/1_Model.py", label="or load a different model / dataset", icon=":material/swap_horiz:")

if meaning := accuracy_meaning(accuracy_meaningful=model.accuracy_meaningful, weights_note=model.weights_note):
    st.warning(f"{meaning} Load trained weights on the Model page for accuracy.", icon=":material/casino:")

st.subheader("What the methods do", anchor=False)
# The methods in plain words, names and colours: all from the method registry (core.compress.registry).
methods = home_methods()
for column, (method, text) in zip(st.columns(len(methods)), methods.items(), strict=True):
    with column, st.container(border=True):
        st.markdown(f"<span style='color:{method_color(method)}'>●</span> **{method_label(method)}**", unsafe_allow_html=True)
        st.caption(text)

recent = records(model=model.source_id)
if recent:
    st.subheader("Your latest experiments on this model", anchor=False)
    for record in reversed(recent[-3:]):
        acc = record.get("accuracy_top1")
        base = record.get("baseline_accuracy_top1")
        delta = fmt_pts(acc - base) if isinstance(acc, float) and isinstance(base, float) else "n/a"
        against = f" vs the {words}" if (words := baseline_words(record)) else ""
        st.markdown(
            f"- **#{record['id']} {record.get('spec_summary')}** — {fmt_pct(acc)} ({delta}{against}), "
            f"{fmt_bytes(record.get('size_bytes'))} ({fmt_num(record.get('compression_ratio_fp16'), '.1f', '×')} smaller than fp16)"
        )
    st.page_link("pages/3_Compare.py", label="Compare them all", icon=":material/monitoring:")
