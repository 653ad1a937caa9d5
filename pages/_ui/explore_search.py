"""Explore → Budget search ("smallest / fastest within X points") and Lineage (where each experiment came from)."""

from __future__ import annotations

import streamlit as st

from core.explore.charts import lineage_figure, lineage_frame
from core.explore.search import SearchGoal, pick_winner, run_search
from core.explore.sweeps import PRESETS, preset_grid
from core.formatting import fmt_bytes, fmt_ms, fmt_pct
from core.models.sources import LoadedModel
from pages._ui import run_client
from pages._ui.errors import attempt
from pages._ui.result_card import downloads
from pages._ui.session import eval_limit
from pages._ui.storage import records

CANDIDATE_HEADERS = {"id": "#", "spec_summary": "config", "origin": "origin", "accuracy_top1": "top-1",
                     "drop_pts": "drop (pts)", "size_bytes": "size", "compression_ratio_fp16": "× smaller (fp16)",
                     "latency_ms_p50": "latency p50 (ms)", "within_budget": "within budget"}


def _goal() -> SearchGoal | None:
    c = st.columns([2, 1, 1], vertical_alignment="bottom")
    st.session_state.setdefault("cfg.explore.max_drop", 1.0)
    st.session_state.setdefault("cfg.explore.refine", True)
    drop = c[0].slider("Accuracy budget: at most this many points below the baseline", 0.0, 10.0, step=0.1,
                       key="cfg.explore.max_drop", format="%.1f pts",
                       help="Top-1 points the model may lose against the uncompressed baseline on the same images.")
    objective = c[1].radio("Objective", ["size", "latency"], key="cfg.explore.objective", horizontal=True,
                           format_func={"size": "smallest", "latency": "fastest"}.get,
                           help="Smallest artifact on disk, or lowest median latency (needs latency measured).")
    refine = c[2].toggle("Layer-skip refinement", key="cfg.explore.refine",
                         help="Also rerun the best setting that broke the budget with its most sensitive layers "
                         "kept at the safer setting (a few extra runs).")
    return attempt("Reading the goal", SearchGoal, max_drop_pts=drop, objective=objective, refine=refine)


def render_search_tab(*, model: LoadedModel) -> None:
    st.caption("The best experiment of this model within the budget, from every sweep, recipe and manual run. "
               "'Run what is missing' runs the uniform settings the model has no result for yet (as jobs), "
               "mixed-precision candidates when available, and refinements — then answers again.")
    goal = _goal()
    if goal is None:
        return
    model_records = records(model=model.source_id)
    result = pick_winner(model_records, goal=goal)
    if result.winner is not None:
        winner = result.winner
        st.success(result.sentence, icon=":material/emoji_events:")
        m = st.columns(4)
        m[0].metric("Top-1", fmt_pct(winner.get("accuracy_top1")))
        m[1].metric("Size", fmt_bytes(winner.get("size_bytes")))
        m[2].metric("Latency p50", fmt_ms(winner.get("latency_ms_p50")))
        m[3].metric("Came from", (winner.get("origin") or {}).get("label") or "manual run")
        downloads(winner, key=f"explore.search.dl{winner['id']}")
    else:
        st.info(result.sentence + " Run what is missing below, or widen the budget.", icon=":material/info:")
    c = st.columns([2, 1], vertical_alignment="bottom")
    st.session_state.setdefault("cfg.explore.search_preset", "weight-only exploration")
    preset = c[0].selectbox("Uniform settings to try", list(PRESETS), key="cfg.explore.search_preset",
                            help="The sweep preset whose configs the search runs when the model lacks them.")
    if c[1].button("Run what is missing", icon=":material/travel_explore:", key="explore.search.run",
                   type="primary"):
        _run(model=model, goal=goal, preset=preset)
    if len(result.candidates):
        table = result.candidates[list(CANDIDATE_HEADERS)].rename(columns=CANDIDATE_HEADERS)
        table["size"] = table["size"].map(fmt_bytes)
        st.dataframe(table, hide_index=True, key="explore.search.table", column_config={
            "top-1": st.column_config.NumberColumn(format="percent"),
            "drop (pts)": st.column_config.NumberColumn(format="%.2f"),
            "× smaller (fp16)": st.column_config.NumberColumn(format="%.2f×")})


def _run(*, model: LoadedModel, goal: SearchGoal, preset: str) -> None:
    state = st.session_state
    with st.status("Searching: runs go through the job queue", expanded=True) as status:
        bar = st.progress(0.0, text="Submitting")
        outcome = attempt(
            "The search", run_search, executor=run_client.executor(), model=run_client.model_ref(state["model_choice"]),
            data=run_client.data_ref(state.get("dataset_choice")), goal=goal,
            options={"eval_limit": eval_limit(), "measure_latency": goal.objective == "latency",
                     "measure_memory": False},
            configs=preset_grid(name=preset).configs, on_progress=lambda f, m: bar.progress(min(1.0, f), text=m))
        if outcome is None:
            status.update(label="The search failed", state="error")
            return
        for reason in outcome.failed_jobs:
            st.warning(f"A run failed: {reason}", icon=":material/warning:")
        status.update(label=f"Done: {len(outcome.ran_experiments)} new experiment(s). {outcome.sentence}",
                      state="complete")
    st.rerun()


def render_lineage_tab(*, model: LoadedModel) -> None:
    model_records = records(model=model.source_id)
    if not model_records:
        st.info("No experiments of this model yet.", icon=":material/info:")
        return
    lineage = lineage_frame(model_records)
    st.caption("Every experiment records where it came from: a manual run, a sweep, a sensitivity / recipe run or "
               "a search; a refinement hangs under the experiment it refines. Click a box to zoom in.")
    st.plotly_chart(lineage_figure(lineage, model_label=model.label), key="explore.lineage",
                    config={"displaylogo": False})
    st.dataframe(lineage.drop(columns=["origin_id"]), hide_index=True, key="explore.lineage_table",
                 column_config={"accuracy_top1": st.column_config.NumberColumn("top-1", format="percent")})
