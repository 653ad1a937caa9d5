"""core.isolated: a Learn step as a job in a real worker process — its answer, its progress, its refusals, its
death — with arguments and result as JSON through the job row."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from core.isolated import EXTRA_STEP_MODULES_ENV, IsolatedError, decode, encode, run_isolated
from core.learn.finetune import FineTuneSetting

STEPS = textwrap.dedent('''
    """Steps of a test: they run in a worker like Learn's export and fine-tuning."""
    import os
    import signal
    import time


    def square(*, value, setting, progress):
        progress(0.5, "halfway")
        time.sleep(1.0)  # long enough for the caller's poll to see the progress
        return {"square": value * value, "pid": os.getpid(), "bits": setting.bits}


    def refuse(*, progress):
        raise ValueError("group_size 7 does not divide 64 channels")


    def crash(*, progress):
        raise KeyError("a library bug")


    def die(*, progress):
        progress(0.1, "about to die")
        os.kill(os.getpid(), signal.SIGKILL)
''')


@pytest.fixture
def steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A data folder of its own and the test's steps importable here and in the workers."""
    (tmp_path / "isolated_test_steps.py").write_text(STEPS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv(EXTRA_STEP_MODULES_ENV, "isolated_test_steps")
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "studio"))
    monkeypatch.setenv("COMPRESSION_STUDIO_TIMING_LOCK", str(tmp_path / "timing.lock"))
    monkeypatch.setenv("COMPRESSION_STUDIO_WORKER_IDLE", "20")
    import isolated_test_steps

    return isolated_test_steps


def test_the_answer_comes_from_a_worker_with_its_progress(steps) -> None:
    seen: list[tuple[float, str]] = []
    answer = run_isolated(steps.square, kwargs={"value": 12, "setting": FineTuneSetting(bits=3)},
                          progress=lambda f, m: seen.append((f, m)))
    assert answer["square"] == 144 and answer["bits"] == 3 and answer["pid"] != os.getpid()
    assert (0.5, "halfway") in seen


def test_a_refused_setting_stays_a_value_error_and_other_failures_name_themselves(steps) -> None:
    with pytest.raises(ValueError, match="group_size 7 does not divide 64 channels"):
        run_isolated(steps.refuse, kwargs={})
    with pytest.raises(IsolatedError, match="KeyError: 'a library bug'"):
        run_isolated(steps.crash, kwargs={})


def test_a_worker_killed_mid_way_is_a_clear_error_not_a_hang(steps) -> None:
    with pytest.raises(IsolatedError, match=r"worker stopped: killed by signal 9 \(SIGKILL\)"):
        run_isolated(steps.die, kwargs={})


def test_only_studio_functions_run_as_steps_and_results_round_trip_without_pickle() -> None:
    with pytest.raises(IsolatedError, match=r"module-level function of core\.learn"):
        run_isolated(print, kwargs={})
    value = {"setting": FineTuneSetting(bits=4), "losses": np.arange(3, dtype=np.float32), "layers": ("a", "b"),
             "where": Path("/tmp/x")}
    back = decode(encode(value))
    assert back["setting"] == FineTuneSetting(bits=4) and back["layers"] == ("a", "b") and back["where"] == Path("/tmp/x")
    assert back["losses"].dtype == np.float32 and back["losses"].tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(IsolatedError, match="not a studio type"):
        decode({"__dataclass__": "subprocess:Popen", "fields": {}})
