"""Job kinds register themselves: a kind defined in a module of its own is run by a real worker process without
any edit of the runner, and a kind that is registered nowhere is refused with the known kinds named."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import pytest

from core.jobs import DONE, FAILED, JobError, JobKind, JobQueue, KindError, LocalExecutor, registered_kinds
from core.jobs.kinds import EXTRA_KINDS_ENV
from tests.jobs.conftest import BUNDLED, CNN

PLUGIN = textwrap.dedent('''
    """A job kind outside the studio: it counts to `steps` through the queue's progress and echoes its options."""
    import os

    from core.jobs.kinds import JobKind, JobOutcome


    class EchoKind(JobKind):
        kind = "echo_for_test"

        def run(self, context):
            steps = int(context.job.options["steps"])
            for step in range(steps):
                context.progress.update(step / steps, f"step {step + 1} of {steps}")
            return JobOutcome(result={"echo": context.job.options, "pid": os.getpid()}, message="echoed")
''')


def test_a_kind_in_its_own_module_is_run_by_a_worker_without_editing_the_runner(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "echo_kind_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the worker process imports the plugin too
    monkeypatch.setenv(EXTRA_KINDS_ENV, "echo_kind_plugin")
    assert "echo_for_test" in registered_kinds()
    executor = LocalExecutor(home=home, max_workers=1)
    job_id = executor.submit(model=CNN, data=BUNDLED, spec={}, options={"steps": 3}, kind="echo_for_test")
    [job] = executor.wait(job_ids=[job_id], timeout=120)
    assert job.state == DONE, job.error
    assert job.result["echo"] == {"steps": 3} and job.message == "echoed"
    assert job.result["pid"] == job.worker_pid and job.worker_pid != __import__("os").getpid()  # a worker ran it


def test_an_unknown_kind_is_refused_at_submit_and_a_worker_without_it_fails_the_job_in_one_line(home: Path) -> None:
    queue = JobQueue(home=home)
    with pytest.raises(JobError, match=r"job kind must be one of .*experiment.*sensitivity"):
        queue.submit(model=CNN, data=BUNDLED, spec={}, kind="no_such_kind")
    # A row written by a newer studio (a kind this worker does not know) fails alone, naming the kind.
    job_id = queue.submit(model=CNN, data=BUNDLED, spec={}, kind="experiment")
    with sqlite3.connect(queue.db_path) as conn:
        conn.execute("UPDATE jobs SET kind='from_the_future' WHERE id=?", (job_id,))
    [job] = LocalExecutor(home=home, max_workers=1).wait(job_ids=[job_id], timeout=120)
    assert job.state == FAILED and "cannot run jobs of kind 'from_the_future'" in job.error


def test_a_kind_name_is_checked_and_registered_once() -> None:
    assert "experiment" in registered_kinds()
    with pytest.raises(KindError, match="lowercase name"):
        type("Nameless", (JobKind,), {})
    with pytest.raises(KindError, match="registered twice"):
        type("AnotherExperiment", (JobKind,), {"kind": "experiment"})
