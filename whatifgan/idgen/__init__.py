"""ID-GEN: sampling networks of conditional generative models for identifiable queries.

Rahman, Jordan & Kocaoglu (2024), "Conditional Generative Models are Sufficient to Sample from Any
Causal Effect Estimand": Algorithm 1 (ID-GEN), 2 (ConditionalGMs), 3 (MergeNetwork), 4 (Update)
and 5 (IDC-GEN), replayed from :mod:`hgraph.identify`'s recursion trace.

>>> from whatifgan.idgen import idgen
>>> net = idgen("napkin", "P(Y | do(X))", data)          # doctest: +SKIP
>>> print(net.describe())                                   # doctest: +SKIP
>>> net.sample(1000, do={"X": 1})["Y"]                      # doctest: +SKIP

* :mod:`.build` -- :func:`idgen`, :func:`idgen_plan` (structure without training);
* :mod:`.network` -- :class:`SamplingNetwork` (ancestral sampling, exact tables);
* :mod:`.backends` -- conditional models per variable: classifier, diffusion, WGAN-GP, plug-in;
* :mod:`.cache` -- :class:`ModelCache` keyed by (variable, inputs, data fingerprint);
* :mod:`.evaluate` -- TVD of a network's answer to the exact one of a discrete SCM.
"""

from .backends import (
    Backend,
    CategoricalClassifier,
    ClassifierBackend,
    ConditionalModel,
    DiffusionBackend,
    DiffusionConditional,
    EmpiricalBackend,
    EmpiricalConditional,
    MarginalSource,
    PretrainedBackend,
    PretrainedConditional,
    WGANBackend,
    WGANConditional,
    default_backend,
    make_backend,
)
from .build import IDGenOptions, idgen, idgen_plan, infer_variables
from .cache import DataTable, ModelCache, fingerprint
from .evaluate import passes_step7, plugin_report, random_step7_queries, truth_table, tvd_report
from .network import DataInfo, Node, SamplingNetwork

__all__ = [
    "Backend", "CategoricalClassifier", "ClassifierBackend", "ConditionalModel", "DataInfo",
    "DataTable", "DiffusionBackend", "DiffusionConditional", "EmpiricalBackend", "EmpiricalConditional",
    "IDGenOptions", "MarginalSource",
    "ModelCache", "Node", "PretrainedBackend", "PretrainedConditional", "SamplingNetwork",
    "WGANBackend", "WGANConditional", "default_backend", "fingerprint", "idgen", "idgen_plan",
    "infer_variables", "make_backend", "passes_step7", "plugin_report", "random_step7_queries", "truth_table",
    "tvd_report",
]
