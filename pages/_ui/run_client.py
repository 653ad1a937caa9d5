"""Runs as jobs (core.jobs): the page submits references + spec, a worker process computes, the page polls the row.

The Streamlit process never compresses, exports or times anything for a run: it writes a job row and reads it
back. The session remembers its job ids (``session_jobs``), so a result appears after a page switch or a reload
of the session; any other tab sees the same queue in the sidebar.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.jobs import (
    DataRef,
    ExecutorError,
    Job,
    JobQueue,
    LocalExecutor,
    ModelRef,
    RayExecutor,
    ensure_workers,
    executor_name,
    get_executor,
)
from core.paths import studio_home
from core.specs import AnySpec

JOB_IDS_KEY = "jobs.mine"  # this session's job ids, oldest first
CURRENT_JOB_KEY = "jobs.current"  # the job whose progress / result the Compress page shows
ANNOUNCED_KEY = "jobs.announced"  # finished jobs this session already redrew the app for
JOB_PARAM = "job"  # the URL query parameter naming the Compress page's current job


def queue() -> JobQueue:
    return JobQueue(home=studio_home())


@st.cache_resource(show_spinner=False)
def _executor(name: str, home: str) -> LocalExecutor | RayExecutor:
    # One per server: a Ray executor keeps its connection (ray.init) and task handles between reruns.
    return get_executor(name=name, home=Path(home))


def executor() -> LocalExecutor | RayExecutor:
    """The configured executor ($COMPRESSION_STUDIO_EXECUTOR, default local) for this data folder."""
    return _executor(executor_name(), str(studio_home()))


def model_ref(choice: dict) -> ModelRef:
    """The session's model choice (pages/_ui/loading) as a reference a worker reloads; uploads live in the store."""
    ref = ModelRef.from_source_id(choice["source_id"], weights=choice.get("weights"))
    if ref.kind == "torchvision" and choice.get("pretrained"):
        ref = ModelRef(kind="torchvision", name=ref.name, pretrained=True)
    return ref


def data_ref(choice: dict | None) -> DataRef:
    """The session's dataset choice as a reference (an uploaded zip stays in the store's uploads folder)."""
    choice = choice or {"kind": "auto"}
    if choice.get("kind") != "folder":
        return DataRef(kind=choice.get("kind", "auto"))
    return DataRef(kind="folder", path=choice["path"], image_size=tuple(choice["size"]), channels=choice["channels"],
                   mean=tuple(choice["mean"]), std=tuple(choice["std"]))


def submit_run(*, spec: AnySpec, limit: int | None) -> int:
    """Queue compress → export → measure → save for this session's model and data; returns the job id.

    Nothing is saved unless every step succeeds; a cancel or a crashed worker leaves nothing behind.
    """
    state = st.session_state
    job_id = executor().submit(
        model=model_ref(state["model_choice"]), data=data_ref(state.get("dataset_choice")), spec=spec.to_dict(),
        options={"eval_limit": limit}, label=spec.summary(),
    )
    state.setdefault(JOB_IDS_KEY, []).append(job_id)
    state[CURRENT_JOB_KEY] = job_id
    st.query_params[JOB_PARAM] = str(job_id)  # in the URL: a reload (a new session) finds the run again
    return job_id


def current_job_id() -> int | None:
    """The job the Compress page shows: this session's last run, else the one named in the URL (?job=N)."""
    state = st.session_state
    if state.get(CURRENT_JOB_KEY) is None:
        raw = st.query_params.get(JOB_PARAM, "")
        if raw.isdigit() and get_job(int(raw)) is not None:
            state[CURRENT_JOB_KEY] = int(raw)
            state.setdefault(ANNOUNCED_KEY, set())
    return state.get(CURRENT_JOB_KEY)


def session_job_ids() -> list[int]:
    return list(st.session_state.get(JOB_IDS_KEY, []))


def get_job(job_id: int) -> Job | None:
    """The job row (None when the data folder no longer has it)."""
    try:
        return queue().get(job_id=job_id)
    except ValueError:
        return None


def cancel(job_id: int) -> None:
    """Cancel a job of any session: a queued one at once, a running one at its next progress step."""
    queue().cancel(job_id=job_id)


def keep_workers() -> None:
    """Start local workers for queued jobs (app start, every rerun and poll): a restarted app picks the queue up
    where it was, and a worker that crashed or idled out is replaced. Orphaned running jobs are failed meanwhile."""
    if executor_name() == "local":
        ensure_workers(home=studio_home())
        return
    ray = executor()
    if isinstance(ray, RayExecutor):
        try:
            ray.resume()
        except ExecutorError:  # shown when the user submits; the sidebar still renders
            queue().reap()


def announce_once(job: Job) -> bool:
    """True the first time this session sees `job` finished (then the whole app reruns to show its result)."""
    announced = st.session_state.setdefault(ANNOUNCED_KEY, set())
    if job.id in announced or not job.finished:
        return False
    announced.add(job.id)
    return True


def elapsed_seconds(job: Job) -> float | None:
    import time

    if job.started_at is None:
        return None
    return (job.finished_at or time.time()) - job.started_at
