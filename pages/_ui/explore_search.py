"""Explore → Budget search ("smallest / fastest within X points") and Lineage (where each experiment came from).

The search is a job of kind ``budget_search`` (core.explore.search.submit_search): a worker runs it and its runs are
jobs too. This tab only submits it, reads its progress (its job's row, through the search book) and cancels it
through the queue, and answers from the store.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.explore.charts import lineage_figure, lineage_frame, lineage_table
from core.explore.search import (
    SearchBook,
    SearchGoal,
    SearchRun,
    chosen_and_confirmed,
    pick_winner,
    submit_search,
)
from core.explore.sweeps import PRESETS, preset_grid
from core.formatting import fmt_bytes, fmt_ms, fmt_pct, fmt_size_ratio, plural
from core.models.sources import LoadedModel
from core.paths import studio_home
from core.tables import readable_table
from pages._ui import run_client
from pages._ui.errors import attempt
from pages._ui.result_card import downloads
from pages._ui.session import eval_limit
from pages._ui.storage import records

CANDIDATE_HEADERS = {"id": "#", "spec_summary": "config", "origin": "origin", "accuracy_top1": "top-1",
                     "validation_drop_pts": "drop, validation (pts)", "drop_pts": "drop, test (pts)",
                     "size_bytes": "size", "compression_ratio_fp16": "size vs fp16",
                     "latency_ms_p50": "latency p50", "within_budget": "within budget"}


SEARCH_POLL_SECONDS = 1.0
JOB_HEADERS = {"id": "job", "label": "run", "state": "state", "progress": "progress", "message": "now"}


def book() -> SearchBook:
    return SearchBook(home=studio_home())


def _goal(latest: SearchRun | None) -> SearchGoal | None:
    # The widgets start at the last search's goal, so after a reload or a page switch the answer below is its answer.
    defaults = {"cfg.explore.max_drop": 1.0, "cfg.explore.objective": "size", "cfg.explore.refine": True}
    if latest is not None:
        defaults = {"cfg.explore.max_drop": float(latest.goal.max_drop_pts),
                    "cfg.explore.objective": latest.goal.objective, "cfg.explore.refine": bool(latest.goal.refine)}
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)
    c = st.columns([2, 1, 1], vertical_alignment="bottom")
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
               "'Run what is missing' queues a search that a worker runs: the uniform settings the model has "
               "no result for (as jobs), the per-layer sensitivity when none is cached, mixed-precision candidates "
               "built from it, and refinements — then answers again. It goes on if you leave this page.")
    latest = attempt("Reading the searches", book().latest, model=model.source_id)
    goal = _goal(latest)
    if goal is None:
        return
    if latest is not None and not latest.finished:
        _search_panel(latest.id)
    else:
        if latest is not None:
            _last_search(latest)
        _start_controls(model=model, goal=goal)
    _answer(model=model, goal=goal)


def _start_controls(*, model: LoadedModel, goal: SearchGoal) -> None:
    c = st.columns([2, 1], vertical_alignment="bottom")
    st.session_state.setdefault("cfg.explore.search_preset", "weight-only exploration")
    preset = c[0].selectbox("Uniform settings to try", list(PRESETS), key="cfg.explore.search_preset",
                            help="The sweep preset whose configs the search runs when the model lacks them.")
    if c[1].button("Run what is missing", icon=":material/travel_explore:", key="explore.search.run",
                   type="primary"):
        state = st.session_state
        started = attempt(
            "Queueing the search", submit_search, executor=run_client.executor(),
            model=run_client.model_ref(state["model_choice"]), data=run_client.data_ref(state.get("dataset_choice")),
            goal=goal, configs=preset_grid(name=preset).configs,
            options={"eval_limit": eval_limit(), "measure_latency": goal.objective == "latency",
                     "measure_memory": False})
        if started is not None:
            st.rerun()


@st.fragment(run_every=SEARCH_POLL_SECONDS)
def _search_panel(search_id: int) -> None:
    """A running search, read from the search book and the job queue (a worker runs the search's job)."""
    run = book().get(search_id=search_id)
    if run.finished:
        st.rerun()  # the whole app: the answer below includes the new experiments now
    verb = {"size": "smallest", "latency": "fastest"}[run.goal.objective]
    st.markdown(f"**Search #{run.id}**: {verb} within {plural(run.goal.max_drop_pts, 'point')} — running")
    c = st.columns([5, 1], vertical_alignment="bottom")
    c[0].progress(min(1.0, float(run.progress)), text=run.message or "working…")
    if c[1].button("Cancel", icon=":material/cancel:", key="explore.search.cancel", disabled=run.cancel_requested):
        book().request_cancel(search_id=run.id)
    jobs = [job for job in (run_client.get_job(i) for i in run.job_ids) if job is not None]
    if jobs:
        table = pd.DataFrame([{"id": j.id, "label": j.label.split(" · ", 1)[-1], "state": j.state,
                               "progress": j.progress, "message": j.message} for j in jobs])
        st.dataframe(table.rename(columns=JOB_HEADERS), hide_index=True, key="explore.search.jobs",
                     column_config={"progress": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0)})


def _last_search(run: SearchRun) -> None:
    verb = {"size": "smallest", "latency": "fastest"}[run.goal.objective]
    what = f"Search #{run.id} ({verb} within {plural(run.goal.max_drop_pts, 'point')})"
    if run.state == "done":
        st.caption(f"{what} finished: {len(run.ran)} new experiment(s). {run.sentence or ''}")
    elif run.state == "cancelled":
        st.warning(f"{what}: {run.message}", icon=":material/cancel:")
    else:
        st.error(f"{what} failed: {run.error}", icon=":material/error:")
    for note in run.notes:
        st.caption(f"Note: {note}")
    if run.failed:
        with st.expander(f"{len(run.failed)} run(s) of this search failed", icon=":material/warning:"):
            for line in run.failed:
                st.markdown(f"- {line}")


def _answer(*, model: LoadedModel, goal: SearchGoal) -> None:
    model_records = records(model=model.source_id)
    result = pick_winner(model_records, goal=goal)
    if result.winner is not None:
        winner = result.winner
        st.success(result.sentence, icon=":material/emoji_events:")
        st.caption(f":material/rule: {chosen_and_confirmed(winner).capitalize()}. The winner is chosen on "
                   f"{winner.get('validation_source') or 'validation images of the training pool'}, then confirmed on "
                   "the test images: the test images never pick it, so its test number is not flattered.")
        m = st.columns(4)
        m[0].metric("Top-1", fmt_pct(winner.get("accuracy_top1")), help="On the test images (confirmation).")
        m[1].metric("Size", fmt_bytes(winner.get("size_bytes")))
        m[2].metric("Latency p50", fmt_ms(winner.get("latency_ms_p50")))
        m[3].metric("Came from", (winner.get("origin") or {}).get("label") or "manual run")
        downloads(winner, key=f"explore.search.dl{winner['id']}")
    else:
        st.info(result.sentence + " Run what is missing, or widen the budget.", icon=":material/info:")
    if len(result.candidates):
        table = readable_table(result.candidates[list(CANDIDATE_HEADERS)], labels=CANDIDATE_HEADERS, formats={
            "accuracy_top1": fmt_pct, "drop_pts": lambda v: f"{v:.2f}", "validation_drop_pts": lambda v: f"{v:.2f}",
            "size_bytes": fmt_bytes, "compression_ratio_fp16": fmt_size_ratio, "latency_ms_p50": lambda v: fmt_ms(v, 3),
            "within_budget": lambda v: "yes" if v else "no", "id": lambda v: f"#{int(v)}"},
            missing={"latency_ms_p50": "not timed", "accuracy_top1": "not measured", "drop_pts": "n/a",
                     "validation_drop_pts": "not measured"})
        st.dataframe(table, hide_index=True, key="explore.search.table")


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
    st.dataframe(lineage_table(lineage), hide_index=True, key="explore.lineage_table")
