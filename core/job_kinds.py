"""Every job kind a worker can run: importing this module registers them all (the one list of kind modules).

It sits above the job layer and the features, so it may import both; the job layer reaches it only by name
(``core.jobs.kinds.load_kind_modules``), never by an import, and so imports no feature itself. A new kind is a
``JobKind`` subclass in its feature's module plus one line here.
"""

from core import isolated
from core.explore import recipe_runs, sensitivity_job
from core.explore.search import job as search_job
from core.jobs import experiment_kinds

KIND_MODULES = (experiment_kinds, recipe_runs, sensitivity_job, search_job, isolated)
