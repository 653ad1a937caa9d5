"""Layers: what compression did to each layer — weight histograms with their LUT / grid / threshold, and the coverage map."""

from __future__ import annotations

import numpy as np
import streamlit as st

from core import charts
from core.store import layers_frame
from pages import _ui

model, dataset = _ui.page_context()
st.title("Layers", anchor=False)
st.caption("How each layer's weights changed. Grey: the original weights; colour: after compression.")

experiment_store = _ui.store()
all_records = _ui.records()
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

weights: dict[str, dict[str, np.ndarray]] = {}
flat = _ui.attempt("Reading the stored weights", experiment_store.weights, experiment_id) or {}
for key, values in flat.items():
    layer, _, kind = key.rpartition("/")
    weights.setdefault(layer, {})[kind] = values


def quantization_grid(arrays: dict[str, np.ndarray], bits: float | None) -> tuple[np.ndarray | None, str]:
    """The representable values of one channel: (q − zero_point) × scale for every integer q of the type."""
    scales = arrays.get("scale")
    if scales is None or scales.size == 0 or not bits:
        return None, ""
    scales = np.abs(scales.astype(np.float64).ravel())
    position = int(np.argsort(scales)[len(scales) // 2])
    scale = float(scales[position])
    zero_points = arrays.get("zero_point")
    zero = float(zero_points.ravel()[position]) if zero_points is not None and zero_points.size > position else 0.0
    levels = np.arange(-(2 ** (int(bits) - 1)), 2 ** (int(bits) - 1))
    note = "" if len(scales) == 1 else f"grid of the channel/block with the median scale (one of {len(scales):,} scales)"
    return (levels - zero) * scale, note


# --------------------------------------------------------------------------- histogram
st.subheader("Weight histogram", anchor=False)
with_weights = [name for name in layers["name"] if name in weights and "original" in weights[name]]
if not with_weights:
    st.info("This experiment has no stored weight values (older run, or the method produced none).", icon=":material/info:")
else:
    compressed_layers = layers[layers["compressed"].fillna(False).astype(bool)]
    biggest = (compressed_layers if not compressed_layers.empty else layers).sort_values("params", ascending=False)["name"]
    default_layer = next((n for n in biggest if n in with_weights), with_weights[0])
    if st.session_state.get("layers.layer") not in with_weights:
        st.session_state["layers.layer"] = default_layer
    c = st.columns([3, 1, 1], vertical_alignment="bottom")
    layer_name = c[0].selectbox("Layer", with_weights, key="layers.layer",
                                format_func=lambda n: f"{n} ({'compressed' if bool(layers.set_index('name').loc[n, 'compressed']) else 'not compressed'})")
    log_y = c[1].toggle("Log scale", key="cfg.layers.log", help="Shows the rare large weights and the tails.")
    st.session_state.setdefault("cfg.layers.bins", 120)
    bins = c[2].select_slider("Bins", options=[40, 80, 120, 200, 400], key="cfg.layers.bins")
    arrays = weights[layer_name]
    row = layers.set_index("name").loc[layer_name]
    lut = arrays.get("lut")
    notes = []
    if lut is not None and "per_channel_scale" in arrays:
        notes.append("LUT values are in per-channel-normalised units, so they are not drawn; the coloured histogram "
                     "shows the effective values (LUT × channel scale).")
        lut = None
    grid, grid_note = quantization_grid(arrays, row.get("bits")) if "scale" in arrays else (None, "")
    if grid_note:
        notes.append(grid_note)
    threshold = float(arrays["threshold"].ravel()[0]) if "threshold" in arrays and arrays["threshold"].size else None
    figure = charts.weight_histogram_figure(
        original=arrays["original"], compressed=arrays.get("compressed", np.array([])), layer_name=layer_name,
        method=method, lut=lut, grid=grid, threshold=threshold, bins=int(bins), log_y=log_y,
    )
    st.plotly_chart(figure, key="layers.histogram", config={"displaylogo": False})
    facts = st.columns(6)
    facts[0].metric("Weights", f"{int(row['params']):,}")
    facts[1].metric("Bits", _ui.fmt_num(row.get("bits"), "g") if row.get("compressed") else "16 (fp16)")
    facts[2].metric("Bits / weight", _ui.fmt_num(row.get("bits_per_weight"), ".2f"), help="Stored bits including LUTs, scales and masks.")
    facts[3].metric("Sparsity", _ui.fmt_pct(row.get("sparsity"), 1))
    facts[4].metric("Weight SNR", _ui.fmt_num(row.get("snr_db"), ".1f", " dB"), help="Signal-to-noise of the compressed weights vs the originals: higher is closer.")
    facts[5].metric("LUTs / scales", f"{int(row.get('n_luts') or 0)} / {int(row.get('n_scales') or 0)}")
    if not row.get("compressed"):
        st.warning(f"Not compressed: {row.get('reason')}", icon=":material/info:")
    sampled = arrays["original"].size < int(row["params"])
    if sampled:
        notes.append(f"A seeded sample of {arrays['original'].size:,} of the {int(row['params']):,} weights is shown.")
    for note in notes:
        st.caption(f":material/info: {note}")

# --------------------------------------------------------------------------- coverage map
st.subheader("Coverage map", anchor=False)
done = int(layers["compressed"].fillna(False).astype(bool).sum())
share = (layers.loc[layers["compressed"].fillna(False).astype(bool), "params"].sum() / max(1, layers["params"].sum()))
st.caption(f"{done} of {len(layers)} weight layers compressed, covering {share:.2%} of the weights. "
           "Hover a grey bar to see why that layer was left alone.")
st.plotly_chart(charts.coverage_figure(layers, method=method), key="layers.coverage", config={"displaylogo": False})
st.dataframe(
    layers.assign(compressed=layers["compressed"].map({True: "yes", False: "no"})),
    hide_index=True,
    key="layers.table",
    column_order=["name", "type", "shape", "params", "compressed", "reason", "bits", "bits_per_weight", "granularity",
                  "n_luts", "n_scales", "sparsity", "snr_db"],
    column_config={
        "params": st.column_config.NumberColumn("weights", format="localized"),
        "bits_per_weight": st.column_config.NumberColumn("bits/weight", format="%.2f"),
        "sparsity": st.column_config.NumberColumn(format="percent"),
        "snr_db": st.column_config.NumberColumn("weight SNR (dB)", format="%.1f"),
        "reason": st.column_config.TextColumn("why not compressed", width="large"),
    },
)
