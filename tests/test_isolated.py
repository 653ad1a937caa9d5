"""core.isolated: a call in a spawned child — its answer, its progress, its refusals and its death."""

from __future__ import annotations

import os
import signal

import pytest

from core.isolated import IsolatedError, run_isolated


def _square_in_child(*, value: int, progress) -> tuple[int, int]:
    progress(0.5, "halfway")
    return value * value, os.getpid()


def _refuse(*, progress) -> None:
    raise ValueError("group_size 7 does not divide 64 channels")


def _crash(*, progress) -> None:
    raise KeyError("a library bug")


def _die(*, progress) -> None:
    progress(0.1, "about to die")
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_answer_comes_from_another_process_with_its_progress() -> None:
    seen: list[tuple[float, str]] = []
    value, pid = run_isolated(_square_in_child, kwargs={"value": 12}, progress=lambda f, m: seen.append((f, m)))
    assert value == 144 and pid != os.getpid()
    assert seen == [(0.5, "halfway")]


def test_a_refused_setting_stays_a_value_error_and_other_failures_name_themselves() -> None:
    with pytest.raises(ValueError, match="group_size 7 does not divide 64 channels"):
        run_isolated(_refuse, kwargs={})
    with pytest.raises(IsolatedError, match="KeyError: 'a library bug'"):
        run_isolated(_crash, kwargs={})


def test_a_child_killed_mid_way_is_a_clear_error_not_a_hang() -> None:
    with pytest.raises(IsolatedError, match=r"stopped \(exit code -9\) before it finished"):
        run_isolated(_die, kwargs={})
