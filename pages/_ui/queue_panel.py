"""The sidebar's job queue, on every page: the running jobs of every kind with progress and Cancel, how many wait,
this session's recent jobs. It polls the queue (a fragment) while anything is queued or running."""

from __future__ import annotations

import streamlit as st

from core.formatting import fmt_seconds
from core.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job
from pages._ui import run_client

POLL_SECONDS = 1.5
RECENT = 4
STATE_ICONS = {
    QUEUED: ":material/schedule:",
    RUNNING: ":material/hourglass_top:",
    DONE: ":material/check_circle:",
    FAILED: ":material/error:",
    CANCELLED: ":material/cancel:",
}


def render() -> None:
    """The queue panel in the sidebar; starts workers for queued jobs (also those found at app start)."""
    try:
        run_client.keep_workers()
        active = run_client.queue().counts_by_executor(state=RUNNING) or run_client.queue().counts_by_executor(
            state=QUEUED)
    except Exception as exc:  # the sidebar must render even if the queue cannot be read
        st.sidebar.caption(f":material/error: The job queue cannot be read ({exc}).")
        return
    with st.sidebar:
        # Poll only while there is something to watch; an idle panel costs nothing.
        st.fragment(run_every=POLL_SECONDS if active else None)(_panel)()


def _panel() -> None:
    try:
        running = run_client.queue().list(states=[RUNNING], limit=20)
        queued = run_client.queue().list(states=[QUEUED], limit=200)
    except Exception as exc:
        st.caption(f":material/error: The job queue cannot be read ({exc}).")
        return
    st.markdown("**Jobs**")
    if not running and not queued:
        st.caption("Nothing running — runs you start on Compress, baselines and Core ML packages measured on Model, "
                   "Explore's sweeps, sensitivity analyses and searches, Learn's whole-model steps (or jobs from the "
                   "CLI) appear here.")
    for job in running:
        _running(job)
    if queued:
        st.caption(f":material/schedule: {len(queued)} queued · next: {queued[-1].label or 'a run'}")
    # The latest finished jobs of every session and the CLI: a result shows here in any tab, also after a reload.
    recent = run_client.queue().list(states=[DONE, FAILED, CANCELLED], limit=RECENT)
    mine = set(run_client.session_job_ids())
    for job in recent:
        if job.state == DONE:  # a baseline job saves no experiment: its last message says what it did
            detail = f"experiment #{job.experiment_id}" if job.experiment_id is not None else job.message
        else:
            detail = job.error or job.message
        st.caption(f"{STATE_ICONS[job.state]} #{job.id} {job.label}{' (yours)' if job.id in mine else ''} — {detail}")
    watched = [j for j in (run_client.get_job(i) for i in _watched()) if j is not None]
    if any(run_client.announce_once(j) for j in watched if j.finished):
        st.rerun()  # a job this session watched ended: redraw the page (result card, experiment count)
    _remember_watched([j for j in watched if not j.finished] + [*running, *queued], mine=mine)


def _running(job: Job) -> None:
    elapsed = run_client.elapsed_seconds(job)
    st.progress(min(max(job.progress, 0.0), 1.0),
                text=f"#{job.id} {job.label} · {int(job.progress * 100)} % · {fmt_seconds(elapsed)}")
    cols = st.columns([3, 2], vertical_alignment="center")
    cols[0].caption(job.message if not job.cancel_requested else "Cancelling… (stops at the next step)")
    cols[1].button("Cancel", key=f"queue.cancel.{job.id}", icon=":material/stop_circle:",
                   on_click=run_client.cancel, args=(job.id,), disabled=job.cancel_requested,
                   help="Stop this job at its next step; nothing of it is saved.")


def _watched() -> set[int]:
    return set(st.session_state.get("jobs.watched", set()))


def _remember_watched(jobs: list[Job], *, mine: set[int]) -> None:
    """Unfinished jobs of this session that the panel saw: when one ends, the app reruns once."""
    st.session_state["jobs.watched"] = {j.id for j in jobs if j.id in mine and not j.finished}


def follow_runs(job_ids: list[int], *, what: str, key: str) -> None:
    """Progress and Cancel for the newest unfinished job of `job_ids` (queued by a button on this page), refreshed
    every second; the whole page reruns when it ends, so its result shows. Needed because the sidebar rendered before
    the button was pressed and polls only when it saw a job. Failed ones are shown as errors."""
    jobs = [job for job in map(run_client.get_job, job_ids) if job is not None]
    for failed in (job for job in jobs if job.state == FAILED):
        st.error(f"{what} #{failed.id} failed: {failed.error}", icon=":material/error:")
    if pending := [job.id for job in jobs if not job.finished]:
        st.fragment(run_every=1.0)(_follow)(pending[-1], what=what, key=key)


def _follow(job_id: int, *, what: str, key: str) -> None:
    job = run_client.get_job(job_id)
    if job is None or job.finished:
        st.rerun()  # the whole app: the page draws the finished run's result
        return
    columns = st.columns([5, 1], vertical_alignment="bottom")
    columns[0].progress(min(1.0, float(job.progress)), text=f"{what} #{job.id}: {job.message or 'queued…'}")
    if columns[1].button("Cancel", icon=":material/cancel:", key=f"{key}.cancel", disabled=job.cancel_requested):
        run_client.cancel(job.id)

