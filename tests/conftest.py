"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn


class HalvesUntilSmall(nn.Module):
    """A data-dependent while loop: torch's TorchScript → torch.export converter has no rule for prim::Loop."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x.flatten(1))
        while bool(y.abs().max() > 1.0):
            y = y / 2
        return y


@pytest.fixture
def unconvertible_torchscript(tmp_path: Path) -> Path:
    """A scripted Fashion-MNIST-shaped classifier (1×28×28 → 10) that stays TorchScript: it cannot become a graph."""
    path = tmp_path / "loops.pt"
    torch.jit.save(torch.jit.script(HalvesUntilSmall().eval()), str(path))
    return path


@pytest.fixture(scope="session", autouse=True)
def timing_lock_of_this_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One timing lock for the whole test run (the servers and workers it starts inherit it): the run's own timings
    still never overlap, and another test run or a dashboard on the same machine does not hold it up for minutes."""
    from core.jobs.timing_lock import TIMING_LOCK_ENV

    if os.environ.get(TIMING_LOCK_ENV):  # chosen by whoever started the run
        yield
        return
    os.environ[TIMING_LOCK_ENV] = str(tmp_path_factory.mktemp("timing") / "timing.lock")
    try:
        yield
    finally:
        os.environ.pop(TIMING_LOCK_ENV, None)


E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/e2e drives a browser: marked `browser` by its place, so a new file there cannot be left
    out of the mark (`make test-fast` skips it)."""
    for item in items:
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.browser)


# A test that is not marked slow yet takes this long makes `make test-fast` slow for everyone: the run names it.
UNMARKED_SLOW_SECONDS = 10.0
GROUPS_LEFT_OUT_OF_FAST = {"slow", "browser", "ray"}
_unmarked_slow: list[tuple[float, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.duration > UNMARKED_SLOW_SECONDS \
            and not GROUPS_LEFT_OUT_OF_FAST & set(report.keywords):
        _unmarked_slow.append((report.duration, report.nodeid))


def pytest_terminal_summary(terminalreporter) -> None:
    if not _unmarked_slow:
        return
    terminalreporter.section(f"tests over {UNMARKED_SLOW_SECONDS:.0f} s not marked slow")
    for seconds, nodeid in sorted(_unmarked_slow, reverse=True):
        terminalreporter.write_line(f"{seconds:6.1f} s  {nodeid}")
    terminalreporter.write_line("Mark them @pytest.mark.slow (make test-fast leaves them out) or make them cheaper; "
                                "a machine busy with other work stretches every time.")
