"""Compare: every experiment of a model in a table and in charts — the trade-off at a glance."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from core import charts
from core.dataset_choice import flipped_image_position
from core.explore.search import chosen_and_confirmed, has_validation
from core.formatting import as_number, fmt_bytes, fmt_pct, fmt_size_ratio
from core.report import build_report, per_run_baseline_note
from core.speedup_wording import speedup_text
from core.tables import (
    ARTIFACT_MATCH_HEADER,
    ARTIFACT_MATCH_HELP,
    diff_table,
    experiments_frame,
    experiments_table,
    experiments_table_formats,
    experiments_table_help,
    flipped_frame,
    flipped_table,
    origin_label,
    per_class_frame,
)
from pages._ui.errors import attempt
from pages._ui.loading import dataset_for_record, thumbnail
from pages._ui.result_card import downloads
from pages._ui.shell import page_context
from pages._ui.storage import records as stored_records
from pages._ui.storage import store

model, dataset = page_context()
st.title("Compare", anchor=False)

experiment_store = store()
models = experiment_store.models()
if not models:
    st.info("No experiments yet. Run one on the Compress page and it appears here.", icon=":material/info:")
    st.page_link("pages/2_Compress.py", label="Go to Compress", icon=":material/compress:")
    st.stop()

model_ids = [m["model"] for m in models]
labels = {m["model"]: f"{m['model_label']} ({m['count']} experiment{'s' if m['count'] != 1 else ''})" for m in models}
if st.session_state.get("cfg.compare.model") not in model_ids:
    st.session_state["cfg.compare.model"] = model.source_id if model is not None and model.source_id in model_ids else model_ids[0]
top = st.columns([2, 2, 1.5], vertical_alignment="bottom")  # room for the pick's size wording
chosen_model = top[0].selectbox("Model", model_ids, format_func=labels.get, key="cfg.compare.model",
                                help="Experiments are compared within one model.")
st.session_state.setdefault("cfg.compare.budget", 5.0)
budget = top[1].slider("Accuracy budget: at most this many points below the baseline", 0.0, 20.0, step=0.5,
                       key="cfg.compare.budget", format="%.1f pts",
                       help="The goal of coremltools' ResNet50 guide: 'retain the fp16 accuracy within 5 %'. Drag it: the chart and the pick update "
                       "instantly, nothing is recomputed.")

records = stored_records(model=chosen_model)
origins = sorted({origin_label(r) for r in records})
if len(origins) > 1:  # lineage: manual runs, each sweep / search / recipe (core.jobs.origins)
    shown = st.multiselect("Origin", origins, default=origins, key="cfg.compare.origin",
                           help="Where the experiments came from: manual runs, a sweep, a search, a recipe …")
    records = [r for r in records if origin_label(r) in shown]
frame = experiments_frame(records)
by_id = {r["id"]: r for r in records}

best = charts.best_within_budget(frame, budget_pts=budget, column=charts.accuracy_metric(frame)[0])

with top[2]:
    if best is not None:
        st.metric("Smallest within budget", f"#{int(best['id'])}",
                  delta=f"{fmt_size_ratio(best.get('compression_ratio_fp16'), 1)} than fp16", delta_arrow="off",
                  delta_color="normal" if (as_number(best.get("compression_ratio_fp16")) or 0) >= 1 else "inverse",
                  help=str(best["spec_summary"]))
        st.caption(f"**{best['spec_summary']}**: {chosen_and_confirmed(by_id[int(best['id'])])}"
                   + ("" if has_validation(by_id[int(best['id'])]) else
                      " — judged on those test images (a sweep or search also measures validation images)"))
    else:
        st.metric("Smallest within budget", "none", help="No experiment is within the budget yet.")

# Highlighted in the scatter: rows ticked in the table (state from the previous run), else the experiment the
# user came from. Only ticked rows narrow the charts in the tabs below.
table_state = st.session_state.get("compare.table") or {}
ticked = {int(frame.iloc[i]["id"]) for i in table_state.get("selection", {}).get("rows", []) if i < len(frame)}
came_from = st.session_state.get("selected_experiment")
selected_ids: set[int] = ticked or ({came_from} if came_from in by_id else set())

# --------------------------------------------------------------------------- scatter
scatter = charts.accuracy_size_figure(frame, budget_pts=budget, highlight_ids=selected_ids)
event = st.plotly_chart(scatter, key="compare.scatter", on_select="rerun", selection_mode="points",
                        config={"displaylogo": False})
picked = [int(p["customdata"][0]) for p in (event.selection.points if event else []) if p.get("customdata")]
if picked and picked[0] in by_id:
    record = by_id[picked[0]]
    st.session_state["selected_experiment"] = record["id"]  # the Layers page opens on it
    info, link = st.columns([4, 1], vertical_alignment="center")
    info.caption(f"Clicked **#{record['id']} {record.get('spec_summary')}** — {fmt_pct(record.get('accuracy_top1'))}, "
                 f"{fmt_bytes(record.get('size_bytes'))}, {fmt_size_ratio(record.get('compression_ratio_fp16'))} "
                 "than fp16")
    link.page_link("pages/4_Layers.py", label="Its layers", icon=":material/stacked_bar_chart:")
st.caption("Dotted line: Pareto frontier (nothing is both smaller and more accurate). ★ the uncompressed fp16 "
           "baseline (one per evaluation set; each experiment is compared with its own set's). Click a point to highlight it; hover for its settings.")

# --------------------------------------------------------------------------- table
st.subheader("Experiments", anchor=False)
display = experiments_table(frame)
formats = experiments_table_formats()
table = st.dataframe(
    display, hide_index=True, key="compare.table", on_select="rerun", selection_mode="multi-row",
    column_config={
        **{header: (st.column_config.NumberColumn(format=formats[header][0], help=text)
                    if header in formats and pd.api.types.is_numeric_dtype(display[header])
                    else st.column_config.TextColumn(help=text))
           for header, text in experiments_table_help().items()},
        ARTIFACT_MATCH_HEADER: st.column_config.TextColumn(help=ARTIFACT_MATCH_HELP)},
)
table_rows = list(table.selection.rows) if table is not None else []
ticked = {int(display.iloc[i]["#"]) for i in table_rows if i < len(display)}

actions = st.columns([1.2, 1, 1, 2])
with actions[0]:
    if st.button(f"Delete {len(table_rows)} selected" if table_rows else "Delete selected", icon=":material/delete:",
                 disabled=not table_rows, key="compare.delete", help="Select rows in the table first (checkbox column)."):
        st.session_state["compare.confirm_delete"] = sorted(ticked)
actions[1].download_button("Experiments CSV", lambda: experiment_store.csv_text([r["id"] for r in records]),
                           file_name=f"experiments_{time.strftime('%Y%m%d')}.csv", mime="text/csv", on_click="ignore",
                           icon=":material/table:", key="compare.csv")
actions[2].download_button("HTML report", lambda: build_report(records=records, budget_pts=budget,
                                                               title=f"Compression Studio — {labels[chosen_model].split(' (')[0]}"),
                           file_name=f"compression_report_{time.strftime('%Y%m%d')}.html", mime="text/html",
                           on_click="ignore", icon=":material/summarize:", key="compare.report",
                           help="One self-contained file with the table and interactive charts; opens offline.")
pending = st.session_state.get("compare.confirm_delete")
if pending:
    st.warning(f"Delete experiment(s) {', '.join(f'#{i}' for i in pending)} and their files? This cannot be undone.",
               icon=":material/warning:")
    c1, c2, _ = st.columns([1, 1, 4])
    if c1.button("Yes, delete", type="primary", key="compare.delete_yes"):
        removed = attempt("Deleting", experiment_store.delete, pending)
        st.session_state.pop("compare.confirm_delete", None)
        if st.session_state.get("selected_experiment") in pending:
            st.session_state.pop("selected_experiment", None)
        st.toast(f"Deleted {removed or 0} experiment(s).", icon=":material/delete:")
        st.rerun()
    if c2.button("Keep them", key="compare.delete_no"):
        st.session_state.pop("compare.confirm_delete", None)
        st.rerun()

chart_frame = frame[frame["id"].isin(ticked)] if ticked else frame
scope = f"the {len(chart_frame)} ticked" if ticked else "all"
tabs = st.tabs(["Latency", "Size breakdown", "Per-class accuracy", "Flipped images", "Side by side", "Downloads"])

with tabs[0]:
    st.plotly_chart(charts.latency_figure(chart_frame), key="compare.latency", config={"displaylogo": False})
    st.caption(f":material/info: {per_run_baseline_note(chart_frame)}")
    st.plotly_chart(charts.latency_ratio_figure(chart_frame), key="compare.latency_ratio", config={"displaylogo": False})
    notes = sorted({str(n) for n in chart_frame["latency_note"].dropna() if n})
    for note in notes:
        st.caption(f":material/speed: {note}")
    if speed := speedup_text([by_id[int(i)] for i in chart_frame["id"] if int(i) in by_id]):
        st.caption(f":material/speed: {speed}")
    st.caption(f"Showing {scope} experiment(s); tick rows in the table to narrow the charts.")

with tabs[1]:
    st.plotly_chart(charts.size_breakdown_figure(chart_frame), key="compare.size", config={"displaylogo": False})
    st.caption("Bars: bytes computed from the per-layer report (indices, look-up tables, scales, masks, uncompressed "
               "weights). Diamonds: the real exported file, which also holds the model graph and metadata.")

with tabs[2]:
    chosen_records = [by_id[i] for i in chart_frame["id"].astype(int)]
    st.plotly_chart(charts.per_class_figure(per_class_frame(chosen_records)), key="compare.per_class",
                    config={"displaylogo": False})
    st.caption("Change in accuracy per class, in points. Compression rarely hurts all classes alike: look for the red cells.")

with tabs[3]:
    options = [int(i) for i in chart_frame["id"]][::-1]
    shown = st.selectbox("Experiment", options, format_func=lambda i: f"#{i} {by_id[i].get('spec_summary')}", key="compare.flip_exp")
    record = by_id.get(shown) if shown is not None else None
    if record is not None:
        flipped = record.get("flipped_images") or []
        source = dataset_for_record(record, current=dataset)
        st.caption(f"{record.get('flipped', 0):,} of {record.get('eval_images', 0):,} predictions changed. "
                   "✗→✓: the compressed model fixed a mistake; ✓→✗: it introduced one.")
        if not flipped:
            st.success("No prediction changed.", icon=":material/check:")
        elif source is None:
            st.info(f"The images of {record.get('dataset_source')} are not available on this machine, so only the list is shown.",
                    icon=":material/info:")
            st.dataframe(flipped_table(record), hide_index=True, key="compare.flip_table")
        else:
            kind = st.radio("Show", ["all", "broken", "fixed"], horizontal=True, key="compare.flip_kind",
                            format_func={"all": "all changes", "broken": "✓→✗ newly wrong", "fixed": "✗→✓ newly right"}.get)
            rows = flipped_frame(record, kind=kind)
            shown_rows = rows.head(32).to_dict("records")
            for n, item in enumerate(shown_rows):
                if n % 8 == 0:  # a row of columns per 8 images: captions of different lengths keep the rows aligned
                    grid = st.columns(8)
                position = flipped_image_position(record, dataset=source, index=item["index"])
                # PNG: lossless, so the thumbnail shows the evaluated pixels exactly (JPEG would smear them)
                grid[n % 8].image(thumbnail(source, position), width="stretch", output_format="PNG",
                                  caption=f"{item['mark']} {item['before_name']} → {item['after_name']} (true: {item['true_name']})")
            if len(rows) > 32:
                st.caption(f"First 32 of {len(rows)} shown.")

with tabs[4]:
    ids = [int(i) for i in frame["id"]][::-1]
    if len(ids) < 2:
        st.info("Run at least two experiments to compare them side by side.", icon=":material/info:")
    else:
        default = sorted(ticked)[-2:] if len(ticked) >= 2 else ids[:2][::-1]
        for key, value in (("compare.diff_a", default[0]), ("compare.diff_b", default[1])):
            if st.session_state.get(key) not in ids:
                st.session_state[key] = value
        c1, c2 = st.columns(2)
        a = c1.selectbox("A", ids, key="compare.diff_a", format_func=lambda i: f"#{i} {by_id[i].get('spec_summary')}")
        b = c2.selectbox("B", ids, key="compare.diff_b", format_func=lambda i: f"#{i} {by_id[i].get('spec_summary')}")
        st.dataframe(diff_table(by_id[a], by_id[b]), hide_index=True, key="compare.diff")

with tabs[5]:
    options = [int(i) for i in chart_frame["id"]][::-1]
    chosen = st.selectbox("Experiment", options, format_func=lambda i: f"#{i} {by_id[i].get('spec_summary')}", key="compare.dl_exp")
    if chosen is not None:
        downloads(by_id[chosen], key=f"compare.dl.{chosen}")
