"""Job kinds register themselves: a subclass of ``JobKind`` with ``kind = "<name>"`` is what a worker runs for
jobs of that name.

The runner never names a kind: it asks ``find_kind(name)``. Every kind module is listed once, in
``core/job_kinds.py`` (a module above both the job layer and the features, so it may import them all);
``load_kind_modules`` imports that list by name the first time a worker meets a kind it has not seen, so
the job layer itself imports no feature. Kind modules keep heavy imports (torch, coremltools) inside ``run``:
importing one to submit a job stays cheap.

Adding a kind: a subclass in the feature's own module, its module named in ``core/job_kinds.py``. A kind that
lives outside the studio (a plugin) is named in ``$COMPRESSION_STUDIO_JOB_KINDS`` (comma-separated modules) for
both the submitting process and the workers.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from core.jobs.timing_lock import TimingLock
    from core.progress import Progress
    from core.store import ExperimentStore

KIND_LIST_MODULE = "core.job_kinds"  # the one module that imports every kind module (see its docstring)
EXTRA_KINDS_ENV = "COMPRESSION_STUDIO_JOB_KINDS"  # more kind modules to import, comma-separated (plugins)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_REGISTRY: dict[str, type[JobKind]] = {}


class KindError(ValueError):
    """A job kind cannot be registered or found; the message says why."""


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    """What a finished job produced: a saved experiment and/or a result for the job row, and its last message."""

    experiment_id: int | None = None
    result: dict | None = None
    message: str = "Done"


@dataclasses.dataclass
class JobContext:
    """Everything a kind's ``run`` gets from the worker: the claimed job, its queue, the worker's warm cache and
    timing lock, the progress that writes the job row (and raises ``Cancelled`` on a cancel), and the phase times
    that land in the job row.

    The queue, job, cache and tracker are typed loosely here on purpose: their modules (core.jobs.queue, .runner)
    import this one, and a type-only import back would close an import cycle.
    """

    queue: Any  # core.jobs.queue.JobQueue
    job: Any  # core.jobs.queue.Job
    cache: Any  # core.jobs.runner.WarmCache
    lock: TimingLock
    tracker: Any  # core.jobs.runner.JobProgress
    phases: dict[str, Any]

    @property
    def progress(self) -> Progress:
        return self.tracker.progress

    @property
    def home(self) -> Path:
        return self.queue.home

    def store(self) -> ExperimentStore:
        """The data folder's experiment store (one per folder and process)."""
        from core.store import ExperimentStore

        if self.queue.home not in _stores:
            _stores[self.queue.home] = ExperimentStore(self.queue.home)
        return _stores[self.queue.home]


_stores: dict[Path, Any] = {}


class JobKind:
    """Base of every job kind. A subclass names its ``kind`` and implements ``run``; defining it registers it."""

    kind: ClassVar[str] = ""
    # True for a kind whose job mostly waits for jobs of its own (a budget search): the worker running it does not
    # count it when it splits the cores among the jobs running on this machine.
    waits_for_jobs: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("kind", "")
        if not isinstance(name, str) or not _NAME.match(name):
            raise KindError(f"{cls.__qualname__}.kind must be a lowercase name (letters, digits, _); got {name!r}.")
        known = _REGISTRY.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise KindError(f"job kind {name!r} is registered twice: {known.__module__}.{known.__qualname__} and "
                            f"{cls.__module__}.{cls.__qualname__}.")
        _REGISTRY[name] = cls  # a module reloaded (tests, a notebook) replaces its own class

    def run(self, context: JobContext) -> JobOutcome:
        """Compute the job; report through ``context.progress``; return its outcome or raise (the row says why)."""
        raise NotImplementedError


def load_kind_modules() -> None:
    """Import the list of kind modules (``core/job_kinds.py``) and any named in ``$COMPRESSION_STUDIO_JOB_KINDS``,
    registering every kind; idempotent."""
    importlib.import_module(KIND_LIST_MODULE)
    for name in filter(None, (part.strip() for part in os.environ.get(EXTRA_KINDS_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise KindError(f"${EXTRA_KINDS_ENV} names {name!r}, which cannot be imported ({exc}); fix the module "
                            "name or its PYTHONPATH.") from None


def registered_kinds(*, load: bool = True) -> tuple[str, ...]:
    """The names of the registered kinds (after importing the kind list unless `load` is False)."""
    if load:
        load_kind_modules()
    return tuple(sorted(_REGISTRY))


def find_kind(name: str) -> type[JobKind]:
    """The kind class registered as `name`; the kind list is imported when it is not registered yet."""
    if name not in _REGISTRY:
        load_kind_modules()
    found = _REGISTRY.get(name)
    if found is None:
        raise KindError(f"this worker cannot run jobs of kind {name!r} (known: {', '.join(sorted(_REGISTRY))}); "
                        "update the studio on the worker machines.")
    return found


def waits_for_jobs(name: str) -> bool:
    """Does a job of kind `name` mostly wait for jobs of its own? (False for a kind this process cannot find.)"""
    try:
        return bool(find_kind(name).waits_for_jobs)
    except KindError:
        return False


def check_kind_name(name: object) -> str:
    """`name` when it is a registered kind (registered here already, or after importing the kind list)."""
    if not isinstance(name, str) or (name not in _REGISTRY and name not in registered_kinds()):
        raise KindError(f"job kind must be one of {', '.join(registered_kinds())}; got {name!r}.")
    return name
