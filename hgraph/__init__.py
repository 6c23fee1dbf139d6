"""hgraph: causal graph theory and exact discrete ground truth.

Pure Python + networkx + numpy (never torch), so the graph tools import instantly and can be used
on their own, e.g. through the ``hgraph`` console script.
"""

from .admg import ADMG, GraphError, as_set
from .docalc import rule1, rule2, rule3
from .factor import Factor, FactorError
from .scm import DiscreteSCM, cf_name

__all__ = ["ADMG", "GraphError", "as_set", "rule1", "rule2", "rule3", "Factor", "FactorError"]
__all__ += ["DiscreteSCM", "cf_name"]
from .hgraph import HGraph, build_hgraph, build_hgraphs
from .plan import (
    DatasetSpec,
    PlanError,
    TrainingPlan,
    ancestor_set,
    ancestor_set_bruteforce,
    is_modular,
    training_plan,
)

__all__ += [
    "HGraph", "build_hgraph", "build_hgraphs", "DatasetSpec", "PlanError", "TrainingPlan",
    "ancestor_set", "ancestor_set_bruteforce", "is_modular", "training_plan",
]
from . import identify  # the subpackage, callable: hgraph.identify(g, q) is hgraph.identify.identify(g, q)
from .identify import Estimand, NotIdentifiable, parse_query

__all__ += ["identify", "parse_query", "NotIdentifiable", "Estimand"]
