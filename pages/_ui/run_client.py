"""Runs as jobs (core.jobs): the page submits references + spec, a worker process computes, the page polls the row.

The Streamlit process never compresses, exports or times anything for a run: it writes a job row and reads it
back. The session remembers its job ids (``session_jobs``), so a result appears after a page switch or a reload
of the session; any other tab sees the same queue in the sidebar.
"""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from core.jobs import (
    BASELINE_JOB,
    MLPACKAGE_JOB,
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
BASELINE_JOBS_KEY = "jobs.baselines"  # (model, data, options) → the baseline job this session follows
MLPACKAGE_JOB_KEY = "jobs.mlpackage"  # the Model page's Core ML package job
MLPACKAGE_PARAM = "mljob"  # … in the URL, so a reload finds it again
LARGE_BATCH_KEY = "cfg.latency.large_batch"  # also time a batch of 8 (224×224 models); shared by every page


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


def measure_options(*, limit: int | None) -> dict:
    """The job options of this session's measurements (baseline and runs alike, so they share the baseline)."""
    options: dict = {"eval_limit": limit}
    if st.session_state.get(LARGE_BATCH_KEY):
        options["large_batch"] = True
    return options


def submit_run(*, spec: AnySpec, limit: int | None) -> int:
    """Queue compress → export → measure → save for this session's model and data; returns the job id.

    Nothing is saved unless every step succeeds; a cancel or a crashed worker leaves nothing behind.
    """
    state = st.session_state
    job_id = executor().submit(
        model=model_ref(state["model_choice"]), data=data_ref(state.get("dataset_choice")), spec=spec.to_dict(),
        options=measure_options(limit=limit), label=spec.summary(),
    )
    state.setdefault(JOB_IDS_KEY, []).append(job_id)
    state[CURRENT_JOB_KEY] = job_id
    st.query_params[JOB_PARAM] = str(job_id)  # in the URL: a reload (a new session) finds the run again
    return job_id


def _follow(job_id: int) -> None:
    """This session watches the job: the sidebar's queue reruns the app once when it ends."""
    mine = st.session_state.setdefault(JOB_IDS_KEY, [])
    if job_id not in mine:
        mine.append(job_id)


def _baseline_slot(model: ModelRef, data: DataRef, options: dict) -> str:
    return json.dumps([model.to_dict(), data.to_dict(), options], sort_keys=True)


def baseline_job(*, limit: int | None, label: str, start: bool) -> Job | None:
    """The job measuring this session's baseline (model, data, options), or None when there is none to follow.

    In order: the job this session already follows, one that any session (another tab, the page before a reload)
    queued for the same references and options, else — when `start` — a new job of kind "baseline". The
    Streamlit process only writes and reads the job row; a worker measures.
    """
    state = st.session_state
    model, data = model_ref(state["model_choice"]), data_ref(state.get("dataset_choice"))
    options = measure_options(limit=limit)
    slot = _baseline_slot(model, data, options)
    followed = state.setdefault(BASELINE_JOBS_KEY, {})
    if slot in followed and (job := get_job(followed[slot])) is not None:
        return job
    job = queue().find_active(kind=BASELINE_JOB, model=model, data=data, options=options)
    if job is None and start:
        job_id = executor().submit(model=model, data=data, spec={}, options=options, label=f"Baseline · {label}",
                                   kind=BASELINE_JOB)
        job = get_job(job_id)
    if job is not None:
        followed[slot] = job.id
        _follow(job.id)
    return job


def forget_baseline_job(*, limit: int | None) -> None:
    """Stop following this baseline's job (after it failed or was cancelled: the next request starts a new one)."""
    state = st.session_state
    slot = _baseline_slot(model_ref(state["model_choice"]), data_ref(state.get("dataset_choice")),
                          measure_options(limit=limit))
    state.setdefault(BASELINE_JOBS_KEY, {}).pop(slot, None)


def submit_mlpackage(*, path: Path, spec: AnySpec, name: str) -> int:
    """Queue the Core ML-side compression of an uploaded package (saved as an experiment); returns the job id."""
    job_id = executor().submit(
        model=ModelRef(kind="mlpackage", name=name, path=str(path)), data=DataRef(kind="none"), spec=spec.to_dict(),
        label=f"{name} (Core ML package) · {spec.summary()}", kind=MLPACKAGE_JOB,
    )
    st.session_state[MLPACKAGE_JOB_KEY] = job_id
    st.query_params[MLPACKAGE_PARAM] = str(job_id)  # a reload (a new session) finds the job again
    _follow(job_id)
    return job_id


def mlpackage_job_id() -> int | None:
    """The Model page's Core ML package job: this session's last one, else the one named in the URL (?mljob=N)."""
    state = st.session_state
    if state.get(MLPACKAGE_JOB_KEY) is None:
        raw = st.query_params.get(MLPACKAGE_PARAM, "")
        if raw.isdigit() and (job := get_job(int(raw))) is not None and job.kind == MLPACKAGE_JOB:
            state[MLPACKAGE_JOB_KEY] = job.id
    return state.get(MLPACKAGE_JOB_KEY)


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
