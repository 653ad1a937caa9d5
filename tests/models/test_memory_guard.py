"""The memory budget: the override setting, MemAvailable, and the estimate from parameters or file size."""

from __future__ import annotations

import pytest

from core.models.errors import ModelLoadError
from core.models.memory_guard import SAFETY_FACTOR, MemoryBudget, check_fits_in_memory, estimated_bytes, memory_budget


def test_budget_from_setting_or_meminfo(tmp_path):
    assert memory_budget(environ={"COMPRESSION_STUDIO_MEMORY_LIMIT": "3GB"}).bytes == 3_000_000_000
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    2000000 kB\n")
    budget = memory_budget(environ={}, meminfo=meminfo)
    assert budget.bytes == 2_048_000_000 and "MemAvailable" in budget.source
    assert memory_budget(environ={}, meminfo=tmp_path / "absent") is None
    with pytest.raises(ValueError, match="COMPRESSION_STUDIO_MEMORY_LIMIT='lots' is not a size"):
        memory_budget(environ={"COMPRESSION_STUDIO_MEMORY_LIMIT": "lots"})


def test_estimate_takes_the_larger_of_parameters_and_file():
    assert estimated_bytes(params=1_000_000) == 4_000_000 * SAFETY_FACTOR
    assert estimated_bytes(params=1_000_000, file_bytes=10_000_000) == 10_000_000 * SAFETY_FACTOR
    budget = MemoryBudget(50_000_000, "test budget")
    check_fits_in_memory(label="small", params=1_000_000, budget=budget)
    with pytest.raises(ModelLoadError, match=r"^big is too large for this machine: about 80\.00 MB needed \(a 20\.00 MB weights file, × 4 .* "
                       r"but the limit is 50\.00 MB \(test budget\)\."):
        check_fits_in_memory(label="big", params=None, file_bytes=20_000_000, budget=budget)
