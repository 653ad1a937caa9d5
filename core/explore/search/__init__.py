"""Accuracy-budget search: "the smallest (or fastest) model within X points of the baseline".

By concern: ``goal`` (what is asked), ``candidates`` (the experiments as a DataFrame, the winner in words),
``plan`` (what to run: missing grid configs, mixed-precision candidates, layer-skip refinements — and the one
list of methods a refinement can keep per layer, ``plan.refinable_methods``), ``book`` (the SQLite record of
each search), ``runner`` (``run_search``: its runs as jobs, waited for), ``job`` (the search itself as job kind
``budget_search``, what the dashboard submits).

``pick_winner`` answers from experiments already in the store; ``run_search`` runs what the answer needs first.
"""

from core.explore.search.book import SEARCH_FINISHED, SEARCH_STATES, SearchBook, SearchCancelled, SearchRun
from core.explore.search.candidates import (
    CANDIDATE_COLUMNS,
    SearchResult,
    candidates_frame,
    chosen_and_confirmed,
    config_label,
    drop_pts,
    has_validation,
    pick_winner,
    stakeholder_sentence,
    validation_drop_pts,
)
from core.explore.search.goal import OBJECTIVES, SearchError, SearchGoal, goal_to_dict
from core.explore.search.job import BUDGET_SEARCH_JOB, BudgetSearchKind, submit_search, wait_for_search
from core.explore.search.plan import (
    MIXED_STEPS,
    REFINE_LAYER_COUNTS,
    REFINE_ROUNDS,
    missing_configs,
    mixed_precision_specs,
    refinable_methods,
    refinement_specs,
)
from core.explore.search.runner import STAGES, ensure_sensitivity, run_search

__all__ = [
    "BUDGET_SEARCH_JOB",
    "CANDIDATE_COLUMNS",
    "MIXED_STEPS",
    "OBJECTIVES",
    "REFINE_LAYER_COUNTS",
    "REFINE_ROUNDS",
    "SEARCH_FINISHED",
    "SEARCH_STATES",
    "STAGES",
    "BudgetSearchKind",
    "SearchBook",
    "SearchCancelled",
    "SearchError",
    "SearchGoal",
    "SearchResult",
    "SearchRun",
    "candidates_frame",
    "chosen_and_confirmed",
    "config_label",
    "drop_pts",
    "ensure_sensitivity",
    "goal_to_dict",
    "has_validation",
    "missing_configs",
    "mixed_precision_specs",
    "pick_winner",
    "refinable_methods",
    "refinement_specs",
    "run_search",
    "stakeholder_sentence",
    "submit_search",
    "validation_drop_pts",
    "wait_for_search",
]
