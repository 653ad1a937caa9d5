"""Compress: a tab per method with every knob of its spec, per-layer overrides, a run as a job and its result card.

The method tabs are drawn from the specs' knob metadata (pages/_ui/spec_form.py). A run is a job (core.jobs): a
worker process computes it while this page polls the job row; the result card appears when the job ends, also after
a page switch (the session remembers its jobs)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.compress.layers import weight_layers
from core.estimate import estimate_seconds, eval_image_count
from core.formatting import fmt_seconds
from core.jobs import CANCELLED, FAILED, QUEUED
from core.learn.handoff import COMPRESS_TAB_KEY
from core.specs import spec_to_yaml
from pages._ui import run_client
from pages._ui.errors import attempt
from pages._ui.loading import forward_ms_per_image
from pages._ui.result_card import result_card
from pages._ui.session import eval_limit
from pages._ui.shell import page_context
from pages._ui.spec_form import method_tab, pipeline_form, tab_groups
from pages._ui.storage import records, store
from pages._ui.widgets import eval_limit_selector

PIPELINE_TAB = "Joint pipeline"


def header(model: Any, dataset: Any) -> None:
    head = st.columns([2, 1], vertical_alignment="bottom")
    head[0].caption(
        f"Compressing **{model.label}** · evaluated on "
        + (f"**{dataset.name}** ({dataset.source})" if dataset else "synthetic inputs (no accuracy)")
        + ". Each run compresses a copy, exports the real artifact, measures it against the baseline and is saved."
    )
    eval_limit_selector(dataset, container=head[1])


def run_footer(spec: Any, tab: str, *, model: Any, dataset: Any, busy: bool) -> None:
    """Estimate, the spec as YAML, and the Run button of one tab."""
    if spec is None:
        return
    eval_images = eval_image_count(limit=eval_limit(), dataset_size=len(dataset.test) if dataset else None)
    seconds, basis = estimate_seconds(params=model.params, spec=spec, eval_images=eval_images,
                                      history=records(model=model.source_id),
                                      forward_ms_per_image=forward_ms_per_image(model))
    left, right = st.columns([3, 1], vertical_alignment="center")
    with left:
        st.caption(f":material/timer: Estimated run time ≈ **{fmt_seconds(seconds)}** "
                   f"(compress, export, evaluate {eval_images:,} images, time latency) — {basis}.")
        with st.expander("This setting as a spec (YAML)"):
            st.code(spec_to_yaml(spec), language="yaml")
    with right:
        clicked = st.button("Run compression", type="primary", icon=":material/play_arrow:", key=f"run.{tab}",
                            disabled=busy, width="stretch",
                            help="Your previous run is still going (see the sidebar)" if busy else
                            "Runs in a separate worker process; you can switch pages meanwhile.")
    if clicked:
        job_id = attempt("Starting the run", run_client.submit_run, spec=spec, limit=eval_limit())
        if job_id is not None:
            st.rerun()  # redraw with the job: the sidebar's queue and the progress below


def method_tabs(model: Any, dataset: Any, *, busy: bool) -> None:
    """A tab per method (or per group of methods sharing one), then the joint pipeline."""
    model_layers = weight_layers(model.module)
    groups = tab_groups()
    # A Learn lesson's "Open Compress" button names the tab to open (core.learn.handoff.COMPRESS_TAB_KEY).
    tabs = st.tabs([*groups, PIPELINE_TAB], default=st.session_state.get(COMPRESS_TAB_KEY))
    for tab, members in zip(tabs, groups.values(), strict=False):
        with tab:
            method, spec = method_tab(members, model_layers=model_layers)
            run_footer(spec, method, model=model, dataset=dataset, busy=busy)
    with tabs[-1]:
        st.caption("Two steps on the same model: prune first, then palettize or quantize the surviving weights "
                   "(the order coremltools supports). Sparse + palettized weights compound the savings.")
        run_footer(pipeline_form(), "pipeline", model=model, dataset=dataset, busy=busy)


# --------------------------------------------------------------------------- the run and its result


def _record(experiment_id: int) -> dict | None:
    try:
        return store().get(experiment_id)
    except ValueError:  # deleted meanwhile (Compare page)
        return None


def _job_progress(job_id: int) -> None:
    """Polled every half second while the job runs (a fragment): only this part of the page redraws."""
    job = run_client.get_job(job_id)
    if job is None:
        return
    if job.finished:
        if run_client.announce_once(job):
            st.rerun()  # the whole page: result card, sidebar count, history-based estimates
        return
    waiting = job.state == QUEUED
    label = f"{'Queued' if waiting else 'Running'}: {job.label} (job #{job.id})"
    with st.status(label, expanded=True, state="running"):
        elapsed = run_client.elapsed_seconds(job)
        text = job.message if waiting else f"{job.message} · {fmt_seconds(elapsed)}"
        st.progress(min(max(job.progress, 0.0), 1.0), text=text)
        if job.cancel_requested:
            st.caption("Cancelling… the worker stops at its next step; nothing is saved.")
        st.button("Cancel run", key="run.cancel", on_click=run_client.cancel, args=(job.id,), icon=":material/stop_circle:",
                  disabled=job.cancel_requested, help="Stops the job at its next step; nothing of it is saved.")


def job_result(current_job: Any) -> None:
    """The current run: its progress while it runs, then its result card (or why there is none)."""
    st.divider()
    if not current_job.finished:
        st.fragment(run_every=0.5)(_job_progress)(current_job.id)
    elif current_job.state == CANCELLED:
        st.warning(f"Run cancelled ({current_job.label}) — nothing was saved.", icon=":material/cancel:")
    elif current_job.state == FAILED:
        st.error(f"The run {current_job.label} failed: {current_job.error}", icon=":material/error:")
    elif (record := _record(int(current_job.experiment_id))) is not None:
        result_card(record)
    else:
        st.info(f"Experiment #{current_job.experiment_id} of this run was deleted.", icon=":material/info:")


def main() -> None:
    model, dataset = page_context()
    st.title("Compress", anchor=False)
    if model is None:
        st.stop()
    current_id: int | None = run_client.current_job_id()
    current_job = run_client.get_job(current_id) if current_id is not None else None
    header(model, dataset)
    method_tabs(model, dataset, busy=current_job is not None and not current_job.finished)
    if current_job is not None:
        job_result(current_job)


main()
