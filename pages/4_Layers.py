"""Layers: what compression did to each layer — weight histograms with their LUT / quantization levels / threshold, and the coverage map."""

from __future__ import annotations

import numpy as np
import streamlit as st

from core import charts
from core.formatting import fmt_num, fmt_pct
from core.measure.histogram_overlays import histogram_overlays, layer_arrays
from core.measure.layer_summary import coverage, default_layer, storage_bits_words
from core.store import layers_frame
from core.tables import layers_table
from pages._ui.errors import attempt
from pages._ui.shell import page_context
from pages._ui.storage import records, store

model, dataset = page_context()
st.title("Layers", anchor=False)
st.caption("How each layer's weights changed. Grey: the original weights; colour: after compression.")

experiment_store = store()
all_records = records()
if not all_records:
    st.info("No experiments yet. Run one on the Compress page to see its layers here.", icon=":material/info:")
    st.page_link("pages/2_Compress.py", label="Go to Compress", icon=":material/compress:")
    st.stop()

by_id = {r["id"]: r for r in all_records}
ids = [r["id"] for r in reversed(all_records)]
wanted = st.session_state.get("selected_experiment")
if st.session_state.get("layers.experiment") not in ids:
    st.session_state["layers.experiment"] = wanted if wanted in ids else ids[0]
experiment_id = st.selectbox(
    "Experiment", ids, key="layers.experiment",
    format_func=lambda i: f"#{i} {by_id[i].get('spec_summary')} — {by_id[i].get('model_label')}",
)
st.session_state["selected_experiment"] = experiment_id
record = by_id[experiment_id]
layers = layers_frame(record)
method = record.get("method")

weights = layer_arrays(attempt("Reading the stored weights", experiment_store.weights, experiment_id) or {})

# --------------------------------------------------------------------------- histogram
st.subheader("Weight histogram", anchor=False)
with_weights = [name for name in layers["name"] if name in weights and "original" in weights[name]]
if not with_weights:
    st.info("This experiment has no stored weight values (older run, or the method produced none).", icon=":material/info:")
else:
    if st.session_state.get("layers.layer") not in with_weights:
        st.session_state["layers.layer"] = default_layer(layers, available=with_weights)
    c = st.columns([3, 1, 1], vertical_alignment="bottom")
    layer_name = c[0].selectbox("Layer", with_weights, key="layers.layer",
                                format_func=lambda n: f"{n} ({'compressed' if bool(layers.set_index('name').loc[n, 'compressed']) else 'not compressed'})")
    log_y = c[1].toggle("Log scale", key="cfg.layers.log", help="Shows the rare large weights and the tails.")
    st.session_state.setdefault("cfg.layers.bins", 120)
    bins = c[2].select_slider("Bins", options=[40, 80, 120, 200, 400], key="cfg.layers.bins")
    arrays = weights[layer_name]
    row = layers.set_index("name").loc[layer_name]
    overlays = histogram_overlays(arrays, bits=row.get("bits"), params=int(row["params"]))
    figure = charts.weight_histogram_figure(
        original=arrays["original"], compressed=arrays.get("compressed", np.array([])), layer_name=layer_name,
        method=method, lut=overlays.lut, levels=overlays.levels, threshold=overlays.threshold, bins=int(bins), log_y=log_y,
    )
    st.plotly_chart(figure, key="layers.histogram", config={"displaylogo": False})
    facts = st.columns(6)
    facts[0].metric("Weights", f"{int(row['params']):,}")
    value_bits, how = storage_bits_words(row)
    facts[1].metric("Bits per stored value", value_bits, help="The bit width of each value the layer stores "
                    "(an index into the look-up table, an integer, or a kept fp16 weight).")
    facts[2].metric("Bits / weight", fmt_num(row.get("bits_per_weight"), ".2f"), help=how)
    facts[3].metric("Sparsity", fmt_pct(row.get("sparsity"), 1))
    facts[4].metric("Weight SNR", fmt_num(row.get("snr_db"), ".1f", " dB"), help="Signal-to-noise of the compressed weights vs the originals: higher is closer.")
    facts[5].metric("LUTs / scales", f"{int(row.get('n_luts') or 0)} / {int(row.get('n_scales') or 0)}")
    st.caption(f":material/calculate: {how}")
    if not row.get("compressed"):
        st.warning(f"Not compressed: {row.get('reason')}", icon=":material/info:")
    for note in overlays.notes:
        st.caption(f":material/info: {note}")

# --------------------------------------------------------------------------- coverage map
st.subheader("Coverage map", anchor=False)
covered = coverage(layers)
st.caption(f"{covered.compressed_layers} of {covered.total_layers} weight layers compressed, covering "
           f"{fmt_pct(covered.weight_share)} of the weights. "
           "Hover a grey bar to see why that layer was left alone.")
st.plotly_chart(charts.coverage_figure(layers, method=method), key="layers.coverage", config={"displaylogo": False})
st.dataframe(
    layers_table(layers),
    hide_index=True,
    key="layers.table",
    column_config={
        "weights": st.column_config.NumberColumn(format="localized"),
        "why not compressed": st.column_config.TextColumn(width="large"),
    },
)
