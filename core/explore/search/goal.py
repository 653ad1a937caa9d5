"""What a budget search is asked: within `max_drop_pts` accuracy points of the baseline, the smallest or the
fastest model."""

from __future__ import annotations

from dataclasses import dataclass

from core.formatting import as_number

OBJECTIVES = {"size": ("size_bytes", "smallest"), "latency": ("latency_ms_p50", "fastest")}


class SearchError(ValueError):
    """The search cannot run as asked; the message names the field."""


@dataclass(frozen=True)
class SearchGoal:
    """Within `max_drop_pts` accuracy points of the baseline, minimise size or latency."""

    max_drop_pts: float = 1.0
    objective: str = "size"
    refine: bool = True  # run layer-skip refinements of the best setting that broke the budget

    def __post_init__(self) -> None:
        drop = as_number(self.max_drop_pts)
        if drop is None or isinstance(self.max_drop_pts, bool) or not 0.0 <= drop <= 100.0:
            raise SearchError(f"max_drop_pts must be a number of points in [0, 100]; got {self.max_drop_pts!r}.")
        if self.objective not in OBJECTIVES:
            raise SearchError(f"objective must be one of {', '.join(OBJECTIVES)}; got {self.objective!r}.")

    @property
    def column(self) -> str:
        return OBJECTIVES[self.objective][0]


def goal_to_dict(goal: SearchGoal) -> dict:
    return {"max_drop_pts": float(goal.max_drop_pts), "objective": goal.objective, "refine": bool(goal.refine)}
