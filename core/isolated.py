"""One heavy call a page waits for (Learn's whole-model export and fine-tuning), run as a job of kind
``learn_step`` through the one queue: a worker computes it, the caller blocks until the job ends, forwarding its
progress.

The Streamlit process never compresses, exports or fine-tunes itself (coremltools conversion breaks inside threads
of one process, and libraries change process-wide state: stdout, loggers, threads, the quantized engine). A worker
that dies (killed, out of memory, a crash inside a library) fails the job, and the caller gets an `IsolatedError`
naming that.

`target` must be a module-level function of a Learn module (``core.learn.*``; more prefixes for plugins in
``$COMPRESSION_STUDIO_STEP_MODULES``) taking a ``progress`` keyword. Its keyword arguments and its result travel
as JSON through the job row: plain values, numpy arrays, paths and dataclasses of ``core`` modules (rebuilt with
their own constructor, so their validation runs) — never a pickle.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from core.jobs.kinds import JobContext, JobKind, JobOutcome
from core.jobs.refs import DataRef, ModelRef
from core.progress import Progress, as_progress

T = TypeVar("T")
LEARN_STEP_JOB = "learn_step"
STEP_MODULES = ("core.learn.",)  # where a step's function may live
EXTRA_STEP_MODULES_ENV = "COMPRESSION_STUDIO_STEP_MODULES"  # more module prefixes, comma-separated (plugins)
_TYPE, _ARRAY, _PATH, _TUPLE = "__dataclass__", "__ndarray__", "__path__", "__tuple__"


class IsolatedError(RuntimeError):
    """The step's job failed or stopped; the message says why in one line."""


# --------------------------------------------------------------------------- JSON both ways


def encode(value: Any) -> Any:
    """`value` as JSON-ready data that `decode` turns back into equal objects."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return {_TYPE: f"{type(value).__module__}:{type(value).__qualname__}", "fields": fields}
    if isinstance(value, np.ndarray):
        return {_ARRAY: value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return {_PATH: str(value)}
    if isinstance(value, tuple):
        return {_TUPLE: [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    return value


def decode(data: Any) -> Any:
    """The objects `encode` wrote; a dataclass only of a ``core`` module, built through its constructor."""
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    if _TYPE in data:
        module, _, name = str(data[_TYPE]).partition(":")
        if module != "core" and not module.startswith("core."):
            raise IsolatedError(f"a step's result names {data[_TYPE]!r}, which is not a studio type.")
        cls = getattr(importlib.import_module(module), name)
        if not dataclasses.is_dataclass(cls):
            raise IsolatedError(f"a step's result names {data[_TYPE]!r}, which is not a dataclass.")
        return cls(**{k: decode(v) for k, v in data["fields"].items()})
    if _ARRAY in data:
        return np.asarray(data[_ARRAY], dtype=data["dtype"])
    if _PATH in data:
        return Path(data[_PATH])
    if _TUPLE in data:
        return tuple(decode(v) for v in data[_TUPLE])
    return {k: decode(v) for k, v in data.items()}


# --------------------------------------------------------------------------- the job kind


def step_name(target: Callable[..., Any]) -> str:
    """'core.learn.finetune:fine_tune_sample' for a module-level function of an allowed module."""
    name = f"{getattr(target, '__module__', '')}:{getattr(target, '__qualname__', '')}"
    _check_step(name)
    return name


def _check_step(name: str) -> None:
    module, _, function = name.partition(":")
    extra = tuple(p.strip() for p in os.environ.get(EXTRA_STEP_MODULES_ENV, "").split(",") if p.strip())
    if not function or "." in function or not module.startswith(STEP_MODULES + extra):
        raise IsolatedError(f"{name!r} cannot run as a step: it must be a module-level function of "
                            f"{', '.join(STEP_MODULES + extra)}*.")


class LearnStepKind(JobKind):
    """A Learn page's whole-model step (``options = {"step": "module:function", "kwargs": …}``) in a worker, under
    the compute lock. A setting the library refuses (a ValueError) ends the job as done with ``result.refused``,
    so the page shows it as advice, not as a failure."""

    kind = LEARN_STEP_JOB

    def run(self, context: JobContext) -> JobOutcome:
        name = str(context.job.options["step"])
        _check_step(name)
        module, _, function = name.partition(":")
        target = getattr(importlib.import_module(module), function)
        kwargs = decode(context.job.options.get("kwargs") or {})
        with context.lock.compute():
            try:
                result = target(**kwargs, progress=context.progress.update)
            except ValueError as exc:
                return JobOutcome(result={"refused": str(exc)}, message="Refused")
        return JobOutcome(result={"value": encode(result)}, message="Done")


# --------------------------------------------------------------------------- the caller's side


def run_isolated(
    target: Callable[..., T], /, *, kwargs: Mapping[str, Any], progress: Progress | None = None, poll_s: float = 0.2,
    home: Path | None = None, timeout_s: float = 3600.0,
) -> T:
    """``target(**kwargs, progress=…)`` as a job in a worker; blocks until it ends and returns its result, or re-raises
    the ValueError it refused a setting with. Raises IsolatedError when the job failed or was cancelled."""
    from core.jobs.executors import get_executor

    progress = as_progress(progress)
    executor = get_executor(home=home)
    model, data = _refs(kwargs)
    job_id = executor.submit(model=model, data=data, spec={},
                             options={"step": step_name(target), "kwargs": encode(dict(kwargs))},
                             kind=LEARN_STEP_JOB, label=f"Learn · {getattr(target, '__name__', 'step')}")
    job = _follow(executor=executor, job_id=job_id, progress=progress, poll_s=poll_s, timeout_s=timeout_s)
    if job.state == "done" and job.result and "refused" in job.result:
        raise ValueError(job.result["refused"])
    if job.state == "done" and job.result and "value" in job.result:
        return decode(job.result["value"])
    if job.state == "failed":
        raise IsolatedError(f"{job.error}; it may have run out of memory — try a smaller model or setting."
                            if (job.error or "").startswith("worker stopped") else str(job.error))
    raise IsolatedError(f"the step was {job.state} before it finished.")


def _refs(kwargs: Mapping[str, Any]) -> tuple[ModelRef, DataRef]:
    """The job row's references: the step's own (a step on the loaded model names them), else the sample model a
    step without references loads itself, and no dataset."""
    model = kwargs.get("model_ref")
    data = kwargs.get("data_ref")
    return (ModelRef.from_dict(model) if isinstance(model, dict) else ModelRef(kind="sample", name="fashion_cnn"),
            DataRef.from_dict(data) if isinstance(data, dict) else DataRef(kind="none"))


def _follow(*, executor: Any, job_id: int, progress: Progress, poll_s: float, timeout_s: float) -> Any:
    """Poll the job until it ends, forwarding its progress; local workers are restarted if they stopped."""
    deadline = time.monotonic() + timeout_s
    shown = None
    while True:
        job = executor.queue.get(job_id=job_id)
        if job.finished:
            return job
        if time.monotonic() > deadline:
            executor.queue.cancel(job_id=job_id)
            raise IsolatedError(f"the step did not finish within {timeout_s:.0f} s; it was cancelled.")
        if (job.progress, job.message) != shown:
            shown = (job.progress, job.message)
            progress.update(job.progress, job.message)
        ensure = getattr(executor, "ensure_workers", None)
        if ensure is not None:
            ensure()
        time.sleep(poll_s)
