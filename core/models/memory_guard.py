"""Refuse a model that would not fit this machine's memory before anything is built or read.

The estimate comes from the parameter count (torchvision's weights metadata, timm on the meta device) or the
weights file's size: fp32 weights × SAFETY_FACTOR, for the model itself, the copy a compression method works on,
the exported artifact being written and the activations of an evaluation batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.formatting import fmt_bytes
from core.models.errors import ModelLoadError

MEMORY_LIMIT_ENV = "COMPRESSION_STUDIO_MEMORY_LIMIT"
SAFETY_FACTOR = 4
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class MemoryBudget:
    """How many bytes a model may need, and where that number came from (for the message)."""

    bytes: int
    source: str


def memory_budget(*, environ: dict[str, str] | None = None, meminfo: Path = MEMINFO) -> MemoryBudget | None:
    """The override setting, else MemAvailable from /proc/meminfo; None where neither exists (no refusal)."""
    env = os.environ if environ is None else environ
    override = env.get(MEMORY_LIMIT_ENV)
    if override:
        from core.disk import parse_size

        return MemoryBudget(parse_size(override, setting=MEMORY_LIMIT_ENV), f"{MEMORY_LIMIT_ENV}={override}")
    try:
        lines = meminfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            kib = int(line.split()[1])
            return MemoryBudget(kib * 1024, "available memory (MemAvailable in /proc/meminfo)")
    return None


def estimated_bytes(*, params: int | None, file_bytes: int | None = None) -> int:
    """fp32 weights (from the parameter count, or the file when it is larger) × SAFETY_FACTOR."""
    weights = max(4 * int(params or 0), int(file_bytes or 0))
    return weights * SAFETY_FACTOR


def check_fits_in_memory(*, label: str, params: int | None, file_bytes: int | None = None,
                         budget: MemoryBudget | None = None) -> None:
    """Raise ModelLoadError when the estimate exceeds the budget (read from the machine unless given)."""
    budget = budget if budget is not None else memory_budget()
    need = estimated_bytes(params=params, file_bytes=file_bytes)
    if budget is None or need <= budget.bytes:
        return
    from_params = 4 * int(params or 0) >= int(file_bytes or 0)
    basis = (f"{fmt_bytes(4 * params)} of fp32 weights for {params / 1e6:,.1f} M parameters" if from_params
             else f"a {fmt_bytes(file_bytes)} weights file")
    raise ModelLoadError(
        f"{label} is too large for this machine: about {fmt_bytes(need)} needed ({basis}, × {SAFETY_FACTOR} for the "
        f"model, the copy a method compresses and the export) but the limit is {fmt_bytes(budget.bytes)} "
        f"({budget.source}). Choose a smaller model, free memory, or raise {MEMORY_LIMIT_ENV}."
    )
